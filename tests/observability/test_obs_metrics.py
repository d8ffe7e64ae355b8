"""SourceMetrics / TargetMetrics on their own (no Prometheus needed)."""

from __future__ import annotations

import dataclasses
import urllib.request
from dataclasses import dataclass, field

import pytest
from obs_synth import feed, make_record
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from migbed.measure.metrics import (
    SourceMetrics,
    TargetMetrics,
    parse_listen,
    serve_metrics,
    vfio_state_number,
)
from migbed.measure.metrics.fields import metric_fragment
from migbed.measure.record import Event, RunRecord

SP = {"scenario": "tiny", "policy": "legacy", "time_dilation": "1"}


def families(registry: CollectorRegistry) -> dict[str, tuple[str, str, list[tuple[dict[str, str], float]]]]:
    """name -> (type, help, [(labels, value)]) as a scrape would see it."""
    text = generate_latest(registry).decode()
    return {
        f.name: (f.type, f.documentation, [(dict(x.labels), x.value) for x in f.samples])
        for f in text_string_to_metric_families(text)
    }


@dataclass
class FutureRecord(RunRecord):
    """A run record with fields the engine may add later, of every shape the exporter reads."""

    verification_ms: float = 0.0
    downtime_parts_ms: dict[str, float] = field(default_factory=dict)
    multifd_channel_bytes: list[int] = field(default_factory=list)
    multifd_channel_packets: list[int] = field(default_factory=list)
    final_load_overlapped: bool = False
    vcpu_ticks_lost: int = field(default=0, metadata={"help": "vCPU ticks the guest missed while stopped"})
    notes: str = "free text: not a figure"


def future_record(**kw: object) -> FutureRecord:
    known = {f.name for f in dataclasses.fields(FutureRecord)}
    base = {k: v for k, v in dataclasses.asdict(make_record("legacy", 0)).items() if k in known}
    base.update(timeline=[], events=[])
    return FutureRecord(**{**base, **kw})  # type: ignore[arg-type]


def test_collector_exports_every_field_of_a_record_it_never_saw() -> None:
    """Measure once: new record fields become metrics by the naming rule, no code per field."""
    m = SourceMetrics()
    rec = future_record(
        verification_ms=42.0,
        downtime_parts_ms={"ram": 12.5, "device": 230.0},
        multifd_channel_bytes=[1000, 3000],
        multifd_channel_packets=[4, 12],
        final_load_overlapped=True,
        vcpu_ticks_lost=7,
    )
    m.on_result(rec)
    fams = families(m.registry)

    def last(name: str) -> dict[tuple[tuple[str, str], ...], float]:
        kind, _, samples = fams["migbed_migration_last_" + name]
        assert kind == "gauge"
        return {tuple(sorted((k, v) for k, v in lab.items() if k not in SP)): v for lab, v in samples}

    assert last("verification_seconds") == {(): 0.042}
    assert last("downtime_parts_seconds") == {(("part", "ram"),): 0.0125, (("part", "device"),): 0.23}
    assert last("multifd_channel_bytes") == {(("channel", "0"),): 1000, (("channel", "1"),): 3000}
    assert last("multifd_channel_packets") == {(("channel", "0"),): 4, (("channel", "1"),): 12}
    assert last("final_load_overlapped") == {(): 1.0}
    assert last("vcpu_ticks_lost") == {(): 7}
    assert fams["migbed_migration_last_vcpu_ticks_lost"][1] == "vCPU ticks the guest missed while stopped"
    assert not any("notes" in n for n in fams)
    # the fields every record has, under the names users know
    assert last("guest_downtime_seconds") == {(): rec.guest_downtime_ms / 1000}
    assert last("iterations") == {(): rec.dirty_sync_count}
    assert last("device_initial_load_seconds") == {(("device", "vf0"),): 2.5}
    assert last("forced_by_cap") == {(): 0.0}
    # every numeric field of the record is exported (name by the rule, or the table's)
    renamed = {"dirty_sync_count": "iterations", "forced_by_cap": "forced_by_cap"}
    for f in dataclasses.fields(FutureRecord):
        value = getattr(rec, f.name)
        if isinstance(value, bool | int | float) and f.name != "repeat":
            name = renamed.get(f.name) or metric_fragment(f.name)[0]
            assert "migbed_migration_last_" + name in fams, f.name


def test_per_channel_counters_accumulate_over_runs() -> None:
    m = SourceMetrics()
    m.on_result(future_record(multifd_channel_bytes=[1000, 3000], multifd_channel_packets=[4, 12]))
    m.on_result(future_record(multifd_channel_bytes=[500, 500], multifd_channel_packets=[2, 2]))
    _, _, samples = families(m.registry)["migbed_migration_multifd_channel_bytes"]
    got = {lab["channel"]: v for lab, v in samples if lab["policy"] == "legacy"}
    assert got == {"0": 1500, "1": 3500}
    _, _, packets = families(m.registry)["migbed_migration_multifd_channel_packets"]
    assert {lab["channel"]: v for lab, v in packets} == {"0": 6, "1": 14}


def test_histograms_and_counters_from_records() -> None:
    m = SourceMetrics()
    runs = [make_record("legacy", r) for r in range(3)] + [make_record("legacy", 9, outcome="failed")]
    runs.append(make_record("legacy", 4, verified=False))
    runs.append(make_record("legacy", 5, outcome="cancelled", source_intact=False))
    for rec in runs:
        m.on_result(rec)
    reg = m.registry
    done = [r for r in runs if r.outcome == "completed"]
    spo = {**SP, "outcome": "completed"}
    assert reg.get_sample_value("migbed_migration_guest_downtime_seconds_count", spo) == len(done)
    assert reg.get_sample_value("migbed_migration_guest_downtime_seconds_sum", spo) == pytest.approx(
        sum(r.guest_downtime_ms for r in done) / 1000
    )
    assert reg.get_sample_value("migbed_migration_guest_downtime_seconds_bucket", {**spo, "le": "+Inf"}) == len(done)
    assert reg.get_sample_value("migbed_migration_guest_downtime_seconds_bucket", {**spo, "le": "1.0"}) == sum(
        1 for r in done if r.guest_downtime_ms <= 1000
    )
    assert reg.get_sample_value("migbed_migrations_total", {**SP, "outcome": "failed"}) == 1
    assert reg.get_sample_value("migbed_migrations_total", {**SP, "outcome": "cancelled"}) == 1
    assert reg.get_sample_value("migbed_migrations_unverified_total", SP) == 1
    assert reg.get_sample_value("migbed_migrations_source_not_intact_total", SP) == 1  # the failed one was intact
    assert reg.get_sample_value("migbed_migration_transferred_bytes_total", {**SP, "stage": "downtime"}) == sum(
        r.downtime_bytes for r in runs
    )
    assert reg.get_sample_value("migbed_migration_last_verified", SP) == 0


@pytest.mark.parametrize("metrics", [SourceMetrics, TargetMetrics])
def test_process_metrics_on_both_registries(metrics: type) -> None:
    reg = metrics().registry
    rss = reg.get_sample_value("process_resident_memory_bytes")
    cpu = reg.get_sample_value("process_cpu_seconds_total")
    assert rss is not None and rss > 1 << 20
    assert cpu is not None and cpu > 0
    assert "python_info" in families(reg)


def test_target_exports_raw_facts_only() -> None:
    t = TargetMetrics()
    t.on_session("tiny", "started")
    t.on_load_progress("tiny", "vf0", 1000, 24, 0.25, True, False)
    t.on_received_bytes("tiny", "downtime", "device", 24)
    t.on_resumed("tiny", "legacy", 0.125)
    reg = t.registry
    sd = {"scenario": "tiny", "device": "vf0"}
    assert reg.get_sample_value("migbed_target_device_busy_seconds", sd) == 0.25
    assert reg.get_sample_value("migbed_target_device_loading", sd) == 1
    assert reg.get_sample_value("migbed_target_device_initial_loaded", sd) == 0
    sp = {"scenario": "tiny", "policy": "legacy", "time_dilation": "1"}
    assert reg.get_sample_value("migbed_target_final_load_seconds_sum", sp) == 0.125
    names = set(families(reg))
    assert not any("guest_downtime" in n or "setup_remaining" in n for n in names), names
    with pytest.raises(ValueError, match="session state"):
        t.on_session("tiny", "exploded")


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:9101") == ("127.0.0.1", 9101)
    assert parse_listen("0.0.0.0:0") == ("0.0.0.0", 0)
    assert parse_listen(":9101") == ("0.0.0.0", 9101)
    assert parse_listen("9101") == ("0.0.0.0", 9101)
    assert parse_listen("[::1]:9101") == ("::1", 9101)
    with pytest.raises(ValueError):
        parse_listen("localhost")


def test_vfio_state_numbers_follow_the_uapi() -> None:
    assert vfio_state_number("PRE_COPY") == 6
    assert vfio_state_number("pre-copy") == 6
    assert vfio_state_number("VFIO_DEVICE_STATE_STOP_COPY") == 3
    assert vfio_state_number("RESUMING") == 4
    assert vfio_state_number("bogus") == -1


def test_two_exporters_in_one_process_and_http() -> None:
    a, b = SourceMetrics(), SourceMetrics()  # own registries: no duplicate-timeseries error
    t = TargetMetrics()
    feed([make_record("legacy", 0)], a, t)
    assert (
        a.registry.get_sample_value(
            "migbed_migrations_total", {**SP, "outcome": "completed"}
        )
        == 1
    )
    assert (
        b.registry.get_sample_value(
            "migbed_migrations_total", {**SP, "outcome": "completed"}
        )
        is None
    )
    srv = serve_metrics(a.registry, "127.0.0.1:0")
    try:
        assert srv.port > 0
        with urllib.request.urlopen(srv.url, timeout=5) as resp:
            text = resp.read().decode()
        assert "migbed_migration_guest_downtime_seconds_bucket" in text
        assert "_created" not in text
    finally:
        srv.shutdown()


def test_a_new_run_keeps_its_own_clock() -> None:
    m = SourceMetrics()
    first, second = make_record("switchover-ack", 0), make_record("switchover-ack", 1)
    feed([first], m, TargetMetrics())
    stop1 = m.registry.get_sample_value(
        "migbed_source_last_stop_timestamp_seconds", {**SP, "policy": "switchover-ack"}
    )
    feed([second], m, TargetMetrics())
    labels = {"scenario": "tiny", "policy": "switchover-ack", "time_dilation": "1"}
    stop2 = m.registry.get_sample_value("migbed_source_last_stop_timestamp_seconds", labels)
    ack2 = m.registry.get_sample_value("migbed_source_last_switchover_ack_timestamp_seconds", labels)
    assert stop1 is not None and stop2 is not None and ack2 is not None
    t_stop, t_ack = second.event_time("stop"), second.event_time("switchover-ack")
    assert t_stop is not None and t_ack is not None
    assert abs((stop2 - ack2) - (t_stop - t_ack) / 1000) < 1e-6
    assert m.registry.get_sample_value("migbed_migrations_total", {**labels, "outcome": "completed"}) == 2


def test_result_without_live_samples_still_marks_events() -> None:
    m = SourceMetrics()
    rec = make_record("legacy", 0)
    m.on_result(rec)  # a service that reports only the result
    labels = {"scenario": "tiny", "policy": "legacy", "time_dilation": "1"}
    stop = m.registry.get_sample_value("migbed_source_last_stop_timestamp_seconds", labels)
    res = m.registry.get_sample_value("migbed_source_last_resume_timestamp_seconds", labels)
    assert stop is not None and res is not None
    t_stop, t_res = rec.event_time("stop"), rec.event_time("resumed")
    assert t_stop is not None and t_res is not None
    assert abs((res - stop) - (t_res - t_stop) / 1000) < 1e-6


def test_unknown_event_and_init_data_sent() -> None:
    m = SourceMetrics()
    m.on_event("tiny", "legacy", Event(1.0, "setup-accepted"))  # no gauge, no error
    m.on_event("tiny", "legacy", Event(2.0, "init-data-sent:vf1"))
    assert (
        m.registry.get_sample_value(
            "migbed_source_last_init_data_sent_timestamp_seconds",
            {"scenario": "tiny", "policy": "legacy", "time_dilation": "1", "device": "vf1"},
        )
        is not None
    )


def test_target_rejects_unbounded_label_values() -> None:
    t = TargetMetrics()
    with pytest.raises(ValueError):
        t.on_received_bytes("tiny", "precopy", "vram", 1)
    with pytest.raises(ValueError):
        t.on_received_bytes("tiny", "later", "ram", 1)
    t.on_session("tiny", "started")
    t.on_session("tiny", "verified")
    t.on_session("tiny", "verified")  # an extra end never goes below zero
    assert t.registry.get_sample_value("migbed_target_sessions_active", {"scenario": "tiny"}) == 0
    text = generate_latest(t.registry).decode()
    assert 'migbed_target_received_ram_bytes_total{scenario="tiny",stage="downtime"} 0.0' in text


def test_docs_metrics_reference_is_current() -> None:
    """docs/observability.md lists what the exporters export (generated from them)."""
    from migbed.measure.metrics import reference

    assert reference.main(["--check"]) == 0, "run: python -m migbed.measure.metrics.reference --write"
    text = reference.DOC.read_text()
    for name in ("migbed_migration_guest_downtime_seconds", "migbed_target_device_busy_seconds"):
        assert f"`{name}`" in text


def test_naming_rule_and_event_names() -> None:
    from migbed.measure.metrics.live import event_metric

    assert metric_fragment("guest_downtime_ms") == ("guest_downtime_seconds", 1e-3)
    assert metric_fragment("clock_offset_ns") == ("clock_offset_seconds", 1e-9)
    assert metric_fragment("busy_s") == ("busy_seconds", 1.0)
    assert metric_fragment("bandwidth_bytes_per_s") == ("bandwidth_bytes_per_second", 1.0)
    assert metric_fragment("precopy_bytes") == ("precopy_bytes", 1.0)
    assert event_metric("resumed") == ("migbed_source_last_resume_timestamp_seconds", "")
    assert event_metric("switchover-ack") == ("migbed_source_last_switchover_ack_timestamp_seconds", "")
    assert event_metric("init-data-sent:vf0") == ("migbed_source_last_init_data_sent_timestamp_seconds", "vf0")
    # a free-text tail or an odd name would be an unbounded label or an invalid metric name
    assert event_metric("error:connection reset by peer") is None
    assert event_metric("init-data-sent") is None
    assert event_metric("Weird Name") is None


@pytest.mark.parametrize("outcome", ["completed", "failed"])
def test_live_gauges_show_the_end_of_a_finished_run(outcome: str) -> None:
    m = SourceMetrics()
    rec = make_record("legacy", 0, outcome=outcome)
    mid = rec.timeline[len(rec.timeline) // 2]  # the engine's samples stop in pre-copy
    assert mid.ram_remaining_bytes > 0
    m.on_progress("tiny", "legacy", mid)
    m.on_result(rec)
    reg = m.registry
    assert reg.get_sample_value("migbed_source_phase", {**SP, "stage": "done"}) == 1
    assert reg.get_sample_value("migbed_source_migration_active", SP) == 0
    assert reg.get_sample_value("migbed_source_elapsed_seconds", SP) == rec.total_time_ms / 1000
    remaining = reg.get_sample_value("migbed_source_ram_remaining_bytes", SP)
    sent = reg.get_sample_value("migbed_source_ram_transferred_bytes", SP)
    if outcome == "completed":  # everything was sent: the record's totals
        assert remaining == 0 and sent == rec.ram_transferred_bytes
    else:  # where it stopped
        assert remaining == mid.ram_remaining_bytes and sent == mid.ram_transferred_bytes


def test_guest_downtime_parts_histogram() -> None:
    m = SourceMetrics()
    runs = [make_record("legacy", r) for r in range(3)]
    for rec in runs:
        m.on_result(rec)
    spo = {**SP, "outcome": "completed"}
    total = 0.0
    for part in ("stop_lag", "stop_copy", "delivery", "destination_load", "resume"):
        v = m.registry.get_sample_value("migbed_migration_guest_downtime_part_seconds_sum", {**spo, "part": part})
        assert v is not None, part
        total += v
    # the parts add up to the guest-visible downtime (the synthetic records are built so)
    assert total == pytest.approx(sum(r.guest_downtime_ms for r in runs) / 1000)
