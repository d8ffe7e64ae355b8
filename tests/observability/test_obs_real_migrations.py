"""Real migrations: `migbed serve` source and target (the lead's local runner), scraped by a
real Prometheus, driven by `migbed run --source --target`; Prometheus must agree with the
results.json that run wrote, both /metrics pass promtool, every dashboard query returns
data, and the report `migbed run` wrote is there.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from statistics import mean

import pytest
from obs_promlib import (
    Prometheus,
    check_dashboards_have_data,
    http_get,
    promtool_check_metrics,
    require_binary,
)
from obs_promlib import scrape_config_for as scrape_config

from migbed.core.scenario import builtin_scenario_text
from migbed.experiments.localstack import Service, start_service
from migbed.measure.metrics.fields import DOWNTIME_PARTS
from migbed.measure.record import RunRecord, load_results

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]

POLICIES = ["legacy", "switchover-ack"]
REPEAT = 2


@dataclass
class Run:
    prom: Prometheus
    source: Service
    target: Service
    out: Path
    records: list[RunRecord]  # the comparison (scenario tiny)
    live: list[RunRecord]  # one longer run (scenario live), to watch in the live view
    stdout: str


def migbed_run(source: Service, target: Service, out: Path, *args: str) -> str:
    cmd = [
        sys.executable, "-m", "migbed.cli.main", "run",
        "--source", source.address, "--target", target.address,
        "--out", str(out), "--no-progress", *args,
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def live_scenario(path: Path) -> Path:
    """The built-in tiny scenario, made long enough (~4 s) for several 1 s scrapes, with RAM
    on two multifd channels (the per-channel panels)."""
    text = builtin_scenario_text("tiny")
    for old, new in [
        ('name = "tiny"', 'name = "live"'),
        ('ram-size = "16MiB"', 'ram-size = "128MiB"'),
        ('max-bandwidth = "256MiB/s"', 'max-bandwidth = "48MiB/s"\nmultifd = true\nmultifd-channels = 2'),
    ]:
        assert old in text, old
        text = text.replace(old, new)
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    require_binary("prometheus")
    tmp = tmp_path_factory.mktemp("real")
    target = start_service("target", tmp / "logs")
    source: Service | None = None
    prom: Prometheus | None = None
    try:
        source = start_service("source", tmp / "logs")
        cfg = scrape_config({"migbed-source": [source.metrics_address], "migbed-target": [target.metrics_address]})
        prom = Prometheus(cfg, tmp / "prometheus")
        # both exporters scraped before the first migration: the live view sees it start
        prom.wait_value('count(up{job=~"migbed-.*"} == 1)', lambda v: v == 2, "exporters up")
        out = tmp / "results"
        args = ["--scenario", "tiny", "--repeat", str(REPEAT)]
        for p in POLICIES:
            args += ["--policy", p]
        stdout = migbed_run(source, target, out, *args)
        records = load_results(str(out / "results.json"))
        assert len(records) == len(POLICIES) * REPEAT
        live_out = tmp / "live"
        scenario = live_scenario(tmp / "live.toml")
        migbed_run(source, target, live_out, "--scenario", str(scenario),
                   "--policy", "switchover-ack", "--repeat", "1", "--no-report")  # fmt: skip
        live = load_results(str(live_out / "results.json"))
        n = len(records) + len(live)
        prom.wait_value("sum(migbed_migrations_total)", lambda v: v == n, "all results scraped")
        yield Run(prom, source, target, out, records, live, stdout)
    finally:
        if prom is not None:
            prom.stop()
        if source is not None:
            source.stop()
        target.stop()


def by_policy(records: list[RunRecord]) -> dict[str, list[RunRecord]]:
    out: dict[str, list[RunRecord]] = defaultdict(list)
    for r in records:
        out[r.policy].append(r)
    return out


def close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-6 * max(1.0, abs(a), abs(b))


@pytest.mark.parametrize("role", ["source", "target"])
def test_promtool_check_metrics_on_the_services(run: Run, role: str) -> None:
    svc = run.source if role == "source" else run.target
    text = http_get(f"http://{svc.metrics_address}/metrics")
    assert "migbed_" in text
    res = promtool_check_metrics(text)
    assert res.returncode == 0 and not res.stdout.strip(), res.stdout + res.stderr


def test_series_have_the_expected_labels(run: Run) -> None:
    for r in run.prom.query("migbed_migrations_total"):
        m = r["metric"]
        assert m["job"] == "migbed-source" and m["role"] == "source"
        assert m["scenario"] in ("tiny", "live") and m["policy"] in POLICIES
        assert m["outcome"] in ("completed", "failed", "cancelled")
    run_ids = {r.run_id for r in run.records + run.live}
    series = run.prom.api_get('series?match[]={__name__=~"migbed_.*"}')
    assert not any(run_ids & set(s.values()) for s in series)


def test_counts_agree_with_results_json(run: Run) -> None:
    got = {
        (r["metric"]["policy"], r["metric"]["outcome"]): float(r["value"][1])
        for r in run.prom.query('sum by (policy, outcome) (migbed_migrations_total{scenario="tiny"})')
    }
    for policy, recs in by_policy(run.records).items():
        for outcome in ("completed", "failed", "cancelled"):
            assert got.get((policy, outcome), 0) == sum(1 for r in recs if r.outcome == outcome)


@pytest.mark.parametrize(
    ("metric", "field"),
    [
        ("migbed_migration_guest_downtime_seconds", "guest_downtime_ms"),
        ("migbed_migration_downtime_seconds", "downtime_ms"),
        ("migbed_migration_total_time_seconds", "total_time_ms"),
        ("migbed_migration_switchover_ack_wait_seconds", "switchover_ack_wait_ms"),
    ],
)
def test_means_agree_with_results_json(run: Run, metric: str, field: str) -> None:
    sel = '{outcome="completed",scenario="tiny"}'
    got = run.prom.values_by(f"sum by (policy) ({metric}_sum{sel}) / sum by (policy) ({metric}_count{sel})", "policy")
    for policy, recs in by_policy(run.records).items():
        done = [r for r in recs if r.outcome == "completed"]
        want = mean(getattr(r, field) / 1000 for r in done)
        assert close(got[policy], want), (policy, got[policy], want)


def test_last_results_and_bytes_agree(run: Run) -> None:
    last = {r.policy: r for r in run.records}  # results.json is in run order
    tiny = '{scenario="tiny"}'
    gd = run.prom.values_by(f"migbed_migration_last_guest_downtime_seconds{tiny}", "policy")
    it = run.prom.values_by(f"migbed_migration_last_iterations{tiny}", "policy")
    for policy, rec in last.items():
        assert close(gd[policy], rec.guest_downtime_ms / 1000)
        assert it[policy] == rec.dirty_sync_count
    stage = {
        (r["metric"]["policy"], r["metric"]["stage"]): float(r["value"][1])
        for r in run.prom.query(f"migbed_migration_transferred_bytes_total{tiny}")
    }
    for policy, recs in by_policy(run.records).items():
        assert stage[(policy, "precopy")] == sum(r.precopy_bytes for r in recs)
        assert stage[(policy, "downtime")] == sum(r.downtime_bytes for r in recs)


def test_ack_and_stop_marks_match_the_last_run(run: Run) -> None:
    last = {r.policy: r for r in run.records}
    tiny = '{scenario="tiny"}'
    stop = run.prom.values_by(f"migbed_source_last_stop_timestamp_seconds{tiny}", "policy")
    ack = run.prom.values_by(f"migbed_source_last_switchover_ack_timestamp_seconds{tiny}", "policy")
    rec = last["switchover-ack"]
    t_ack, t_stop = rec.event_time("switchover-ack"), rec.event_time("stop")
    assert t_ack is not None and t_stop is not None
    # the exporter maps the run's clock to wall time once: intervals are the record's
    gap = stop["switchover-ack"] - ack["switchover-ack"]
    assert abs(gap - (t_stop - t_ack) / 1000) < 0.05, (gap, t_stop - t_ack)


def test_target_sessions_agree(run: Run) -> None:
    n = len(run.records) + len(run.live)
    assert run.prom.value("sum(migbed_target_sessions_started_total)") == n
    # the target closes a session a moment after the source recorded the result: poll
    run.prom.wait_value("sum(migbed_target_sessions_total)", lambda v: v == n, "sessions ended")
    assert run.prom.value("sum(migbed_target_sessions_active)") == 0


def test_every_dashboard_query_returns_data_after_real_migrations(run: Run) -> None:
    assert check_dashboards_have_data(run.prom) >= 40


def test_downtime_parts_add_up(run: Run) -> None:
    """The record's five parts of guest downtime, as the part histogram, add up to it."""
    got = {
        (r["metric"]["policy"], r["metric"]["part"]): float(r["value"][1])
        for r in run.prom.query('migbed_migration_guest_downtime_part_seconds_sum{scenario="tiny"}')
    }
    assert {part for _, part in got} == {p.removesuffix("_ms") for p in DOWNTIME_PARTS}
    for policy, recs in by_policy(run.records).items():
        done = [r for r in recs if r.outcome == "completed"]
        parts = sum(v for (p, _), v in got.items() if p == policy)
        assert abs(parts - sum(r.guest_downtime_ms for r in done) / 1000) < 1e-6, policy


def test_multifd_channels_of_the_live_run(run: Run) -> None:
    (rec,) = run.live
    per_channel = rec.multifd_channel_bytes
    assert len(per_channel) == 2 and all(b > 0 for b in per_channel)
    got = run.prom.values_by('migbed_migration_multifd_channel_bytes_total{scenario="live"}', "channel")
    assert got == {str(i): float(b) for i, b in enumerate(per_channel)}


def test_target_reports_resumes_and_bytes(run: Run) -> None:
    n = len(run.records) + len(run.live)
    assert run.prom.value("sum(migbed_target_resumes_total)") == n
    assert run.prom.value("sum(migbed_target_received_ram_bytes_total)") > 0
    assert run.prom.value("sum(migbed_target_received_device_bytes_total)") > 0
    got = run.prom.values_by('sum by (policy) (migbed_target_final_load_seconds_count{scenario="tiny"})', "policy")
    for policy, recs in by_policy(run.records).items():
        assert got[policy] == sum(1 for r in recs if r.outcome == "completed"), policy
    # guest downtime is computed once, on the source
    assert not run.prom.query('{__name__=~"migbed_target_.*guest_downtime.*"}')


@pytest.mark.parametrize("role", ["source", "target"])
def test_process_metrics_of_both_services(run: Run, role: str) -> None:
    assert run.prom.value(f'process_resident_memory_bytes{{role="{role}"}}') > 1 << 20
    assert run.prom.value(f'process_cpu_seconds_total{{role="{role}"}}') > 0


def test_rules_on_real_runs(run: Run) -> None:
    rec = "scenario_policy:migbed_migration_guest_downtime_seconds:mean"
    run.prom.wait_value(f'count({rec}{{scenario="tiny"}})', lambda v: v == len(POLICIES), rec)
    got = run.prom.values_by(f'{rec}{{scenario="tiny"}}', "policy")
    for policy, recs in by_policy(run.records).items():
        want = mean(r.guest_downtime_ms / 1000 for r in recs if r.outcome == "completed")
        assert close(got[policy], want), policy
    rules = run.prom.rules()
    assert rules and all(r["health"] == "ok" for r in rules)
    # every run completed verified: nothing to alert on
    firing = [a for a in run.prom.api_get("alerts")["alerts"] if a["state"] == "firing"]
    assert not firing, firing


def test_migbed_run_wrote_the_report(run: Run) -> None:
    assert (run.out / "report.html").exists(), run.stdout
    assert (run.out / "downtime.png").exists()
    assert (run.out / "timeline.png").exists()
    assert "data:image/png;base64," in (run.out / "report.html").read_text()


def test_live_view_saw_the_migration_run(run: Run) -> None:
    """A ~4 s migration scraped every second: Prometheus holds its progress, not just its end."""
    (rec,) = run.live
    live = '{scenario="live",policy="switchover-ack"}'
    assert run.prom.value(f"max_over_time(migbed_source_migration_active{live}[10m])") == 1
    assert run.prom.value(f"migbed_source_migration_active{live}") == 0
    series = run.prom.query_range(f"migbed_source_ram_remaining_bytes{live}", run.prom.started, time.time(), 1.0)
    (only,) = series
    values = {float(v) for _, v in only["values"]}
    assert len(values) >= 2 and 0.0 in values, values  # progress, then the end state
    ack = run.prom.value(f"migbed_source_last_switchover_ack_timestamp_seconds{live}")
    stop = run.prom.value(f"migbed_source_last_stop_timestamp_seconds{live}")
    t_ack, t_stop = rec.event_time("switchover-ack"), rec.event_time("stop")
    assert t_ack is not None and t_stop is not None
    assert abs((stop - ack) - (t_stop - t_ack) / 1000) < 0.05
    assert run.prom.value(f"migbed_migration_last_iterations{live}") == rec.dirty_sync_count
