"""Run records made up for tests of the metrics and the report, shaped like real runs.

The shapes follow the published case (migration-facts.md section 5): with a device whose
setup on the target takes over a second, the legacy rule stops the VM before the target has
loaded the initial data, so the guest-visible downtime holds the setup; switchover-ack waits
for the target's ACK and keeps it out of the downtime.
"""

from __future__ import annotations

from collections.abc import Iterable

from migbed.measure.metrics import SourceMetrics, TargetMetrics
from migbed.measure.record import DeviceSample, Event, ProgressSample, RunRecord

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
INIT_SENT_AT_MS = 800.0


def make_record(policy: str, repeat: int, scenario: str = "tiny", outcome: str = "completed") -> RunRecord:
    stop_ms, qemu_ms, guest_ms, waits = SHAPES[policy]
    jitter = 1.0 + 0.04 * ((repeat * 7 + len(policy)) % 5 - 2)  # deterministic spread
    stop_ms *= jitter
    qemu_ms *= jitter
    guest_ms *= jitter
    ram = 256 * MiB
    dev_initial = 64 * MiB
    timeline: list[ProgressSample] = []
    iterations = 0
    t = 0.0
    while t <= stop_ms:
        frac = t / stop_ms
        phase = "setup" if t == 0 else "precopy"
        if t > 0 and int(t) % 400 == 0:
            iterations += 1
        initial_left = max(0, int(dev_initial * (1 - t / INIT_SENT_AT_MS)))
        acked = waits and t >= ACK_AT_MS
        timeline.append(
            ProgressSample(
                t_ms=t,
                phase=phase,
                ram_remaining_bytes=int(ram * (1 - frac) ** 2) + 4 * MiB,
                ram_transferred_bytes=int(ram * frac),
                device_transferred_bytes=dev_initial - initial_left,
                dirty_sync_count=max(1, iterations),
                bandwidth_bytes_per_s=1.0e9,
                threshold_bytes=3.0e8,
                expected_downtime_ms=20.0 + 10 * (1 - frac),
                dirty_pages_rate=2000.0 + 100 * repeat,
                pending_bytes=int(ram * (1 - frac) ** 2) + initial_left + 4 * MiB,
                ack_received=acked,
                devices=[
                    DeviceSample(
                        name="vf0",
                        state="PRE_COPY",
                        initial_bytes=initial_left,
                        dirty_bytes=int(2 * MiB * frac),
                        target_loaded_bytes=int(dev_initial * min(1.0, t / 2500.0)),
                        target_backlog_bytes=initial_left // 2,
                        target_busy_s=min(t, 2500.0) / 1000.0,
                        target_loading=t < 2500.0,
                        target_initial_loaded=t >= 2500.0,
                    )
                ],
            )
        )
        t += 100.0
    end_ms = stop_ms + qemu_ms
    timeline.append(
        ProgressSample(
            t_ms=end_ms,
            phase="done",
            ram_remaining_bytes=0,
            ram_transferred_bytes=ram + 8 * MiB,
            device_transferred_bytes=dev_initial + 4 * MiB,
            dirty_sync_count=iterations + 1,
            bandwidth_bytes_per_s=1.0e9,
            threshold_bytes=3.0e8,
            expected_downtime_ms=0.0,
            dirty_pages_rate=0.0,
            pending_bytes=0,
            ack_received=waits,
            devices=[DeviceSample("vf0", "STOP", 0, 0, dev_initial, 0, True)],
        )
    )
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
    precopy = ram + dev_initial
    downtime_bytes = 8 * MiB + 4 * MiB
    return RunRecord(
        run_id=f"{scenario}-{policy}-{repeat}-0123abcd",
        scenario=scenario,
        policy=policy,
        repeat=repeat,
        outcome=outcome,
        verified=outcome == "completed",
        setup_time_ms=12.0,
        total_time_ms=end_ms,
        downtime_ms=qemu_ms,
        expected_downtime_ms=25.0,
        dirty_sync_count=iterations + 1,
        precopy_bytes=precopy,
        downtime_bytes=downtime_bytes,
        ram_transferred_bytes=ram + 8 * MiB,
        device_transferred_bytes=dev_initial + 4 * MiB,
        guest_downtime_ms=guest_ms,
        guest_downtime_uncertainty_ms=1.5,
        predicted_downtime_ms=qemu_ms if not waits else guest_ms,
        switchover_ack_wait_ms=max(0.0, ACK_AT_MS - 1100.0) if waits else 0.0,
        device_initial_load_ms={"vf0": 2500.0},
        decision_reason="pending < threshold",
        same_clock=True,
        timeline=timeline,
        events=events,
    )


def make_records(repeats: int = 3, scenario: str = "tiny") -> list[RunRecord]:
    return [make_record(p, r, scenario) for r in range(repeats) for p in POLICIES]


def feed(records: Iterable[RunRecord], src: SourceMetrics, tgt: TargetMetrics) -> None:
    """Drive both exporters as the services would during these runs."""
    for rec in records:
        tgt.on_session(rec.scenario, "started")
        events = sorted(rec.events, key=lambda e: e.t_ms)
        stop_ms = rec.event_time("stop") or rec.total_time_ms
        for sample in rec.timeline:
            src.on_progress(rec.scenario, rec.policy, sample)
            for d in sample.devices:
                tgt.on_load_progress(
                    rec.scenario,
                    d.name,
                    d.target_loaded_bytes,
                    d.target_backlog_bytes,
                    d.target_setup_remaining_s,
                    d.target_initial_loaded,
                )
            while events and events[0].t_ms <= sample.t_ms:
                src.on_event(rec.scenario, rec.policy, events.pop(0))
        for ev in events:
            src.on_event(rec.scenario, rec.policy, ev)
        tgt.on_received_bytes(rec.scenario, "precopy", "ram", rec.ram_transferred_bytes - 8 * MiB)
        tgt.on_received_bytes(rec.scenario, "downtime", "ram", 8 * MiB)
        tgt.on_received_bytes(rec.scenario, "precopy", "device", 64 * MiB)
        tgt.on_received_bytes(rec.scenario, "downtime", "device", 4 * MiB)
        resumed = rec.event_time("resumed") or stop_ms
        tgt.on_resumed(rec.scenario, rec.policy, rec.guest_downtime_ms / 1000.0, (resumed - stop_ms) / 1000.0)
        tgt.on_session(rec.scenario, "verified" if rec.outcome == "completed" else rec.outcome)
        src.on_result(rec)
