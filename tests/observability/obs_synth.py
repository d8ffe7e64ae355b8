"""Run records made up for tests of the metrics and the report, shaped like real runs.

The shapes follow the published case (migration-facts.md section 5): with a device whose
setup on the target takes over a second, the legacy rule stops the VM before the target has
loaded the initial data, so the guest-visible downtime holds the setup; switchover-ack waits
for the target's ACK and keeps it out of the downtime.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterable
from typing import Any, TypeVar

from migbed.measure.metrics import SourceMetrics, TargetMetrics
from migbed.measure.record import DeviceSample, Event, ProgressSample, RunRecord

T = TypeVar("T")
_ZERO: dict[Any, Any] = {int: 0, float: 0.0, bool: False, str: ""}


def build(cls: type[T], **values: Any) -> T:
    """``cls(**values)`` that survives the record types changing under it (fields are added and
    removed in parallel work): unknown keys are dropped, new required fields get zeros."""
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in values:
            kwargs[f.name] = values[f.name]
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            hint = hints[f.name]
            kwargs[f.name] = _ZERO[hint] if hint in _ZERO else typing.get_origin(hint)()
    return cls(**kwargs)


POLICIES = ("legacy", "initial-bytes-sent", "switchover-ack", "time-aware")
MiB = 1 << 20

# policy -> (stop at ms, QEMU downtime ms, guest-visible downtime ms, waits for the ACK)
SHAPES: dict[str, tuple[float, float, float, bool]] = {
    "legacy": (1200.0, 300.0, 1900.0, False),
    "initial-bytes-sent": (1500.0, 290.0, 1600.0, False),
    "switchover-ack": (2700.0, 280.0, 420.0, True),
    "time-aware": (2600.0, 310.0, 450.0, True),
}
ACK_AT_MS = 2600.0
# What the target reports: the final loads after the last byte (input, made up).
FINAL_LOAD_S = {"legacy": 1.45, "initial-bytes-sent": 1.2, "switchover-ack": 0.09, "time-aware": 0.1}
INIT_SENT_AT_MS = 800.0


RAM = 256 * MiB
DEV_INITIAL = 64 * MiB


def _shape(policy: str, repeat: int) -> tuple[float, float, float, bool]:
    """SHAPES[policy] with a deterministic spread across repeats (+-8 %)."""
    stop_ms, qemu_ms, guest_ms, waits = SHAPES[policy]
    jitter = 1.0 + 0.04 * ((repeat * 7 + len(policy)) % 5 - 2)  # deterministic spread
    return stop_ms * jitter, qemu_ms * jitter, guest_ms * jitter, waits


def _precopy_device(t: float, initial_left: int, frac: float) -> DeviceSample:
    """The VF in pre-copy: the target loads its initial data until 2.5 s."""
    return build(
        DeviceSample,
        name="vf0",
        state="PRE_COPY",
        initial_bytes=initial_left,
        dirty_bytes=int(2 * MiB * frac),
        target_loaded_bytes=int(DEV_INITIAL * min(1.0, t / 2500.0)),
        target_backlog_bytes=initial_left // 2,
        target_busy_s=min(t, 2500.0) / 1000.0,
        target_loading=t < 2500.0,
        target_initial_loaded=t >= 2500.0,
    )


def _precopy_sample(t: float, stop_ms: float, repeat: int, waits: bool,
                    iterations: int) -> ProgressSample:
    """The source's sample at t ms: RAM left falls quadratically to the stop."""
    frac = t / stop_ms
    initial_left = max(0, int(DEV_INITIAL * (1 - t / INIT_SENT_AT_MS)))
    return build(
        ProgressSample,
        t_ms=t,
        phase="setup" if t == 0 else "precopy",
        ram_remaining_bytes=int(RAM * (1 - frac) ** 2) + 4 * MiB,
        ram_transferred_bytes=int(RAM * frac),
        device_transferred_bytes=DEV_INITIAL - initial_left,
        dirty_sync_count=max(1, iterations),
        bandwidth_bytes_per_s=1.0e9,
        threshold_bytes=3.0e8,
        expected_downtime_ms=20.0 + 10 * (1 - frac),
        dirty_pages_rate=2000.0 + 100 * repeat,
        pending_bytes=int(RAM * (1 - frac) ** 2) + initial_left + 4 * MiB,
        ack_received=waits and t >= ACK_AT_MS,
        devices=[_precopy_device(t, initial_left, frac)],
    )


def _precopy_timeline(stop_ms: float, repeat: int, waits: bool) -> tuple[list[ProgressSample], int]:
    """A sample every 100 ms up to the stop, an iteration every 400 ms: (samples, iterations)."""
    timeline: list[ProgressSample] = []
    iterations = 0
    t = 0.0
    while t <= stop_ms:
        if t > 0 and int(t) % 400 == 0:
            iterations += 1
        timeline.append(_precopy_sample(t, stop_ms, repeat, waits, iterations))
        t += 100.0
    return timeline, iterations


def _done_sample(end_ms: float, iterations: int, waits: bool) -> ProgressSample:
    """The last sample: everything sent, the VF stopped and loaded on the target."""
    return build(
        ProgressSample,
        t_ms=end_ms,
        phase="done",
        ram_remaining_bytes=0,
        ram_transferred_bytes=RAM + 8 * MiB,
        device_transferred_bytes=DEV_INITIAL + 4 * MiB,
        dirty_sync_count=iterations + 1,
        bandwidth_bytes_per_s=1.0e9,
        threshold_bytes=3.0e8,
        expected_downtime_ms=0.0,
        dirty_pages_rate=0.0,
        pending_bytes=0,
        ack_received=waits,
        devices=[
            build(
                DeviceSample, name="vf0", state="STOP", initial_bytes=0, dirty_bytes=0,
                target_loaded_bytes=DEV_INITIAL, target_backlog_bytes=0, target_initial_loaded=True,
                target_busy_s=2.5, target_loading=False,
            )
        ],
    )


def _events(policy: str, stop_ms: float, end_ms: float, guest_ms: float, waits: bool) -> list[Event]:
    events = [
        Event(0.0, "setup-accepted"),
        Event(INIT_SENT_AT_MS, "init-data-sent:vf0"),
    ]
    if waits:
        events.append(Event(ACK_AT_MS, "switchover-ack"))
    events += [
        Event(stop_ms - 5, "decision", f"{policy}: pending < threshold"),
        Event(stop_ms, "stop"),
        Event(end_ms, "completed"),
        Event(stop_ms + guest_ms, "resumed"),
    ]
    return events


def _downtime_parts(qemu_ms: float, guest_ms: float) -> dict[str, float]:
    """Where the guest-visible downtime went (the parts add up to it)."""
    return {
        "stop_lag_ms": 2.0,
        "stop_copy_ms": qemu_ms * 0.6,
        "delivery_ms": qemu_ms * 0.1,
        "destination_load_ms": guest_ms - 2.0 - qemu_ms * 0.7 - 1.0,
        "resume_ms": 1.0,
    }


def make_record(
    policy: str,
    repeat: int,
    scenario: str = "tiny",
    outcome: str = "completed",
    verified: bool | None = None,
    source_intact: bool = True,
) -> RunRecord:
    stop_ms, qemu_ms, guest_ms, waits = _shape(policy, repeat)
    timeline, iterations = _precopy_timeline(stop_ms, repeat, waits)
    end_ms = stop_ms + qemu_ms
    timeline.append(_done_sample(end_ms, iterations, waits))
    return build(
        RunRecord,
        run_id=f"{scenario}-{policy}-{repeat}-0123abcd",
        scenario=scenario,
        policy=policy,
        repeat=repeat,
        outcome=outcome,
        verified=outcome == "completed" if verified is None else verified,
        setup_time_ms=12.0,
        total_time_ms=end_ms,
        downtime_ms=qemu_ms,
        expected_downtime_ms=25.0,
        dirty_sync_count=iterations + 1,
        precopy_bytes=RAM + DEV_INITIAL,
        downtime_bytes=8 * MiB + 4 * MiB,
        ram_transferred_bytes=RAM + 8 * MiB,
        device_transferred_bytes=DEV_INITIAL + 4 * MiB,
        guest_downtime_ms=guest_ms,
        guest_downtime_uncertainty_ms=1.5,
        predicted_downtime_ms=qemu_ms if not waits else guest_ms,
        switchover_ack_wait_ms=max(0.0, ACK_AT_MS - 1100.0) if waits else 0.0,
        device_initial_load_ms={"vf0": 2500.0},
        decision_reason="pending < threshold",
        decision_basis="data",
        same_clock=True,
        # a failed run leaves the source guest running and intact (checked by the engine)
        source_guest_running_after=outcome != "completed" and source_intact,
        source_integrity_ok=outcome != "completed" and source_intact,
        **_downtime_parts(qemu_ms, guest_ms),
        multifd_channels=2,
        multifd_channel_bytes=[RAM // 2 + 4 * MiB, RAM // 2 + 4 * MiB],
        multifd_channel_packets=[RAM // (2 * 512 * 1024) + 8, RAM // (2 * 512 * 1024) + 8],
        timeline=timeline,
        events=_events(policy, stop_ms, end_ms, guest_ms, waits),
    )


def make_records(repeats: int = 3, scenario: str = "tiny") -> list[RunRecord]:
    return [make_record(p, r, scenario) for r in range(repeats) for p in POLICIES]


def feed(records: Iterable[RunRecord], src: SourceMetrics, tgt: TargetMetrics) -> None:
    """Drive both exporters as the services would during these runs."""
    for rec in records:
        tgt.on_session(rec.scenario, "started")
        events = sorted(rec.events, key=lambda e: e.t_ms)
        busy_s = 0.0
        for sample in rec.timeline:
            src.on_progress(rec.scenario, rec.policy, sample)
            for d in sample.devices:
                loading = d.target_backlog_bytes > 0
                busy_s += 0.1 if loading else 0.0
                tgt.on_load_progress(
                    rec.scenario, d.name, d.target_loaded_bytes, d.target_backlog_bytes, busy_s, loading,
                    d.target_initial_loaded,
                )  # fmt: skip
            while events and events[0].t_ms <= sample.t_ms:
                src.on_event(rec.scenario, rec.policy, events.pop(0))
        for ev in events:
            src.on_event(rec.scenario, rec.policy, ev)
        tgt.on_received_bytes(rec.scenario, "precopy", "ram", rec.ram_transferred_bytes - 8 * MiB)
        tgt.on_received_bytes(rec.scenario, "downtime", "ram", 8 * MiB)
        tgt.on_received_bytes(rec.scenario, "precopy", "device", 64 * MiB)
        tgt.on_received_bytes(rec.scenario, "downtime", "device", 4 * MiB)
        tgt.on_resumed(rec.scenario, rec.policy, FINAL_LOAD_S[rec.policy])
        tgt.on_session(rec.scenario, "verified" if rec.outcome == "completed" else rec.outcome)
        src.on_result(rec)
