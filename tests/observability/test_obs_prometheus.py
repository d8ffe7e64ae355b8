"""SourceMetrics/TargetMetrics fed with run records, scraped by a real Prometheus.

Checks: promtool lints both expositions; Prometheus scrapes both exporters with the committed
scrape config; the series it stores agree with the records; every dashboard panel's query
(as Grafana would send it) returns data.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from statistics import mean

import pytest
from obs_promlib import (
    FakeGrafana,
    Prometheus,
    check_dashboards_have_data,
    http_get,
    load_dashboards,
    promtool_check_metrics,
    wait_for,
)
from obs_promlib import scrape_config_for as scrape_config
from obs_synth import FINAL_LOAD_S, POLICIES, feed, make_record, make_records

from migbed.measure.metrics import DOWNTIME_BUCKETS, SourceMetrics, TargetMetrics, serve_metrics
from migbed.measure.record import RunRecord

pytestmark = pytest.mark.prometheus

ALLOWED_LABELS = {
    "__name__", "job", "instance", "role", "testbed", "host",  # added by the scrape config
    "policy", "scenario", "outcome", "device", "stage", "part", "channel",  # migbed's own, all bounded
    "time_dilation",  # the run's K (core/dilation.py): bounded by the K runs used
    "le", "version",  # histogram buckets, build info
}  # fmt: skip


class Stack:
    def __init__(self, records: list[RunRecord], tmp: Path) -> None:
        self.records = records
        self.source = SourceMetrics()
        self.target = TargetMetrics()
        self.src_srv = serve_metrics(self.source.registry, "127.0.0.1:0")
        self.tgt_srv = serve_metrics(self.target.registry, "127.0.0.1:0")
        cfg = scrape_config(
            {
                "migbed-source": [f"127.0.0.1:{self.src_srv.port}"],
                "migbed-target": [f"127.0.0.1:{self.tgt_srv.port}"],
            }
        )
        self.prom = Prometheus(cfg, tmp / "prometheus")
        feed(records, self.source, self.target)
        n = len(records)
        self.prom.wait_value("sum(migbed_migrations_total)", lambda v: v == n, "all results")
        self.prom.wait_value("sum(migbed_target_resumes_total)", lambda v: v == n, "resumes")

    def close(self) -> None:
        self.prom.stop()
        self.src_srv.shutdown()
        self.tgt_srv.shutdown()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    records = make_records(repeats=3)
    records.append(make_record("legacy", 9, outcome="failed"))
    records.append(make_record("time-aware", 8, verified=False))  # completed, unverified
    records.append(make_record("initial-bytes-sent", 7, outcome="failed", source_intact=False))
    s = Stack(records, tmp_path_factory.mktemp("obs"))
    try:
        yield s
    finally:
        s.close()


def completed(records: list[RunRecord]) -> dict[str, list[RunRecord]]:
    by: dict[str, list[RunRecord]] = defaultdict(list)
    for r in records:
        if r.outcome == "completed":
            by[r.policy].append(r)
    return by


def close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))


# -- exposition -------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["source", "target"])
def test_promtool_check_metrics(stack: Stack, which: str) -> None:
    srv = stack.src_srv if which == "source" else stack.tgt_srv
    text = http_get(srv.url)
    assert "migbed_" in text
    res = promtool_check_metrics(text)
    assert res.returncode == 0 and not res.stdout.strip(), res.stdout + res.stderr


def test_both_exporters_up_with_role(stack: Stack) -> None:
    targets = stack.prom.targets()
    roles = {t["labels"]["job"]: (t["labels"].get("role"), t["health"]) for t in targets}
    assert roles == {"migbed-source": ("source", "up"), "migbed-target": ("target", "up")}


def test_labels_bounded_and_no_run_ids(stack: Stack) -> None:
    series = stack.prom.api_get('series?match[]={__name__=~"migbed_.*"}')
    assert series
    run_ids = {r.run_id for r in stack.records}
    for s in series:
        assert set(s) <= ALLOWED_LABELS, s
        assert not run_ids & set(s.values()), s
    names = {s["__name__"] for s in series}
    assert all(n.startswith("migbed_") for n in names)


# -- results agree with the records -----------------------------------------------------


def test_migrations_by_outcome(stack: Stack) -> None:
    got = {
        (r["metric"]["policy"], r["metric"]["outcome"]): float(r["value"][1])
        for r in stack.prom.query("sum by (policy, outcome) (migbed_migrations_total)")
    }
    want: dict[tuple[str, str], float] = defaultdict(float)
    for rec in stack.records:
        want[(rec.policy, rec.outcome)] += 1
    for key, n in want.items():
        assert got[key] == n, key
    assert sum(got.values()) == len(stack.records)
    assert got[("switchover-ack", "failed")] == 0  # initialised at zero


@pytest.mark.parametrize(
    ("metric", "field", "scale"),
    [
        ("migbed_migration_guest_downtime_seconds", "guest_downtime_ms", 1e-3),
        ("migbed_migration_downtime_seconds", "downtime_ms", 1e-3),
        ("migbed_migration_total_time_seconds", "total_time_ms", 1e-3),
        ("migbed_migration_switchover_ack_wait_seconds", "switchover_ack_wait_ms", 1e-3),
        ("migbed_migration_iterations", "dirty_sync_count", 1.0),
    ],
)
def test_histogram_mean_per_policy(stack: Stack, metric: str, field: str, scale: float) -> None:
    sel = '{outcome="completed"}'
    got = stack.prom.values_by(f"sum by (policy) ({metric}_sum{sel}) / sum by (policy) ({metric}_count{sel})", "policy")
    for policy, recs in completed(stack.records).items():
        want = mean(getattr(r, field) * scale for r in recs)
        assert close(got[policy], want), (policy, got[policy], want)


def test_downtime_buckets_count_the_records(stack: Stack) -> None:
    for le in DOWNTIME_BUCKETS:
        got = stack.prom.values_by(
            f'sum by (policy) (migbed_migration_guest_downtime_seconds_bucket{{le="{le}",outcome="completed"}})',
            "policy",
        )
        for policy, recs in completed(stack.records).items():
            want = sum(1 for r in recs if r.guest_downtime_ms / 1000 <= le)
            assert got[policy] == want, (policy, le)


def test_legacy_pays_the_device_setup_in_downtime(stack: Stack) -> None:
    """The comparison the dashboards exist for, straight from Prometheus."""
    gd = stack.prom.values_by(
        'histogram_quantile(0.5, sum by (le, policy) (migbed_migration_guest_downtime_seconds_bucket{outcome="completed"}))',  # noqa: E501
        "policy",
    )
    assert gd["legacy"] > 1.0 > gd["switchover-ack"]


def test_last_result_gauges(stack: Stack) -> None:
    last: dict[str, RunRecord] = {}
    for r in stack.records:
        last[r.policy] = r
    checks = {
        "migbed_migration_last_guest_downtime_seconds": lambda r: r.guest_downtime_ms / 1000,
        "migbed_migration_last_downtime_seconds": lambda r: r.downtime_ms / 1000,
        "migbed_migration_last_total_time_seconds": lambda r: r.total_time_ms / 1000,
        "migbed_migration_last_switchover_ack_wait_seconds": (lambda r: r.switchover_ack_wait_ms / 1000),
        "migbed_migration_last_iterations": lambda r: r.dirty_sync_count,
        "migbed_migration_last_precopy_bytes": lambda r: r.precopy_bytes,
        "migbed_migration_last_downtime_bytes": lambda r: r.downtime_bytes,
        "migbed_migration_last_completed": lambda r: 1.0 if r.outcome == "completed" else 0.0,
    }
    for metric, fn in checks.items():
        got = stack.prom.values_by(metric, "policy")
        for policy, rec in last.items():
            assert close(got[policy], float(fn(rec))), (metric, policy)


def test_bytes_by_stage(stack: Stack) -> None:
    got = {
        (r["metric"]["policy"], r["metric"]["stage"]): float(r["value"][1])
        for r in stack.prom.query("sum by (policy, stage) (migbed_migration_transferred_bytes_total)")
    }
    for policy in POLICIES:
        recs = [r for r in stack.records if r.policy == policy]
        assert got[(policy, "precopy")] == sum(r.precopy_bytes for r in recs)
        assert got[(policy, "downtime")] == sum(r.downtime_bytes for r in recs)
    ram = stack.prom.value("sum(migbed_migration_ram_transferred_bytes_total)")
    assert ram == sum(r.ram_transferred_bytes for r in stack.records)


def test_event_times_keep_the_record_intervals(stack: Stack) -> None:
    """Annotation timestamps: stop - decision and resume - stop as in the last record."""
    last: dict[str, RunRecord] = {}
    for r in stack.records:
        last[r.policy] = r
    ts = {
        ev: stack.prom.values_by(f"migbed_source_last_{ev}_timestamp_seconds", "policy")
        for ev in ("decision", "stop", "resume", "completed")
    }
    now = time.time()
    for policy, rec in last.items():
        stop, dec = rec.event_time("stop"), rec.event_time("decision")
        res = rec.event_time("resumed")
        assert stop is not None and dec is not None and res is not None
        assert abs((ts["stop"][policy] - ts["decision"][policy]) - (stop - dec) / 1000) < 1e-3
        assert abs((ts["resume"][policy] - ts["stop"][policy]) - (res - stop) / 1000) < 1e-3
        assert now - 600 < ts["stop"][policy] <= now + 5
    ack = stack.prom.values_by("migbed_source_last_switchover_ack_timestamp_seconds", "policy")
    assert set(ack) == {"switchover-ack", "time-aware"}


def test_live_gauges_hold_the_end_of_the_last_run(stack: Stack) -> None:
    rem = stack.prom.values_by("migbed_source_ram_remaining_bytes", "policy")
    assert set(rem) == set(POLICIES) and all(v == 0 for v in rem.values())
    done = stack.prom.values_by('migbed_source_phase{stage="done"}', "policy")
    assert all(v == 1 for v in done.values())
    state = stack.prom.values_by("migbed_source_device_vfio_state", "policy")
    assert all(v == 1 for v in state.values())  # STOP


def test_target_metrics(stack: Stack) -> None:
    n = len(stack.records)
    assert stack.prom.value("sum(migbed_target_sessions_started_total)") == n
    assert stack.prom.value("sum(migbed_target_sessions_active)") == 0
    failed = sum(1 for r in stack.records if r.outcome == "failed")
    assert stack.prom.value('sum(migbed_target_sessions_total{outcome="failed"})') == failed
    load = stack.prom.values_by("sum by (policy) (migbed_target_final_load_seconds_sum)", "policy")
    for policy in POLICIES:
        want = sum(FINAL_LOAD_S[policy] for r in stack.records if r.policy == policy)
        assert close(load[policy], want)
    assert not stack.prom.query('{__name__=~"migbed_target_.*(guest_downtime|setup_remaining).*"}')
    assert stack.prom.value("max(migbed_target_device_busy_seconds)") > 0
    recv = stack.prom.values_by("sum by (stage) (migbed_target_received_device_bytes_total)", "stage")
    assert recv == {"precopy": n * 64 * 2**20, "downtime": n * 4 * 2**20}
    loaded = stack.prom.value("migbed_target_device_initial_loaded")
    assert loaded == 1


@pytest.mark.parametrize("role", ["source", "target"])
def test_process_metrics_scraped_from_both(stack: Stack, role: str) -> None:
    rss = stack.prom.value(f'process_resident_memory_bytes{{role="{role}"}}')
    assert rss > 1 << 20
    stack.prom.wait_value(f'process_cpu_seconds_total{{role="{role}"}}', lambda v: v > 0, "CPU seconds")
    assert stack.prom.value(f'count(python_info{{role="{role}"}})') == 1


# -- recording rules and alerts ---------------------------------------------------------


def test_rules_loaded_and_healthy(stack: Stack) -> None:
    rules = stack.prom.rules()
    assert {r["type"] for r in rules} == {"recording", "alerting"}
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]


def test_recorded_means_agree_with_records(stack: Stack) -> None:
    rec = "scenario_policy:migbed_migration_guest_downtime_seconds:mean"
    got = stack.prom.wait_value(f'count({rec}{{scenario="tiny"}})', lambda v: v == len(POLICIES), rec)
    assert got == len(POLICIES)
    means = stack.prom.values_by(rec, "policy")
    for policy, recs in completed(stack.records).items():
        assert close(means[policy], mean(r.guest_downtime_ms / 1000 for r in recs)), policy
    unreported = stack.prom.values_by("scenario_policy:migbed_migration_unreported_downtime_seconds:mean", "policy")
    for policy, recs in completed(stack.records).items():
        want = mean(r.guest_downtime_ms / 1000 for r in recs) - mean(r.downtime_ms / 1000 for r in recs)
        assert abs(unreported[policy] - want) < 1e-9, policy
    per_run = {
        (r["metric"]["policy"], r["metric"]["stage"]): float(r["value"][1])
        for r in stack.prom.query("scenario_policy_stage:migbed_migration_transferred_bytes:per_migration")
    }
    for policy in POLICIES:
        recs = [r for r in stack.records if r.policy == policy]
        assert close(per_run[(policy, "precopy")], mean(r.precopy_bytes for r in recs))


def test_alerts_fire_for_the_failed_unverified_and_broken_runs(stack: Stack) -> None:
    def firing() -> dict[str, set[str]] | None:
        alerts = stack.prom.api_get("alerts")["alerts"]
        by: dict[str, set[str]] = defaultdict(set)
        for a in alerts:
            if a["state"] == "firing":
                by[a["labels"]["alertname"]].add(a["labels"].get("policy", ""))
        want = {"MigbedMigrationFailed", "MigbedMigrationUnverified", "MigbedSourceGuestNotIntact"}
        return dict(by) if want <= set(by) else None

    got = wait_for("alerts firing", firing)
    assert got["MigbedMigrationFailed"] == {"legacy", "initial-bytes-sent"}  # the failed records
    assert got["MigbedMigrationUnverified"] == {"time-aware"}  # the one unverified record
    assert got["MigbedSourceGuestNotIntact"] == {"initial-bytes-sent"}  # its source guest broke
    assert "MigbedServiceDown" not in got


# -- dashboards against this Prometheus -------------------------------------------------


def test_every_dashboard_query_returns_data(stack: Stack) -> None:
    assert check_dashboards_have_data(stack.prom) >= 40


def test_comparison_panels_agree_with_records(stack: Stack) -> None:
    """The 'mean per policy' bars show the records' means."""
    grafana = FakeGrafana(stack.prom)
    board = load_dashboards()["policy-comparison.json"]
    qs = {q.panel: q for q in grafana.queries("policy-comparison.json", board)}
    bar = qs["Guest-visible downtime, mean per policy"]
    got = {s["metric"]["policy"]: float(s["value"][1]) for s in grafana.run(bar, stack.prom.started, time.time())}
    for policy, recs in completed(stack.records).items():
        assert close(got[policy], mean(r.guest_downtime_ms / 1000 for r in recs))
