"""The running migration as metrics: the latest ProgressSample and the events' wall-clock times.

Per (scenario, policy) it keeps the latest sample (the latest run overwrites) and derives
``migbed_source_*`` from it by the tables of :mod:`fields`, plus what a sample implies: the
phase as one 0/1 series per phase, ``migration_active``, ``ack_pending`` and the time of the
latest sample. Events are timestamps, not pulses: ``migbed_source_last_<event>_timestamp_seconds``
holds the wall-clock time the event happened (the run's ``t_ms`` mapped to wall time once per
run, at its first sample, so intervals between events are exactly the record's).
"""

from __future__ import annotations

import dataclasses
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from migbed.measure.metrics.common import PHASES, as_01
from migbed.measure.metrics.fields import SAMPLE_FIELDS, Figure, figures
from migbed.measure.metrics.results import SP, Key, families, sp_key
from migbed.measure.record import Event, ProgressSample, RunRecord

SOURCE_PREFIX = "migbed_source_"
# Event name on the timeline -> metric name fragment, where the rule (``-`` -> ``_``) is not
# the name users know. Other events get ``migbed_source_last_<name>_timestamp_seconds``.
EVENT_NAMES: dict[str, str] = {"resumed": "resume"}
# Events whose name carries a device after the colon (``init-data-sent:vf0``): the device
# becomes a label. Any other name with a colon is not exported (its tail is not bounded).
DEVICE_EVENTS: tuple[str, ...] = ("init-data-sent",)
_EVENT_OK = re.compile(r"^[a-z][a-z0-9-]*$")


def event_metric(name: str) -> tuple[str, str] | None:
    """``(metric name, device)`` of an event's timestamp gauge, or None if not exported."""
    base, sep, device = name.partition(":")
    if not _EVENT_OK.match(base) or (sep and base not in DEVICE_EVENTS) or (base in DEVICE_EVENTS and not device):
        return None
    fragment = EVENT_NAMES.get(base, base.replace("-", "_"))
    return f"{SOURCE_PREFIX}last_{fragment}_timestamp_seconds", device


@dataclass
class RunClock:
    """Maps a run's ``t_ms`` (since the migration started on the source) to wall-clock time."""

    anchor_s: float | None = None  # wall-clock time of t_ms == 0
    last_t_ms: float = -1.0
    events_seen: set[str] = field(default_factory=set)
    finished: bool = False

    def is_new_run(self, t_ms: float) -> bool:
        return self.finished or t_ms < self.last_t_ms or self.last_t_ms < 0

    def on_sample(self, t_ms: float, now: float) -> None:
        if self.anchor_s is None or self.finished or t_ms < self.last_t_ms:
            # the first sample of a run fixes its clock: later samples and events of the run
            # share it, so intervals between events are exactly those of the record
            self.events_seen = set()
            self.finished = False
            self.anchor_s = now - t_ms / 1000.0
        self.last_t_ms = t_ms

    def on_result(self, total_time_ms: float, now: float) -> None:
        if self.anchor_s is None or self.finished:
            # no live samples of this run: its end is now
            self.anchor_s = now - total_time_ms / 1000.0
            self.events_seen = set()

    def wall(self, t_ms: float, now: float) -> float:
        return now if self.anchor_s is None else self.anchor_s + t_ms / 1000.0


@dataclass
class _Live:
    clock: RunClock = field(default_factory=RunClock)
    sample: ProgressSample | None = None
    phase: str = "setup"
    elapsed_s: float = 0.0
    sampled_at: float | None = None
    events: dict[tuple[str, str], float] = field(default_factory=dict)  # (metric, device) -> ts


def sample_figures(live: _Live) -> Iterator[Figure]:
    """The gauges of one (scenario, policy)'s live state."""
    s = live.sample
    if s is not None:
        yield from figures(s, SAMPLE_FIELDS, SOURCE_PREFIX, what="ProgressSample")
    else:
        yield Figure(SOURCE_PREFIX + "elapsed_seconds", "Time since the current migration started", live.elapsed_s)
    for ph in PHASES:
        yield Figure(
            SOURCE_PREFIX + "phase",
            "1 for the phase the current migration is in (stage: setup, precopy, stop-copy, completing, done), else 0",
            as_01(live.phase == ph),
            (("stage", ph),),
        )
    yield Figure(SOURCE_PREFIX + "migration_active", "1 while a migration is running, 0 once it is done",
                 as_01(live.phase != "done"))  # fmt: skip
    if s is not None:
        yield Figure(
            SOURCE_PREFIX + "ack_pending",
            "1 while the migration is in setup/pre-copy and the destination has not acknowledged",
            as_01(not s.ack_received and live.phase in ("setup", "precopy")),
        )
    if live.sampled_at is not None:
        yield Figure(SOURCE_PREFIX + "last_progress_timestamp_seconds", "Wall-clock time of the latest progress sample",
                     live.sampled_at)  # fmt: skip
    for (metric, device), ts in sorted(live.events.items()):
        doc = "Wall-clock time of the latest occurrence of this event of the migration (for annotations)"
        yield Figure(metric, doc, ts, (("device", device),) if device else ())


def end_sample(last: ProgressSample, record: RunRecord) -> ProgressSample:
    """The live view of a finished run: its last sample at the run's end. A completed run
    sent everything: nothing remains, and the totals are the record's."""
    end: dict[str, object] = {"t_ms": record.total_time_ms}
    if record.outcome == "completed":
        end |= {
            "ram_remaining_bytes": 0,
            "pending_bytes": 0,
            "ram_transferred_bytes": record.ram_transferred_bytes,
            "device_transferred_bytes": record.device_transferred_bytes,
        }
    names = {f.name for f in dataclasses.fields(last)}
    return dataclasses.replace(last, **{k: v for k, v in end.items() if k in names})  # type: ignore[arg-type]


class LiveCollector(Collector):
    """``migbed_source_*``: progress of the latest run per (scenario, policy, time dilation)
    and event times."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: dict[Key, _Live] = {}

    def _get(self, key: Key) -> _Live:
        return self._live.setdefault(key, _Live())

    def on_progress(self, scenario: str, policy: str, sample: ProgressSample, now: float | None = None,
                    time_dilation: float = 1.0) -> bool:
        """Store the sample (virtual time, of a run dilated `time_dilation` times); True if
        it began a new run."""
        now = time.time() if now is None else now
        with self._lock:
            live = self._get(sp_key(scenario, policy, time_dilation))
            new_run = live.clock.is_new_run(sample.t_ms)
            live.clock.on_sample(sample.t_ms, now)
            live.sample, live.phase, live.elapsed_s = sample, sample.phase, sample.t_ms / 1000.0
            live.sampled_at = now
            return new_run

    def on_event(self, scenario: str, policy: str, event: Event, now: float | None = None,
                 time_dilation: float = 1.0) -> None:
        now = time.time() if now is None else now
        with self._lock:
            live = self._get(sp_key(scenario, policy, time_dilation))
            live.clock.events_seen.add(event.name)
            self._set_event(live, event, now)

    @staticmethod
    def _set_event(live: _Live, event: Event, now: float) -> None:
        key = event_metric(event.name)
        if key is not None:
            live.events[key] = live.clock.wall(event.t_ms, now)

    def on_result(self, record: RunRecord, now: float | None = None) -> None:
        """The run is over: live series show its end (phase done), and events the service
        did not report live get their time from the record."""
        now = time.time() if now is None else now
        with self._lock:
            live = self._get(sp_key(record.scenario, record.policy, record.time_dilation))
            live.clock.on_result(record.total_time_ms, now)
            for ev in record.events:
                if ev.name not in live.clock.events_seen:
                    self._set_event(live, ev, now)
            live.clock.finished = True
            if live.sample is None and record.timeline:
                live.sample = record.timeline[-1]
            if live.sample is not None:
                live.sample = end_sample(live.sample, record)
            live.phase, live.elapsed_s = "done", record.total_time_ms / 1000.0

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            figs = [(sp, fig) for sp, live in sorted(self._live.items()) for fig in sample_figures(live)]
        yield from families(figs, SP)

