"""Prometheus metrics of the source and target services.

Every value here is derived from the run record types of :mod:`migbed.measure.record`
(ProgressSample, Event, RunRecord); nothing is measured twice.

Naming follows Prometheus conventions: common prefix ``migbed_``, base units in the name
(``_seconds``, ``_bytes``), counters end in ``_total``, booleans are 0/1 gauges, and labels are
bounded (``policy``, ``scenario``, ``outcome``, ``device``, ``stage``; the scrape config adds
``role``). A run id is never a label: per-run values live in results.json, and the exporter
keeps only per-(scenario, policy) series.

The services are long-lived exporters: histograms and counters accumulate over every
migration the process ran, and the ``*_last_*`` gauges keep the latest result until the next
one replaces it, so a migration shorter than the scrape interval still shows up in full at
the next scrape (see docs/observability.md).

Each service instance gets its own :class:`CollectorRegistry` (never the global one), so tests
can run a source and a target exporter in one process.
"""

from __future__ import annotations

import importlib.metadata
import threading
import time
from dataclasses import dataclass, field

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)

from migbed.measure.record import OUTCOMES, Event, ProgressSample, RunRecord

PREFIX = "migbed_"

# No ``*_created`` series: they double every counter and histogram for no use on dashboards.
# (A process-wide switch of prometheus-client; migbed processes export only these metrics.)
disable_created_metrics()


def _package_version() -> str:
    try:
        return importlib.metadata.version("migbed")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


_version = _package_version()

# Downtime from 10 ms to 10 s: dense around QEMU's 300 ms default downtime-limit and around the
# published 0.4 s / 1.9 s switchover-ack numbers.
DOWNTIME_BUCKETS: tuple[float, ...] = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
    1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.5, 10.0,
)  # fmt: skip
# Total migration time and ACK wait: 100 ms .. 5 min.
DURATION_BUCKETS: tuple[float, ...] = (
    0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip
# Dirty-bitmap syncs (iterations) per migration.
ITERATION_BUCKETS: tuple[float, ...] = (1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 50, 100, 200)

# VFIO migration uAPI v2 device states (linux include/uapi/linux/vfio.h,
# enum vfio_device_mig_state): the gauge carries the kernel's own number.
VFIO_STATES: dict[str, int] = {
    "ERROR": 0,
    "STOP": 1,
    "RUNNING": 2,
    "STOP_COPY": 3,
    "RESUMING": 4,
    "RUNNING_P2P": 5,
    "PRE_COPY": 6,
    "PRE_COPY_P2P": 7,
}
# Phases of a migration on the source (ProgressSample.phase); exported as a 0/1 gauge per phase.
PHASES: tuple[str, ...] = ("setup", "precopy", "stop-copy", "completing", "done")
# Byte stages of a migration: before the VM stops and while it is stopped.
STAGES: tuple[str, ...] = ("precopy", "downtime")
# Events that get a "last seen" timestamp gauge, so dashboards can draw them in time.
# Event name on the timeline -> metric name fragment.
EVENT_GAUGES: dict[str, str] = {
    "decision": "decision",
    "switchover-ack": "switchover_ack",
    "stop": "stop",
    "completed": "completed",
    "resumed": "resume",
}
INIT_DATA_SENT_PREFIX = "init-data-sent:"
# How a session ends on the target (services/target: TargetSession.close()).
TARGET_END_STATES: tuple[str, ...] = ("verified", "mismatch", "failed", "cancelled")


def vfio_state_number(state: str) -> int:
    """The uAPI number of a VFIO state name (``pre-copy``, ``PRE_COPY``...); -1 if unknown."""
    key = state.strip().upper().replace("-", "_").replace(" ", "_")
    key = key.removeprefix("VFIO_DEVICE_STATE_")
    return VFIO_STATES.get(key, -1)


def _b(flag: bool) -> float:
    return 1.0 if flag else 0.0


@dataclass
class _RunClock:
    """Maps a run's ``t_ms`` (since the migration started on the source) to wall-clock time."""

    anchor_s: float | None = None  # wall-clock time of t_ms == 0
    last_t_ms: float = -1.0
    events_seen: set[str] = field(default_factory=set)
    finished: bool = False

    def on_sample(self, t_ms: float, now: float) -> None:
        if self.anchor_s is None or self.finished or t_ms < self.last_t_ms:
            # the first sample of a run fixes its clock: later samples and events of the run
            # share it, so intervals between events are exactly those of the record
            self.events_seen = set()
            self.finished = False
            self.anchor_s = now - t_ms / 1000.0
        self.last_t_ms = t_ms

    def wall(self, t_ms: float, now: float) -> float:
        return now if self.anchor_s is None else self.anchor_s + t_ms / 1000.0


class SourceMetrics:
    """Live progress, events and results of the migrations a source service runs."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        sp = ["scenario", "policy"]
        spd = [*sp, "device"]
        self._lock = threading.Lock()
        self._clocks: dict[tuple[str, str], _RunClock] = {}
        self._devices: dict[tuple[str, str], set[str]] = {}

        self.build_info = Gauge(
            PREFIX + "build_info", "migbed version of this exporter (always 1)",
            ["version"], registry=r,
        )  # fmt: skip
        self.build_info.labels(version=_version).set(1)

        # -- live progress (one series per scenario and policy; the latest run overwrites)
        def g(name: str, doc: str, labels: list[str] = sp) -> Gauge:
            return Gauge(PREFIX + "source_" + name, doc, labels, registry=r)

        self.elapsed = g("elapsed_seconds", "Time since the current migration started (QEMU total-time)")
        self.phase = g(
            "phase",
            "1 for the phase the current migration is in (stage: setup, precopy, stop-copy, completing, done), else 0",
            [*sp, "stage"],
        )
        self.active = g("migration_active", "1 while a migration is running, 0 once it is done")
        self.ram_remaining = g("ram_remaining_bytes", "RAM still to send (QEMU ram.remaining)")
        self.ram_transferred = g("ram_transferred_bytes", "RAM sent so far in the current migration (ram.transferred)")
        self.device_transferred = g(
            "device_transferred_bytes",
            "Device state sent so far in the current migration (vfio.transferred)",
        )
        self.iterations = g(
            "iterations",
            "Dirty-bitmap syncs so far in the current migration (QEMU ram.dirty-sync-count, libvirt 'Iteration')",
        )
        self.bandwidth = g(
            "bandwidth_bytes_per_second",
            "Bandwidth measured over the last 100 ms window (QEMU ram.mbps, in bytes)",
        )
        self.dirty_rate = g(
            "dirty_pages_per_second",
            "Pages newly dirtied per second at the last sync (QEMU ram.dirty-pages-rate)",
        )
        self.threshold = g("threshold_bytes", "Switchover threshold: bandwidth x downtime-limit (threshold_size)")
        self.expected_downtime = g(
            "expected_downtime_seconds",
            "QEMU's expected downtime: dirty bytes at the last sync / bandwidth",
        )
        self.pending = g("pending_bytes", "Pending bytes of all handlers (RAM + devices)")
        self.ack_received = g("ack_received", "1 once the destination's SWITCHOVER_ACK has arrived, else 0")
        self.ack_pending = g(
            "ack_pending",
            "1 while the migration is in setup/pre-copy and the destination has not acknowledged",
        )
        self.last_progress = g("last_progress_timestamp_seconds", "Wall-clock time of the latest progress sample")
        # -- per device, as the source sees it (target columns come over the return path)
        self.dev_initial = g(
            "device_initial_bytes",
            "VFIO precopy initial_bytes still to read (VFIO_MIG_GET_PRECOPY_INFO)", spd,
        )  # fmt: skip
        self.dev_dirty = g("device_dirty_bytes", "VFIO precopy dirty_bytes (VFIO_MIG_GET_PRECOPY_INFO)", spd)
        self.dev_state = g(
            "device_vfio_state",
            "VFIO device state on the source as the uAPI number (vfio_device_mig_state: 0 ERROR, "
            "1 STOP, 2 RUNNING, 3 STOP_COPY, 4 RESUMING, 5 RUNNING_P2P, 6 PRE_COPY, "
            "7 PRE_COPY_P2P; -1 unknown)",
            spd,
        )
        self.dev_target_loaded = g("device_target_loaded_bytes", "Device bytes the target has loaded", spd)
        self.dev_target_backlog = g(
            "device_target_backlog_bytes",
            "Device bytes received by the target, not yet loaded",
            spd,
        )
        self.dev_target_setup = g(
            "device_target_setup_remaining_seconds",
            "Device setup work left on the target (time-shifting work, not data)",
            spd,
        )
        self.dev_target_initial_loaded = g(
            "device_target_initial_loaded",
            "1 once the target has loaded the device's initial data",
            spd,
        )
        # -- events: wall-clock time of the latest occurrence, for annotations
        self.event_ts: dict[str, Gauge] = {
            ev: g(
                f"last_{frag}_timestamp_seconds",
                f"Wall-clock time of the latest '{ev}' event of a migration",
            )
            for ev, frag in EVENT_GAUGES.items()
        }
        self.init_data_sent_ts = g(
            "last_init_data_sent_timestamp_seconds",
            "Wall-clock time the source last wrote a device's INIT_DATA_SENT marker",
            spd,
        )

        # -- results (labels policy, scenario, outcome); accumulate over the exporter's life
        spo = ["policy", "scenario", "outcome"]
        ps = ["policy", "scenario"]

        def h(name: str, doc: str, buckets: tuple[float, ...], labels: list[str] = spo) -> Histogram:
            return Histogram(PREFIX + "migration_" + name, doc, labels, buckets=buckets, registry=r)

        def last(name: str, doc: str, labels: list[str] = ps) -> Gauge:
            return Gauge(PREFIX + "migration_last_" + name, doc, labels, registry=r)

        self.h_guest_downtime = h(
            "guest_downtime_seconds",
            "Guest-visible downtime: last vCPU tick on the source to first on the target",
            DOWNTIME_BUCKETS,
        )
        self.h_downtime = h(
            "downtime_seconds",
            "Downtime as QEMU reports it: source stop to completion on the source",
            DOWNTIME_BUCKETS,
        )
        self.h_total = h("total_time_seconds", "Total migration time (QEMU total-time)", DURATION_BUCKETS)
        self.h_ack_wait = h(
            "switchover_ack_wait_seconds",
            "Time the source waited for the destination's ACK after pending fell below threshold",
            DURATION_BUCKETS,
        )
        self.h_iterations = h("iterations", "Dirty-bitmap syncs (iterations) per migration", ITERATION_BUCKETS)
        self.migrations = Counter(PREFIX + "migrations", "Migrations finished, by outcome", spo, registry=r)
        self.bytes_by_stage = Counter(
            PREFIX + "migration_transferred_bytes",
            "Bytes sent by migrations, by stage (precopy: VM running; downtime: VM stopped)",
            [*ps, "stage"],
            registry=r,
        )
        self.ram_bytes = Counter(
            PREFIX + "migration_ram_transferred_bytes", "RAM bytes sent by migrations", ps,
            registry=r,
        )  # fmt: skip
        self.device_bytes = Counter(
            PREFIX + "migration_device_transferred_bytes",
            "Device-state bytes sent by migrations",
            ps,
            registry=r,
        )
        self.last_guest_downtime = last("guest_downtime_seconds", "Guest-visible downtime of the latest migration")
        self.last_guest_downtime_uncertainty = last(
            "guest_downtime_uncertainty_seconds",
            "Uncertainty of the latest guest-visible downtime (clock offset + one vCPU tick)",
        )
        self.last_downtime = last("downtime_seconds", "QEMU-style downtime of the latest migration")
        self.last_expected_downtime = last(
            "expected_downtime_seconds", "QEMU's expected downtime at the latest decision"
        )
        self.last_predicted_downtime = last(
            "predicted_downtime_seconds", "The policy's own downtime prediction at the decision"
        )
        self.last_total = last("total_time_seconds", "Total time of the latest migration")
        self.last_setup = last("setup_time_seconds", "Setup time of the latest migration")
        self.last_ack_wait = last("switchover_ack_wait_seconds", "ACK wait of the latest migration")
        self.last_iterations = last("iterations", "Iterations of the latest migration")
        self.last_precopy_bytes = last("precopy_bytes", "Bytes sent before the VM stopped")
        self.last_downtime_bytes = last("downtime_bytes", "Bytes sent while the VM was stopped")
        self.last_ram_bytes = last("ram_transferred_bytes", "RAM bytes of the latest migration")
        self.last_device_bytes = last("device_transferred_bytes", "Device bytes of the latest migration")
        self.last_completed = last("completed", "1 if the latest migration completed, else 0")
        self.last_verified = last("verified", "1 if the latest migration's guest memory and device state verified")
        self.last_forced_by_cap = last(
            "forced_by_cap", "1 if a max-iterations or max-time cap forced the latest switchover"
        )
        self.last_timestamp = last("timestamp_seconds", "Wall-clock time the latest migration's result was recorded")
        self.last_device_initial_load = last(
            "device_initial_load_seconds",
            "Time the target took to load a device's initial data in the latest migration",
            [*ps, "device"],
        )

    # -- helpers
    def _clock(self, scenario: str, policy: str) -> _RunClock:
        return self._clocks.setdefault((scenario, policy), _RunClock())

    def _init_result_series(self, scenario: str, policy: str) -> None:
        """Create the result series at zero, so the first result is a visible increase."""
        for outcome in OUTCOMES:
            self.migrations.labels(policy=policy, scenario=scenario, outcome=outcome)
        for stage in STAGES:
            self.bytes_by_stage.labels(policy=policy, scenario=scenario, stage=stage)
        self.ram_bytes.labels(policy=policy, scenario=scenario)
        self.device_bytes.labels(policy=policy, scenario=scenario)

    def _set_event(self, scenario: str, policy: str, name: str, ts: float) -> None:
        if name in self.event_ts:
            self.event_ts[name].labels(scenario=scenario, policy=policy).set(ts)
        elif name.startswith(INIT_DATA_SENT_PREFIX):
            dev = name[len(INIT_DATA_SENT_PREFIX) :]
            self.init_data_sent_ts.labels(scenario=scenario, policy=policy, device=dev).set(ts)

    # -- the interface the source service calls
    def on_progress(self, scenario: str, policy: str, sample: ProgressSample) -> None:
        now = time.time()
        sp = {"scenario": scenario, "policy": policy}
        with self._lock:
            clock = self._clock(scenario, policy)
            new_run = clock.finished or sample.t_ms < clock.last_t_ms or clock.last_t_ms < 0
            clock.on_sample(sample.t_ms, now)
            if new_run:
                self._init_result_series(scenario, policy)
            self.elapsed.labels(**sp).set(sample.t_ms / 1000.0)
            for ph in PHASES:
                self.phase.labels(**sp, stage=ph).set(_b(sample.phase == ph))
            self.active.labels(**sp).set(_b(sample.phase != "done"))
            self.ram_remaining.labels(**sp).set(sample.ram_remaining_bytes)
            self.ram_transferred.labels(**sp).set(sample.ram_transferred_bytes)
            self.device_transferred.labels(**sp).set(sample.device_transferred_bytes)
            self.iterations.labels(**sp).set(sample.dirty_sync_count)
            self.bandwidth.labels(**sp).set(sample.bandwidth_bytes_per_s)
            self.dirty_rate.labels(**sp).set(sample.dirty_pages_rate)
            self.threshold.labels(**sp).set(sample.threshold_bytes)
            self.expected_downtime.labels(**sp).set(sample.expected_downtime_ms / 1000.0)
            self.pending.labels(**sp).set(sample.pending_bytes)
            self.ack_received.labels(**sp).set(_b(sample.ack_received))
            self.ack_pending.labels(**sp).set(_b(not sample.ack_received and sample.phase in ("setup", "precopy")))
            self.last_progress.labels(**sp).set(now)
            for d in sample.devices:
                sd = {**sp, "device": d.name}
                self._devices.setdefault((scenario, policy), set()).add(d.name)
                self.dev_initial.labels(**sd).set(d.initial_bytes)
                self.dev_dirty.labels(**sd).set(d.dirty_bytes)
                self.dev_state.labels(**sd).set(vfio_state_number(d.state))
                self.dev_target_loaded.labels(**sd).set(d.target_loaded_bytes)
                self.dev_target_backlog.labels(**sd).set(d.target_backlog_bytes)
                self.dev_target_initial_loaded.labels(**sd).set(_b(d.target_initial_loaded))

    def on_event(self, scenario: str, policy: str, event: Event) -> None:
        now = time.time()
        with self._lock:
            clock = self._clock(scenario, policy)
            clock.events_seen.add(event.name)
            self._set_event(scenario, policy, event.name, clock.wall(event.t_ms, now))

    def on_result(self, record: RunRecord) -> None:
        now = time.time()
        policy, scenario, outcome = record.policy, record.scenario, record.outcome
        ps = {"policy": policy, "scenario": scenario}
        spo = {**ps, "outcome": outcome}
        with self._lock:
            self._init_result_series(scenario, policy)
            clock = self._clock(scenario, policy)
            if clock.anchor_s is None or clock.finished:
                # no live samples of this run: its end is now
                clock.anchor_s = now - record.total_time_ms / 1000.0
                clock.events_seen = set()
            # events the service did not report live get their time from the record
            for ev in record.events:
                if ev.name not in clock.events_seen:
                    self._set_event(scenario, policy, ev.name, clock.wall(ev.t_ms, now))
            clock.finished = True

            stopped = outcome == "completed" or record.downtime_ms > 0
            if stopped:
                self.h_downtime.labels(**spo).observe(record.downtime_ms / 1000.0)
                self.h_guest_downtime.labels(**spo).observe(record.guest_downtime_ms / 1000.0)
                self.h_ack_wait.labels(**spo).observe(record.switchover_ack_wait_ms / 1000.0)
            self.h_total.labels(**spo).observe(record.total_time_ms / 1000.0)
            self.h_iterations.labels(**spo).observe(record.dirty_sync_count)
            self.migrations.labels(**spo).inc()
            self.bytes_by_stage.labels(**ps, stage="precopy").inc(record.precopy_bytes)
            self.bytes_by_stage.labels(**ps, stage="downtime").inc(record.downtime_bytes)
            self.ram_bytes.labels(**ps).inc(record.ram_transferred_bytes)
            self.device_bytes.labels(**ps).inc(record.device_transferred_bytes)

            self.last_guest_downtime.labels(**ps).set(record.guest_downtime_ms / 1000.0)
            self.last_guest_downtime_uncertainty.labels(**ps).set(record.guest_downtime_uncertainty_ms / 1000.0)
            self.last_downtime.labels(**ps).set(record.downtime_ms / 1000.0)
            self.last_expected_downtime.labels(**ps).set(record.expected_downtime_ms / 1000.0)
            self.last_predicted_downtime.labels(**ps).set(record.predicted_downtime_ms / 1000.0)
            self.last_total.labels(**ps).set(record.total_time_ms / 1000.0)
            self.last_setup.labels(**ps).set(record.setup_time_ms / 1000.0)
            self.last_ack_wait.labels(**ps).set(record.switchover_ack_wait_ms / 1000.0)
            self.last_iterations.labels(**ps).set(record.dirty_sync_count)
            self.last_precopy_bytes.labels(**ps).set(record.precopy_bytes)
            self.last_downtime_bytes.labels(**ps).set(record.downtime_bytes)
            self.last_ram_bytes.labels(**ps).set(record.ram_transferred_bytes)
            self.last_device_bytes.labels(**ps).set(record.device_transferred_bytes)
            self.last_completed.labels(**ps).set(_b(outcome == "completed"))
            self.last_verified.labels(**ps).set(_b(record.verified))
            self.last_forced_by_cap.labels(**ps).set(_b(bool(record.forced_by_cap)))
            self.last_timestamp.labels(**ps).set(now)
            for dev, ms in record.device_initial_load_ms.items():
                self.last_device_initial_load.labels(**ps, device=dev).set(ms / 1000.0)
            # the run is over: live gauges show its end state
            sp = {"scenario": scenario, "policy": policy}
            self.active.labels(**sp).set(0)
            for ph in PHASES:
                self.phase.labels(**sp, stage=ph).set(_b(ph == "done"))
            self.elapsed.labels(**sp).set(record.total_time_ms / 1000.0)


class TargetMetrics:
    """Sessions, received bytes, device load progress and resumes of a target service."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self._lock = threading.Lock()
        self._active: dict[str, int] = {}
        sd = ["scenario", "device"]
        sp = ["scenario", "policy"]

        self.build_info = Gauge(
            PREFIX + "build_info", "migbed version of this exporter (always 1)",
            ["version"], registry=r,
        )  # fmt: skip
        self.build_info.labels(version=_version).set(1)

        def g(name: str, doc: str, labels: list[str]) -> Gauge:
            return Gauge(PREFIX + "target_" + name, doc, labels, registry=r)

        self.sessions_active = g("sessions_active", "Incoming migrations in progress", ["scenario"])
        self.sessions_started = Counter(
            PREFIX + "target_sessions_started", "Incoming migrations started", ["scenario"],
            registry=r,
        )  # fmt: skip
        self.sessions_ended = Counter(
            PREFIX + "target_sessions",
            "Incoming migrations ended, by end state (verified, mismatch, failed, cancelled)",
            ["scenario", "outcome"],
            registry=r,
        )
        self.loaded = g("device_loaded_bytes", "Device bytes loaded into the device", sd)
        self.backlog = g("device_backlog_bytes", "Device bytes received and waiting to be loaded", sd)
        self.setup_remaining = g(
            "device_setup_remaining_seconds",
            "Device setup work left (resource allocation: time, not data)",
            sd,
        )
        self.initial_loaded = g("device_initial_loaded", "1 once the device's initial data is loaded", sd)
        self.received_ram = Counter(
            PREFIX + "target_received_ram_bytes",
            "RAM bytes received, by stage (precopy: source VM running; downtime: stopped)",
            ["scenario", "stage"],
            registry=r,
        )
        self.received_device = Counter(
            PREFIX + "target_received_device_bytes",
            "Device-state bytes received, by stage (precopy: source VM running; downtime: stopped)",
            ["scenario", "stage"],
            registry=r,
        )
        self.h_guest_downtime = Histogram(
            PREFIX + "target_guest_downtime_seconds",
            "Guest-visible downtime measured at resume on the target",
            sp,
            buckets=DOWNTIME_BUCKETS,
            registry=r,
        )
        self.h_load = Histogram(
            PREFIX + "target_final_load_seconds",
            "Time from the source's stop to the target's devices and RAM being loaded",
            sp,
            buckets=DOWNTIME_BUCKETS,
            registry=r,
        )
        self.resumes = Counter(PREFIX + "target_resumes", "Guests resumed on the target", sp, registry=r)
        self.last_guest_downtime = g("last_guest_downtime_seconds", "Guest-visible downtime of the latest resume", sp)
        self.last_load = g("last_final_load_seconds", "Final load time of the latest resume", sp)
        self.last_resume_ts = g("last_resume_timestamp_seconds", "Wall-clock time of the latest resume", sp)

    def on_session(self, scenario: str, state: str) -> None:
        """A session changes state: ``started`` (or ``active``/``setup``) opens it, an end state
        (``verified``, ``mismatch``, ``failed``, ``cancelled``) closes it."""
        with self._lock:
            if state in ("started", "active", "setup", "open"):
                self._active[scenario] = self._active.get(scenario, 0) + 1
                self.sessions_started.labels(scenario=scenario).inc()
                for outcome in TARGET_END_STATES:  # visible at zero before the first end
                    self.sessions_ended.labels(scenario=scenario, outcome=outcome)
                for stage in STAGES:  # so rate() sees the first bytes too
                    self.received_ram.labels(scenario=scenario, stage=stage)
                    self.received_device.labels(scenario=scenario, stage=stage)
            else:
                self._active[scenario] = max(0, self._active.get(scenario, 0) - 1)
                self.sessions_ended.labels(scenario=scenario, outcome=state).inc()
            self.sessions_active.labels(scenario=scenario).set(self._active[scenario])

    def on_load_progress(
        self,
        scenario: str,
        device: str,
        loaded_bytes: int,
        backlog_bytes: int,
        busy_s: float,
        loading: bool,
        initial_loaded: bool,
    ) -> None:
        # (target branch: the signature the metrics branch implements; busy_s and loading
        # get their series there)
        sd = {"scenario": scenario, "device": device}
        self.loaded.labels(**sd).set(loaded_bytes)
        self.backlog.labels(**sd).set(backlog_bytes)
        self.initial_loaded.labels(**sd).set(_b(initial_loaded))

    def on_received_bytes(self, scenario: str, stage: str, kind: str, n: int) -> None:
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, not {stage!r}")
        if kind == "ram":
            self.received_ram.labels(scenario=scenario, stage=stage).inc(n)
        elif kind == "device":
            self.received_device.labels(scenario=scenario, stage=stage).inc(n)
        else:
            raise ValueError(f"kind must be 'ram' or 'device', not {kind!r}")

    def on_resumed(self, scenario: str, policy: str, load_s: float) -> None:
        # (target branch: guest downtime is computed once, on the source)
        sp = {"scenario": scenario, "policy": policy}
        self.h_load.labels(**sp).observe(load_s)
        self.resumes.labels(**sp).inc()
        self.last_load.labels(**sp).set(load_s)
        self.last_resume_ts.labels(**sp).set(time.time())


class MetricsServer:
    """A running /metrics HTTP server (a daemon thread). ``shutdown()`` stops it."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self._httpd, self._thread = start_http_server(port, addr=host, registry=registry)
        self.host = host
        self.port: int = int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = self.host if self.host not in ("", "0.0.0.0", "::") else "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/metrics"

    def shutdown(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    close = shutdown

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port``, ``[v6]:port``, ``:port`` (all interfaces) or ``port`` -> (host, port)."""
    listen = listen.strip()
    if listen.startswith("["):
        host, _, rest = listen[1:].partition("]")
        port = rest.removeprefix(":")
    elif ":" in listen:
        host, _, port = listen.rpartition(":")
    else:
        host, port = "", listen
    if not port.isdigit():
        raise ValueError(f"metrics listen address needs a port: {listen!r}")
    return (host or "0.0.0.0"), int(port)


def serve_metrics(registry: CollectorRegistry, listen: str) -> MetricsServer:
    """Serve ``registry`` on ``http://listen/metrics`` (port 0 picks a free port)."""
    host, port = parse_listen(listen)
    return MetricsServer(registry, host, port)
