"""What both exporters share: naming, buckets, label vocabularies, the registry set-up.

Naming follows Prometheus conventions: common prefix ``migbed_``, base units in the name
(``_seconds``, ``_bytes``), counters end in ``_total``, booleans are 0/1 gauges, and labels are
bounded (``policy``, ``scenario``, ``outcome``, ``device``, ``stage``, ``kind``, ``part``,
``channel``, ``time_dilation``: a dilated run's K, its figures in virtual time; the scrape
config adds ``role``). A run id is never a label.
"""

from __future__ import annotations

import importlib.metadata

from prometheus_client import (
    CollectorRegistry,
    Gauge,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)

PREFIX = "migbed_"

# No ``*_created`` series: they double every counter and histogram for no use on dashboards.
# (A process-wide switch of prometheus-client; migbed processes export only these metrics.)
disable_created_metrics()

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
# What the target receives: guest RAM pages or device state.
KINDS: tuple[str, ...] = ("ram", "device")
# How a session ends on the target (services/target: TargetSession.close()).
TARGET_END_STATES: tuple[str, ...] = ("verified", "mismatch", "failed", "cancelled")
# multifd-channels is at most 16 (migbed/core limits): the bound of the ``channel`` label.
MAX_CHANNELS = 16


def package_version() -> str:
    try:
        return importlib.metadata.version("migbed")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def vfio_state_number(state: str) -> int:
    """The uAPI number of a VFIO state name (``pre-copy``, ``PRE_COPY``...); -1 if unknown."""
    key = state.strip().upper().replace("-", "_").replace(" ", "_")
    key = key.removeprefix("VFIO_DEVICE_STATE_")
    return VFIO_STATES.get(key, -1)


def as_01(flag: bool) -> float:
    return 1.0 if flag else 0.0


def new_registry() -> CollectorRegistry:
    """A service's own registry (never the global one, so tests can run a source and a
    target exporter in one process) with ``migbed_build_info`` and the process collectors:
    ``process_*`` (RSS, CPU seconds, open fds, start time) and ``python_info``."""
    registry = CollectorRegistry(auto_describe=True)
    build_info = Gauge(
        PREFIX + "build_info", "migbed version of this exporter (always 1)", ["version"], registry=registry
    )
    build_info.labels(version=package_version()).set(1)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry
