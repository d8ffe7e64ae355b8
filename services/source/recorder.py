"""The one writer of a migration's RunRecord: every figure of the run is set here.

The phases tell the recorder what happened (an event, a sample, the decision, the stop,
the target's raw timestamps); the recorder turns that into the record's fields. Guest
downtime and its parts are computed here and nowhere else, on the source's clock, with
the NTP-style offset estimated over the stream's pings (the target reports raw times).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from migbed.core.clock import OffsetEstimate
from migbed.measure.record import DeviceStopCopy, Event, ProgressSample, RunRecord

from .counters import Counters
from .devices import SaveTimes, blocked_s


@dataclass(frozen=True)
class StopCopyTimes:
    """What the source measured of its stop-copy (time.monotonic / CLOCK_MONOTONIC ns)."""

    last_tick_ns: int  # the vCPU's last tick (CLOCK_MONOTONIC)
    stop_ns: int  # the stop (CLOCK_MONOTONIC)
    last_byte_ns: int  # the source wrote Complete, the last byte of the stream
    completion_ns: int  # completion on the source (Shut arrived, or = last_byte_ns)
    ram_sent_ns: int  # RAM's last stop-copy byte was written
    tracker_report_s: float  # the device trackers' report at the final dirty sync


@dataclass(frozen=True)
class TargetTimes:
    """The target's raw timestamps (its CLOCK_MONOTONIC), as reported on the return path."""

    received_ns: int  # it read Complete, the last byte (Received): after inline loads
    loads_done_ns: int  # every device loaded (Shut, or Resumed)
    devices_running_ns: int  # vm_start moved every device to RUNNING (0: not reported)
    first_tick_ns: int  # the resumed guest's first vCPU tick (Resumed)


class Recorder:
    def __init__(self, record: RunRecord, on_sample: Callable[[ProgressSample], None] | None,
                 on_event: Callable[[Event], None] | None) -> None:
        self.record = record
        self.on_sample = on_sample
        self.on_event = on_event
        self.t0 = 0.0  # time.monotonic() at the migration's start (QEMU's total-time clock)
        self.completed_at = 0.0

    def start(self, return_path: bool, qemu_version: str, device_state_transfer: str) -> None:
        self.t0 = time.monotonic()
        r = self.record
        r.return_path, r.qemu_version = return_path, qemu_version
        r.downtime_end = "shut" if return_path else "last-byte"
        r.device_state_transfer = device_state_transfer

    def destination_ready(self) -> None:
        """The target accepted the Setup: what it took is the destination's start (QEMU's
        destination exists before `migrate`), and QEMU's clocks start now."""
        now = time.monotonic()
        self.record.destination_prepare_ms = (now - self.t0) * 1e3
        self.t0 = now

    def elapsed_ms(self, at: float | None = None) -> float:
        if not self.t0:
            return 0.0
        return ((time.monotonic() if at is None else at) - self.t0) * 1e3

    def event(self, name: str, detail: str = "", at_ms: float | None = None) -> None:
        ev = Event(round(self.elapsed_ms() if at_ms is None else at_ms, 3), name, detail)
        self.record.events.append(ev)
        if self.on_event is not None:
            self.on_event(ev)

    def sample(self, s: ProgressSample) -> None:
        self.record.timeline.append(s)
        if self.on_sample is not None:
            self.on_sample(s)

    def setup_done(self) -> None:
        self.record.setup_time_ms = self.elapsed_ms()

    def multifd(self, channels: int) -> None:
        self.record.multifd_channels = channels

    def decision(self, reason: str, basis: str, forced: str, expected_downtime_s: float,
                 predicted_downtime_s: float, ack_wait_s: float | None) -> None:
        r = self.record
        r.decision_reason, r.decision_basis, r.forced_by_cap = reason, basis, forced
        r.expected_downtime_ms = expected_downtime_s * 1e3
        r.predicted_downtime_ms = predicted_downtime_s * 1e3
        if ack_wait_s is not None:
            r.switchover_ack_wait_ms = max(0.0, ack_wait_s * 1e3)
        self.event("decision", reason)

    def stop_copy(self, t: StopCopyTimes) -> None:
        """Completion on the source: QEMU's downtime, and the source's parts of it."""
        r = self.record
        r.downtime_ms = (t.completion_ns - t.stop_ns) / 1e6
        r.stop_lag_ms = (t.stop_ns - t.last_tick_ns) / 1e6
        r.stop_copy_ms = (t.last_byte_ns - t.stop_ns) / 1e6
        r.ram_stop_copy_ms = (t.ram_sent_ns - t.stop_ns) / 1e6
        r.tracker_report_ms = t.tracker_report_s * 1e3
        self.completed_at = time.monotonic()
        r.total_time_ms = self.elapsed_ms(self.completed_at)  # QEMU's total-time ends here
        self.event("completed")

    def device_stop_copy(self, names: list[str], times: list[SaveTimes], stop_ns: int) -> None:
        """Each device's stop-copy on the source's clock, in ms since the stop; and
        device_save_ms, the time the stop-copy spent blocked on devices: their suspends and
        saves (a save that finished under RAM's final copy or another device's data costs
        nothing here)."""
        stop_s = stop_ns / 1e9

        def since_stop(t: float) -> float:
            return round((t - stop_s) * 1e3, 3) if t else 0.0

        r = self.record
        r.device_stop_copy = [
            DeviceStopCopy(n, since_stop(t.save_start), since_stop(t.save_ready),
                           since_stop(t.sent), round(t.waited_s * 1e3, 3))
            for n, t in zip(names, times, strict=True)]
        r.device_save_ms = blocked_s(times) * 1e3

    def resumed(self, stop: StopCopyTimes, target: TargetTimes, offset: OffsetEstimate,
                tick_ns: int) -> None:
        """Guest downtime and its target-side parts, from the target's raw timestamps."""
        r = self.record
        r.clock_offset_ns, r.same_clock = offset.offset_ns, offset.same_clock
        first_tick = target.first_tick_ns - offset.offset_ns  # on the source's clock
        received = target.received_ns - offset.offset_ns
        r.guest_downtime_ms = (first_tick - stop.last_tick_ns) / 1e6
        r.guest_downtime_uncertainty_ms = (offset.uncertainty_ns + tick_ns) / 1e6
        r.delivery_ms = (received - stop.last_byte_ns) / 1e6
        r.destination_load_ms = (target.loads_done_ns - target.received_ns) / 1e6
        r.resume_ms = (target.first_tick_ns - target.loads_done_ns) / 1e6
        if target.devices_running_ns:
            r.device_resume_ms = (target.devices_running_ns - target.loads_done_ns) / 1e6
        self.event("resumed", f"{r.guest_downtime_ms:.1f} ms after the last source tick",
                   at_ms=(first_tick - int(self.t0 * 1e9)) / 1e6)

    def initial_loaded(self, names: list[str], target_ns: list[int], offset: OffsetEstimate) -> None:
        """An `initial-loaded:<device>` event when the target reported the device's initial
        data loaded (its clock, moved to the source's): before or after the stop, it tells
        whether the device's setup ran inside the downtime (report/regime.py)."""
        for name, ns in zip(names, target_ns, strict=True):
            if ns:
                self.event(f"initial-loaded:{name}",
                           at_ms=(ns - offset.offset_ns - int(self.t0 * 1e9)) / 1e6)

    def device_initial_loads(self, names: list[str], seconds: list[float]) -> None:
        self.record.device_initial_load_ms = {
            n: s * 1e3 for n, s in zip(names, seconds, strict=False)}

    def verified(self) -> None:
        r = self.record
        r.verified, r.outcome = True, "completed"
        r.verification_ms = (time.monotonic() - self.completed_at) * 1e3

    def ended(self, outcome: str, error: str) -> None:
        self.record.outcome, self.record.error = outcome, error

    def counters(self, c: Counters, dirty_sync_count: int, stop_ping_rtt_ms: float) -> None:
        r = self.record
        # The Pong of the Ping sent right after the stop (0 if it never came).
        r.stream_rtt_at_stop_ms = stop_ping_rtt_ms
        if not r.total_time_ms:  # failed or cancelled: total-time runs to the end
            r.total_time_ms = self.elapsed_ms()
        r.dirty_sync_count = dirty_sync_count
        r.precopy_bytes, r.downtime_bytes = c.precopy_bytes, c.downtime_bytes
        r.ram_transferred_bytes, r.device_transferred_bytes = c.ram_transferred, c.device_transferred

    def multifd_stats(self, channel_bytes: list[int], channel_packets: list[int],
                      channel_device_bytes: list[int]) -> None:
        self.record.multifd_channel_bytes = list(channel_bytes)
        self.record.multifd_channel_packets = list(channel_packets)
        self.record.multifd_channel_device_bytes = list(channel_device_bytes)

    def source_after_failure(self, running: bool, corrupt_pages: list[int]) -> None:
        r = self.record
        r.source_guest_running_after = running
        r.source_integrity_ok = not corrupt_pages
        if corrupt_pages:
            r.error += f"; source pages corrupt: {corrupt_pages[:5]}"

    def close(self) -> None:
        self.record.events.sort(key=lambda e: e.t_ms)
