"""The Prometheus configs in the repo: promtool accepts them, they scrape every second and
each loads the rule files (recording rules and alerts) from a ``rules`` folder beside it."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import jinja2
import pytest
import yaml
from obs_promlib import REPO, require_binary

PROM_DIR = REPO / "prometheus"
RULE_FILES = sorted(p.name for p in (PROM_DIR / "rules").glob("*.yml"))


def promtool_check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary("promtool"), "check", "config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def check_rules_loaded(cfg: dict[str, object], res: subprocess.CompletedProcess[str]) -> None:
    """The config names rules/*.yml and promtool found and checked every committed rule file."""
    assert RULE_FILES, "no prometheus/rules/*.yml"
    assert cfg["rule_files"] == ["rules/*.yml"]
    out = res.stdout + res.stderr
    assert f"{len(RULE_FILES)} rule files found" in out, out
    for name in RULE_FILES:
        assert f"rules/{name}" in out, out


def with_rules(folder: Path) -> None:
    shutil.copytree(PROM_DIR / "rules", folder / "rules")


def check_scrape(cfg: dict[str, object]) -> None:
    glob = cfg["global"]
    assert isinstance(glob, dict)
    assert glob["scrape_interval"] == "1s"
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}  # type: ignore[attr-defined]
    assert {"migbed-source", "migbed-target"} <= set(jobs)


def test_compose_config() -> None:
    path = PROM_DIR / "prometheus.yml"
    res = promtool_check_config(path)
    assert res.returncode == 0, res.stdout + res.stderr
    cfg = yaml.safe_load(path.read_text())
    check_scrape(cfg)
    check_rules_loaded(cfg, res)
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    assert jobs["migbed-source"]["static_configs"][0]["targets"] == ["source:9101"]
    assert jobs["migbed-target"]["static_configs"][0]["targets"] == ["target:9101"]


@pytest.mark.parametrize("interval", [None, "2s"])
def test_ansible_template_renders_a_valid_config(tmp_path: Path, interval: str | None) -> None:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    tmpl = env.from_string((PROM_DIR / "prometheus.yml.j2").read_text())
    ctx: dict[str, object] = {
        "migbed_source_metrics_targets": ["10.0.0.1:9101"],
        "migbed_target_metrics_targets": ["10.0.0.2:9101", "10.0.0.3:9101"],
    }
    if interval:
        ctx["migbed_scrape_interval"] = interval
    out = tmp_path / "prometheus.yml"
    out.write_text(tmpl.render(**ctx))
    with_rules(tmp_path)
    res = promtool_check_config(out)
    assert res.returncode == 0, res.stdout + res.stderr
    cfg = yaml.safe_load(out.read_text())
    check_rules_loaded(cfg, res)
    assert cfg["global"]["scrape_interval"] == (interval or "1s")
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    assert jobs["migbed-target"]["static_configs"][0]["targets"] == ctx["migbed_target_metrics_targets"]
    # same scrape settings as the compose config
    compose = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    if not interval:
        assert cfg["global"] == compose["global"]


def test_file_sd_config(tmp_path: Path) -> None:
    targets = tmp_path / "targets"
    targets.mkdir()
    for name in ("source", "target"):
        entries = json.loads((PROM_DIR / "targets" / f"{name}.json").read_text())
        assert entries[0]["labels"]["role"] == name
        (targets / f"{name}.json").write_text(json.dumps(entries))
    text = (PROM_DIR / "prometheus-file-sd.yml").read_text()
    out = tmp_path / "prometheus.yml"
    out.write_text(text.replace("/etc/prometheus/targets", str(targets)))
    with_rules(tmp_path)
    res = promtool_check_config(out)
    assert res.returncode == 0 and "WARNING" not in res.stdout + res.stderr, res.stdout
    cfg = yaml.safe_load(out.read_text())
    check_scrape(cfg)
    check_rules_loaded(cfg, res)


def test_compose_ships_the_rules_beside_the_config() -> None:
    """compose mounts prometheus/rules where the config's relative rules/*.yml finds them."""
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    mounts = {}
    for v in compose["services"]["prometheus"]["volumes"]:
        src, _, rest = v.partition(":")
        mounts[src] = rest.split(":")[0]
    config_in_container = mounts["./prometheus/prometheus.yml"]
    assert mounts.get("./prometheus/rules") == str(Path(config_in_container).parent / "rules"), mounts
