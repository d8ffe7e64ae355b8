"""prometheus/rules/*.yml: promtool checks them, their unit tests pass (`promtool test rules`
with input series, tests/observability/rules/), and those unit tests fail when a rule is
broken; the dashboards read only series the rules record."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from obs_promlib import REPO, RULES_DIR, require_binary

pytestmark = pytest.mark.prometheus

UNIT_TESTS = sorted((Path(__file__).parent / "rules").glob("*_test.yml"))


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_binary("promtool"), *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def test_promtool_check_rules() -> None:
    files = sorted(RULES_DIR.glob("*.yml"))
    assert files
    res = promtool("check", "rules", *map(str, files))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "WARNING" not in res.stdout + res.stderr


def test_every_rule_file_has_unit_tests() -> None:
    covered = set()
    for t in UNIT_TESTS:
        covered |= {(t.parent / f).resolve() for f in yaml.safe_load(t.read_text())["rule_files"]}
    assert covered == {p.resolve() for p in RULES_DIR.glob("*.yml")}


@pytest.mark.parametrize("path", UNIT_TESTS, ids=lambda p: p.name)
def test_promtool_test_rules(path: Path) -> None:
    res = promtool("test", "rules", str(path))
    assert res.returncode == 0 and "SUCCESS" in res.stdout, res.stdout + res.stderr


@pytest.mark.parametrize(
    ("old", "new"),
    [
        # the means would count failed runs too
        (
            'migbed_migration_guest_downtime_seconds_sum{outcome="completed"}',
            "migbed_migration_guest_downtime_seconds_sum",
        ),
        # an alert that misses a run counted since the last scrape of an older series
        (
            "increase(migbed_migrations_unverified_total[10m]) > 0",
            "increase(migbed_migrations_unverified_total[10m]) > 1",
        ),
        # an alert that misses a series born at 1 (a result-only exporter)
        (
            "or (migbed_migrations_unverified_total > 0 unless migbed_migrations_unverified_total offset 10m)",
            "",
        ),
        (
            "increase(migbed_migrations_source_not_intact_total[10m]) > 0",
            "increase(migbed_migrations_source_not_intact_total[10m]) > 1",
        ),
        # a service down for minutes before anyone hears of it
        ("for: 30s", "for: 5m"),
    ],
)
def test_unit_tests_catch_a_broken_rule(tmp_path: Path, old: str, new: str) -> None:
    """The unit tests are a real check: each of these mistakes makes them fail."""
    (tmp_path / "prometheus" / "rules").mkdir(parents=True)
    (tmp_path / "tests" / "observability" / "rules").mkdir(parents=True)
    rules = (RULES_DIR / "migbed.yml").read_text()
    assert old in rules
    (tmp_path / "prometheus" / "rules" / "migbed.yml").write_text(rules.replace(old, new))
    test_dir = tmp_path / "tests" / "observability" / "rules"
    for t in UNIT_TESTS:
        shutil.copy(t, test_dir / t.name)
    res = promtool("test", "rules", *(str(test_dir / t.name) for t in UNIT_TESTS))
    assert res.returncode != 0, res.stdout
    assert "FAILED" in res.stdout + res.stderr


def test_rules_are_loaded_by_every_config() -> None:
    for name in ("prometheus.yml", "prometheus-file-sd.yml", "prometheus.yml.j2"):
        text = (REPO / "prometheus" / name).read_text()
        assert "rule_files" in text and "rules/*.yml" in text, name
