"""The source service's metrics: what its migrations report, fed from the run record types.

The engine calls :meth:`SourceMetrics.on_progress` with each ProgressSample,
:meth:`on_event` with each timeline Event and :meth:`on_result` with the finished RunRecord:
the same objects that end up in results.json. Two collectors derive every series from them
(:class:`LiveCollector`, :class:`ResultsCollector`); nothing is measured twice.

The service is a long-lived exporter: histograms and counters accumulate over every migration
the process ran, and the ``*_last_*`` gauges keep the latest result until the next one of the
same (scenario, policy) replaces it (see docs/observability.md).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from migbed.measure.metrics.common import new_registry
from migbed.measure.metrics.live import LiveCollector
from migbed.measure.metrics.results import ResultsCollector
from migbed.measure.record import Event, ProgressSample, RunRecord


class SourceMetrics:
    """Live progress, events and results of the migrations a source service runs."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else new_registry()
        self.live = LiveCollector()
        self.results = ResultsCollector()
        self.registry.register(self.live)
        self.registry.register(self.results)

    # -- the interface the source service calls
    def on_progress(self, scenario: str, policy: str, sample: ProgressSample,
                    time_dilation: float = 1.0) -> None:
        """`sample` in virtual time (the engine undilates it); the factor is a label."""
        if self.live.on_progress(scenario, policy, sample, time_dilation=time_dilation):
            self.results.register_pair(scenario, policy, time_dilation)

    def on_event(self, scenario: str, policy: str, event: Event, time_dilation: float = 1.0) -> None:
        self.live.on_event(scenario, policy, event, time_dilation=time_dilation)

    def on_result(self, record: RunRecord) -> None:
        self.live.on_result(record)
        self.results.add(record)
