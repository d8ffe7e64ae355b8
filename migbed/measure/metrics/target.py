"""The target service's metrics: raw facts a destination observes, nothing derived.

Sessions, bytes received by stage and kind, each device's load progress (loaded and
backlog bytes, busy seconds, whether it is loading, whether the initial data is loaded), the
resume time and how long the final loads took after the last byte arrived; times of a
dilated run (its Setup's time_dilation K) in virtual time, divided by K. Guest downtime is
not here: it is computed once, on the source, into the run record
(``migbed_migration_guest_downtime_seconds``).
"""

from __future__ import annotations

import threading
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from migbed.measure.metrics.common import (
    DOWNTIME_BUCKETS,
    KINDS,
    PREFIX,
    STAGES,
    TARGET_END_STATES,
    as_01,
    new_registry,
)

# States that open a session (services/target: the session registry).
OPEN_STATES: tuple[str, ...] = ("started", "active", "setup", "open")
T = PREFIX + "target_"


class TargetMetrics:
    """Sessions, received bytes, device load progress and resumes of a target service."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry if registry is not None else new_registry()
        self._lock = threading.Lock()
        self._active: dict[str, int] = {}
        sd = ["scenario", "device"]
        sp = ["scenario", "policy", "time_dilation"]
        self.sessions_active = Gauge(T + "sessions_active", "Incoming migrations in progress", ["scenario"], registry=r)
        self.sessions_started = Counter(T + "sessions_started", "Incoming migrations started", ["scenario"], registry=r)
        self.sessions_ended = Counter(
            T + "sessions", "Incoming migrations ended, by end state (verified, mismatch, failed, cancelled)",
            ["scenario", "outcome"], registry=r,
        )  # fmt: skip
        self.loaded = Gauge(T + "device_loaded_bytes", "Device bytes loaded into the device", sd, registry=r)
        self.backlog = Gauge(T + "device_backlog_bytes", "Device bytes received, waiting to be loaded", sd, registry=r)
        self.busy = Gauge(
            T + "device_busy_seconds", "Time the device has spent loading state in the current session", sd, registry=r
        )
        self.loading = Gauge(T + "device_loading", "1 while the device is loading state, else 0", sd, registry=r)
        self.initial_loaded = Gauge(
            T + "device_initial_loaded", "1 once the device's initial data is loaded", sd, registry=r
        )
        self.received = {
            kind: Counter(
                T + f"received_{kind}_bytes",
                f"{'RAM' if kind == 'ram' else 'Device-state'} bytes received, by stage "
                "(precopy: source VM running; downtime: stopped)",
                ["scenario", "stage"],
                registry=r,
            )
            for kind in KINDS
        }
        self.h_final_load = Histogram(
            T + "final_load_seconds", "Time the final loads took after the last byte arrived (RAM and devices)",
            sp, buckets=DOWNTIME_BUCKETS, registry=r,
        )  # fmt: skip
        self.resumes = Counter(T + "resumes", "Guests resumed on the target", sp, registry=r)
        self.last_final_load = Gauge(
            T + "last_final_load_seconds", "Final loads after the last byte, of the latest resume", sp, registry=r
        )
        self.last_resume_ts = Gauge(
            T + "last_resume_timestamp_seconds", "Wall-clock time of the latest resume", sp, registry=r
        )

    def on_session(self, scenario: str, state: str) -> None:
        """A session changes state: ``started`` (or ``active``/``setup``/``open``) opens it, an
        end state (``verified``, ``mismatch``, ``failed``, ``cancelled``) closes it."""
        if state not in OPEN_STATES and state not in TARGET_END_STATES:
            raise ValueError(f"session state must be one of {OPEN_STATES + TARGET_END_STATES}, not {state!r}")
        with self._lock:
            if state in OPEN_STATES:
                self._active[scenario] = self._active.get(scenario, 0) + 1
                self.sessions_started.labels(scenario=scenario).inc()
                for outcome in TARGET_END_STATES:  # visible at zero before the first end
                    self.sessions_ended.labels(scenario=scenario, outcome=outcome)
                for stage in STAGES:  # so rate() sees the first bytes too
                    for counter in self.received.values():
                        counter.labels(scenario=scenario, stage=stage)
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
        sd = {"scenario": scenario, "device": device}
        self.loaded.labels(**sd).set(loaded_bytes)
        self.backlog.labels(**sd).set(backlog_bytes)
        self.busy.labels(**sd).set(busy_s)
        self.loading.labels(**sd).set(as_01(loading))
        self.initial_loaded.labels(**sd).set(as_01(initial_loaded))

    def on_received_bytes(self, scenario: str, stage: str, kind: str, n: int) -> None:
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, not {stage!r}")
        if kind not in self.received:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        self.received[kind].labels(scenario=scenario, stage=stage).inc(n)

    def on_resumed(self, scenario: str, policy: str, loads_after_last_byte_s: float,
                   time_dilation: float = 1.0) -> None:
        """`loads_after_last_byte_s` in virtual time (the session divides by the run's K)."""
        sp = {"scenario": scenario, "policy": policy, "time_dilation": f"{time_dilation or 1.0:g}"}
        self.h_final_load.labels(**sp).observe(loads_after_last_byte_s)
        self.resumes.labels(**sp).inc()
        self.last_final_load.labels(**sp).set(loads_after_last_byte_s)
        self.last_resume_ts.labels(**sp).set(time.time())
