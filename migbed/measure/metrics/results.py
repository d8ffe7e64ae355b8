"""Finished runs as metrics: a custom collector over the run records the source finished.

It keeps, per (scenario, policy), what every record adds (histogram buckets, counter sums:
they only accumulate, so a run shorter than the scrape interval shows up in full at the next
scrape) and the figures of the latest record (``migbed_migration_last_*``). All of it is
derived from the records by the tables of :mod:`fields`; nothing is set by hand.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from migbed.measure.metrics.common import as_01
from migbed.measure.metrics.fields import COUNTERS, HISTOGRAMS, RECORD_FIELDS, Figure, Labels, figures, record_value
from migbed.measure.record import OUTCOMES, RunRecord

LAST_PREFIX = "migbed_migration_last_"
# Every series of a run's figures is labelled by its scenario, its policy and its time
# dilation (core/dilation.py: the values are virtual; "1" = not dilated).
SP = ("scenario", "policy", "time_dilation")
Key = tuple[str, str, str]


def dilation_label(time_dilation: float) -> str:
    return f"{time_dilation or 1.0:g}"


def sp_key(scenario: str, policy: str, time_dilation: float = 1.0) -> Key:
    return scenario, policy, dilation_label(time_dilation)


@dataclass
class _Histogram:
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)  # per bucket (not cumulative), then +Inf
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.buckets) + 1)

    def observe(self, v: float) -> None:
        i = next((i for i, le in enumerate(self.buckets) if v <= le), len(self.buckets))
        self.counts[i] += 1
        self.total += v
        self.n += 1

    def cumulative(self) -> list[tuple[str, float]]:
        out, acc = [], 0
        for le, c in zip([*self.buckets, float("inf")], self.counts, strict=True):
            acc += c
            out.append((floatToGoString(le), float(acc)))
        return out


def families(figs: Sequence[tuple[tuple[str, ...], Figure]], base_labels: tuple[str, ...]) -> Iterator[Metric]:
    """Gauge families from figures, each with its base label values (first name wins a clash
    of two fields' names; the label set of a name is that of its first figure)."""
    by_name: dict[str, GaugeMetricFamily] = {}
    label_names: dict[str, tuple[str, ...]] = {}
    for values, fig in figs:
        names = tuple(k for k, _ in fig.labels)
        fam = by_name.get(fig.name)
        if fam is None:
            fam = GaugeMetricFamily(fig.name, fig.help, labels=[*base_labels, *names])
            by_name[fig.name] = fam
            label_names[fig.name] = names
        elif label_names[fig.name] != names:
            continue
        fam.add_metric([*values, *(v for _, v in fig.labels)], fig.value)
    yield from by_name.values()


class ResultsCollector(Collector):
    """``migbed_migration_*``: histograms, counters and last-result gauges from RunRecords."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pairs: set[Key] = set()
        self._runs: dict[tuple[str, ...], int] = defaultdict(int)  # (*SP, outcome)
        self._unverified: dict[Key, int] = defaultdict(int)
        self._not_intact: dict[Key, int] = defaultdict(int)
        self._hists: dict[tuple[str, tuple[str, ...], Labels], _Histogram] = {}
        self._counters: dict[tuple[str, Key, Labels], float] = defaultdict(float)
        self._last: dict[Key, list[Figure]] = {}

    def register_pair(self, scenario: str, policy: str, time_dilation: float = 1.0) -> None:
        """Create a (scenario, policy, time dilation)'s result series at zero, so that its
        first result is an increase ``increase()``/``rate()`` can see."""
        with self._lock:
            self._pairs.add(sp_key(scenario, policy, time_dilation))

    def add(self, record: RunRecord, now: float | None = None) -> None:
        now = time.time() if now is None else now
        sp = sp_key(record.scenario, record.policy, record.time_dilation)
        spo = (*sp, record.outcome)
        stopped = record.outcome == "completed" or record.downtime_ms > 0
        last = list(figures(record, RECORD_FIELDS, LAST_PREFIX, what="RunRecord"))
        last.append(Figure(LAST_PREFIX + "completed", "1 if the latest migration completed",
                           as_01(record.outcome == "completed")))  # fmt: skip
        last.append(Figure(LAST_PREFIX + "timestamp_seconds", "Wall-clock time the latest result arrived", now))
        with self._lock:
            self._pairs.add(sp)
            self._runs[spo] += 1
            if record.outcome == "completed" and not record.verified:
                self._unverified[sp] += 1
            if record.outcome != "completed" and not (record.source_guest_running_after and record.source_integrity_ok):
                self._not_intact[sp] += 1
            for h in HISTOGRAMS:
                if h.stopped_only and not stopped:
                    continue
                for _, v in record_value(record, h.field):
                    self._hists.setdefault((h.name, spo, h.labels), _Histogram(h.buckets)).observe(v)
            for c in COUNTERS:
                for labels, v in record_value(record, c.field):
                    self._counters[(c.name, sp, (*c.labels, *labels))] += v
            self._last[sp] = last

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            pairs = sorted(self._pairs)
            runs = dict(self._runs)
            bad = {"unverified": dict(self._unverified), "not_intact": dict(self._not_intact)}
            hists = {k: (h.cumulative(), h.total) for k, h in self._hists.items()}
            counters = dict(self._counters)
            last = [(sp, fig) for sp, figs in sorted(self._last.items()) for fig in figs]
        yield from self._counts(pairs, runs, bad)
        yield from self._histograms(hists)
        yield from self._counter_families(pairs, counters)
        yield from families(last, SP)

    @staticmethod
    def _counts(
        pairs: list[Key], runs: dict[tuple[str, ...], int], bad: dict[str, dict[Key, int]]
    ) -> Iterator[Metric]:
        total = CounterMetricFamily(
            "migbed_migrations", "Migrations finished, by outcome", labels=[*SP, "outcome"]
        )
        unverified = CounterMetricFamily(
            "migbed_migrations_unverified",
            "Completed migrations whose target RAM and device state did not prove equal to the source's",
            labels=list(SP),
        )
        not_intact = CounterMetricFamily(
            "migbed_migrations_source_not_intact",
            "Failed or cancelled migrations after which the source guest was not running with intact pages",
            labels=list(SP),
        )
        for sp in pairs:
            for outcome in OUTCOMES:
                total.add_metric([*sp, outcome], runs.get((*sp, outcome), 0))
            unverified.add_metric(list(sp), bad["unverified"].get(sp, 0))
            not_intact.add_metric(list(sp), bad["not_intact"].get(sp, 0))
        yield from (total, unverified, not_intact)

    @staticmethod
    def _histograms(
        hists: dict[tuple[str, tuple[str, ...], Labels], tuple[list[tuple[str, float]], float]],
    ) -> Iterator[Metric]:
        specs = {h.name: h for h in HISTOGRAMS}  # the first spec of a name gives help and labels
        for name, spec in specs.items():
            extra = [k for k, _ in spec.labels]
            fam = HistogramMetricFamily(name, spec.help, labels=[*SP, "outcome", *extra])
            for (hname, spo, labels), (buckets, total) in sorted(hists.items()):
                if hname == name:
                    fam.add_metric([*spo, *(v for _, v in labels)], buckets, total)
            if fam.samples:
                yield fam

    def _counter_families(
        self, pairs: list[Key], counters: dict[tuple[str, Key, Labels], float]
    ) -> Iterator[Metric]:
        for sp in pairs:
            for c in COUNTERS:
                if c.zero:
                    counters.setdefault((c.name, sp, c.labels), 0.0)
        by_name: dict[str, CounterMetricFamily] = {}
        for (name, sp, labels), v in sorted(counters.items()):
            fam = by_name.get(name)
            if fam is None:
                doc = next(c.help for c in COUNTERS if c.name == name)
                fam = by_name[name] = CounterMetricFamily(name, doc, labels=[*SP, *(k for k, _ in labels)])
            fam.add_metric([*sp, *(lv for _, lv in labels)], v)
        yield from by_name.values()
