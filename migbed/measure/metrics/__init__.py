"""Prometheus metrics of the source and target services.

Every value is derived from the run record types of :mod:`migbed.measure.record`
(ProgressSample, Event, RunRecord) by one table of fields (:mod:`.fields`); the target exports
raw facts only. Modules:

- :mod:`.common`  naming, buckets, label vocabularies, a service's registry (build info and
  process collectors);
- :mod:`.fields`  record field -> metric name, unit and help (the table and the naming rule);
- :mod:`.live`    the running migration (latest ProgressSample, event times);
- :mod:`.results` finished runs (histograms, counters, latest-result gauges);
- :mod:`.source`, :mod:`.target` the hooks the services call;
- :mod:`.server`  the /metrics endpoint.
"""

from migbed.measure.metrics.common import (
    DOWNTIME_BUCKETS,
    DURATION_BUCKETS,
    ITERATION_BUCKETS,
    PHASES,
    STAGES,
    TARGET_END_STATES,
    VFIO_STATES,
    new_registry,
    vfio_state_number,
)
from migbed.measure.metrics.server import MetricsServer, parse_listen, serve_metrics
from migbed.measure.metrics.source import SourceMetrics
from migbed.measure.metrics.target import TargetMetrics

__all__ = [
    "DOWNTIME_BUCKETS",
    "DURATION_BUCKETS",
    "ITERATION_BUCKETS",
    "PHASES",
    "STAGES",
    "TARGET_END_STATES",
    "VFIO_STATES",
    "MetricsServer",
    "SourceMetrics",
    "TargetMetrics",
    "new_registry",
    "parse_listen",
    "serve_metrics",
    "vfio_state_number",
]
