"""SourceMetrics / TargetMetrics on their own (no Prometheus needed)."""

from __future__ import annotations

import urllib.request

import pytest
from obs_synth import feed, make_record
from prometheus_client import generate_latest

from migbed.measure.metrics import (
    SourceMetrics,
    TargetMetrics,
    parse_listen,
    serve_metrics,
    vfio_state_number,
)
from migbed.measure.record import Event


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
            "migbed_migrations_total", {"policy": "legacy", "scenario": "tiny", "outcome": "completed"}
        )
        == 1
    )
    assert (
        b.registry.get_sample_value(
            "migbed_migrations_total", {"policy": "legacy", "scenario": "tiny", "outcome": "completed"}
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
        "migbed_source_last_stop_timestamp_seconds", {"scenario": "tiny", "policy": "switchover-ack"}
    )
    feed([second], m, TargetMetrics())
    labels = {"scenario": "tiny", "policy": "switchover-ack"}
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
    labels = {"scenario": "tiny", "policy": "legacy"}
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
            {"scenario": "tiny", "policy": "legacy", "device": "vf1"},
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
