"""The run record: every number a migration reports, recorded once.

Every other view (results table, CSV, Prometheus metrics, report, dashboards) is derived
from these dataclasses. Field names follow QEMU's query-migrate where one exists
(``setup-time`` -> ``setup_time_ms`` and so on). Times are milliseconds, sizes bytes.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

OUTCOMES = ("completed", "failed", "cancelled")


@dataclass
class ProgressSample:
    """One sample of a running migration, taken every bandwidth window (100 ms).

    ``t_ms`` is since the migration started on the source (QEMU's total-time clock).
    """

    t_ms: float
    phase: str  # setup | precopy | stop-copy | completing | done
    ram_remaining_bytes: int
    ram_transferred_bytes: int
    device_transferred_bytes: int
    dirty_sync_count: int
    bandwidth_bytes_per_s: float
    threshold_bytes: float
    expected_downtime_ms: float
    dirty_pages_rate: float  # pages/s newly dirtied at the last sync, as QEMU counts them
    pending_bytes: int
    ack_received: bool
    devices: list[DeviceSample] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProgressSample:
        d = dict(d)
        d["devices"] = [DeviceSample(**x) for x in d.get("devices", [])]
        return cls(**d)


@dataclass
class DeviceSample:
    name: str
    state: str  # VFIO device state on the source
    initial_bytes: int  # VFIO_MIG_GET_PRECOPY_INFO initial_bytes still to read
    dirty_bytes: int  # VFIO_MIG_GET_PRECOPY_INFO dirty_bytes
    # What the target reported of its loading (DeviceLoadProgress: observed, not modelled).
    target_loaded_bytes: int
    target_backlog_bytes: int
    target_initial_loaded: bool
    target_busy_s: float = 0.0  # wall time the target has spent inside this device's loads
    target_loading: bool = False  # a load was in progress (the main stream waited on it)


@dataclass
class DeviceStopCopy:
    """One device's stop-copy on the source, in ms since the stop (source clock).

    With an asynchronous save (mlx5) save_start is ~0 (the arc to STOP_COPY at vm_stop) and
    the save runs while RAM's final copy and the other devices' data go out; with a
    synchronous one it runs inside vm_stop, device after device; "generic" saves at its
    turn on the stream. 0 where it did not happen."""

    name: str
    save_start_ms: float  # its STOP_COPY save began
    save_ready_ms: float  # its final image was readable (the save done)
    sent_ms: float  # its last stop-copy byte was written
    save_wait_ms: float  # of the downtime: the stop-copy blocked on this device's save


@dataclass
class Event:
    """A point on the run's timeline (ms since the migration started on the source)."""

    t_ms: float
    name: str  # setup-accepted | init-data-sent:<dev> | switchover-ack | decision | stop |
    # completed | resumed | initial-loaded:<dev> (the target reported it, on the source clock)
    detail: str = ""


@dataclass
class RunRecord:
    """The result of one migration. Serialises to one object of results.json."""

    run_id: str
    scenario: str
    policy: str
    repeat: int
    outcome: str  # completed | failed | cancelled
    error: str = ""
    verified: bool = False
    # Setup sent -> the target accepted it (its guest RAM allocated and resident, the
    # session open): starting the destination, before QEMU's clocks start. Not in total-time.
    destination_prepare_ms: float = 0.0
    # -- QEMU query-migrate names
    # QEMU's clocks (setup-time, total-time, every event's t_ms) start once the target has
    # accepted the Setup: a QEMU destination is started, its RAM allocated, before `migrate`.
    setup_time_ms: float = 0.0
    total_time_ms: float = 0.0
    # Source stop -> completion on the source (QEMU's definition). With the return path,
    # completion waits for the target's Shut (sent once every device is loaded); without
    # it, completion is the source writing the last byte. See downtime_end.
    downtime_ms: float = 0.0
    # QEMU's expected-downtime as last computed before the stop (migration_update_counters:
    # RAM dirty bytes at the last sync / the expected bandwidth).
    expected_downtime_ms: float = 0.0
    dirty_sync_count: int = 0
    precopy_bytes: int = 0
    downtime_bytes: int = 0
    ram_transferred_bytes: int = 0
    device_transferred_bytes: int = 0
    verification_ms: float = 0.0  # completion -> the target's Verified (outside total_time)
    # -- the emulated QEMU
    qemu_version: str = ""
    return_path: bool = False  # effective: forced on by a policy that needs switchover-ack
    downtime_end: str = ""  # "shut" (return path) or "last-byte"
    # -- migbed's own
    guest_downtime_ms: float = 0.0  # last vCPU tick on the source -> first on the target
    guest_downtime_uncertainty_ms: float = 0.0  # clock offset error + one vCPU tick period
    # Where guest downtime went; the five parts add up to guest_downtime_ms exactly.
    stop_lag_ms: float = 0.0  # last vCPU tick -> the stop (source clock)
    stop_copy_ms: float = 0.0  # the stop -> the source wrote the last byte (source clock)
    # Of stop_copy_ms: the time the stop-copy was blocked on devices: their suspends and
    # synchronous saves inside vm_stop, and waits for a save to be readable. A save that
    # finished under RAM's final copy or other devices' data costs nothing here:
    # device_stop_copy has each save's own start and end.
    device_save_ms: float = 0.0
    ram_stop_copy_ms: float = 0.0  # the stop -> RAM's last stop-copy byte written
    # Of stop_copy_ms: the device trackers' VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT at the
    # final dirty sync (0 without device dirty tracking).
    tracker_report_ms: float = 0.0
    # last byte written -> the target read it (across clocks). The destination loads inline
    # and reads Complete only after the loads of what came before it (an image the last
    # chunk completed, the config state): those loads are in here.
    delivery_ms: float = 0.0
    destination_load_ms: float = 0.0  # target read the last byte -> every device loaded
    resume_ms: float = 0.0  # every device loaded -> first vCPU tick on the target
    # Of resume_ms: vm_start moving the destination's devices to RUNNING (the drivers'
    # resume commands, mlx5vf_cmd_resume_vhca), before the Shut (target clock).
    device_resume_ms: float = 0.0
    # Round trip of a Ping sent right after the stop, in the migration stream: the queue of
    # pre-copy data still ahead of the stop-copy data (socket buffers, a shaped link's
    # queue), which the downtime waits for too. 0 if its Pong never came.
    stream_rtt_at_stop_ms: float = 0.0
    predicted_downtime_ms: float = 0.0  # the policy's own prediction (time-aware: incl. device)
    switchover_ack_wait_ms: float = 0.0  # pending < threshold first true -> ACK received
    device_initial_load_ms: dict[str, float] = field(default_factory=dict)
    device_stop_copy: list[DeviceStopCopy] = field(default_factory=list)
    device_drivers: dict[str, str] = field(default_factory=dict)  # device -> its driver profile
    # multifd (RAM on channels beside the main stream); 0 channels = off.
    multifd_channels: int = 0
    multifd_channel_bytes: list[int] = field(default_factory=list)
    multifd_channel_packets: list[int] = field(default_factory=list)
    # Of multifd_channel_bytes: device-state packets (device-state-transfer = "multifd").
    multifd_channel_device_bytes: list[int] = field(default_factory=list)
    device_state_transfer: str = "main"
    decision_reason: str = ""  # the go's reason, free text for humans
    # What the switchover rested on, typed (migbed/core/policy.py Basis): "data",
    # "data (no prediction)", "prediction", "floor", or "cap" when forced_by_cap forced it.
    # "" when no switchover was decided, and in records written before the field existed.
    decision_basis: str = ""
    forced_by_cap: str = ""  # "", "max-iterations" or "max-time"
    clock_offset_ns: int = 0  # target clock - source clock
    same_clock: bool = False  # both on one kernel: CLOCK_MONOTONIC is shared, offset is 0
    # A failed or cancelled migration leaves the source guest running and intact (QEMU's
    # promise): whether its vCPU was ticking again afterwards, and its pages self-check.
    source_guest_running_after: bool = False
    source_integrity_ok: bool = False
    source_address: str = ""
    target_address: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    # The run ran K times slower than the scenario's virtual time and every figure here is
    # virtual (times / K, rates x K; migbed/core/dilation.py). 1 = not dilated.
    time_dilation: float = 1.0
    timeline: list[ProgressSample] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunRecord:
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        d["timeline"] = [ProgressSample.from_dict(x) for x in d.get("timeline", [])]
        d["events"] = [Event(**x) for x in d.get("events", [])]
        d["device_stop_copy"] = [DeviceStopCopy(**x) for x in d.get("device_stop_copy", [])]
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> RunRecord:
        return cls.from_dict(json.loads(text))

    def event_time(self, name: str) -> float | None:
        for e in self.events:
            if e.name == name:
                return e.t_ms
        return None

    def bulk_stage_rate(self) -> float | None:
        """Bytes/s of the bulk stage: RAM bytes sent in pre-copy / (decision - pre-copy
        start), from the source's own counters and events (None without a bulk stage)."""
        start, decision = self.event_time("precopy"), self.event_time("decision")
        if start is None or decision is None or decision <= start:
            return None
        return self.precopy_bytes / ((decision - start) / 1e3)

    def bulk_stage_windows(self) -> list[float]:
        """The bandwidth of each 100 ms pre-copy window while RAM remained (bytes/s)."""
        return [s.bandwidth_bytes_per_s for s in self.timeline
                if s.phase == "precopy" and s.ram_remaining_bytes > 0
                and s.bandwidth_bytes_per_s > 0]


# The scalar columns of results.csv and of the results table, in order.
CSV_FIELDS = [
    f.name
    for f in fields(RunRecord)
    if f.name not in ("timeline", "events", "labels", "device_initial_load_ms", "device_stop_copy",
                      "device_drivers",
                      "multifd_channel_bytes", "multifd_channel_packets",
                      "multifd_channel_device_bytes")
]


def load_results(path: str) -> list[RunRecord]:
    with open(path) as fh:
        return [RunRecord.from_dict(x) for x in json.load(fh)]


def load_journal(path: str) -> list[RunRecord]:
    """The records of a results.jsonl (a torn last line moved aside first)."""
    from migbed.measure.files import read_journal

    return [RunRecord.from_json(line) for line in read_journal(Path(path))]


def dump_results(records: list[RunRecord], path: str) -> None:
    """results.json, all at once (a temporary file renamed over it: never half a file)."""
    from migbed.measure.files import atomic_write_json

    atomic_write_json(Path(path), [r.to_dict() for r in records], indent=1)


def write_csv(records: list[RunRecord], path: Path) -> None:
    """results.csv: one row per record, the CSV_FIELDS; all at once (never half a file)."""
    from migbed.measure.files import atomic_write_text

    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(CSV_FIELDS)
    for r in records:
        d = r.to_dict()
        w.writerow([d[f] for f in CSV_FIELDS])
    atomic_write_text(path, buf.getvalue())
