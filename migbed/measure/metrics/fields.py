"""From the run record's dataclasses to metric values: one table and one rule, no hand-set gauges.

Every numeric field of a :class:`RunRecord`, :class:`ProgressSample` or device sample becomes
a gauge, named from the field by one rule (unit suffix to base unit: ``_ms``/``_ns``/``_s`` ->
``_seconds`` with the value scaled; ``_bytes_per_s`` -> ``_bytes_per_second``; booleans as 0/1;
a ``dict`` field gets one series per key, a list of numbers one per index, a list of
dataclasses with a ``name`` one per item). The tables below only name the exceptions: a name
that users already know (``dirty_sync_count`` -> ``iterations``), a string with a meaning
(``forced_by_cap``), fields that are not figures (ids, addresses, the timeline). A field the
engine adds later is exported with no code here; its HELP comes from the field's
``metadata={"help": ...}`` when it has one.

Pure logic (no prometheus-client objects): the collectors turn :class:`Figure` lists into
metric families.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from migbed.measure.metrics.common import (
    DOWNTIME_BUCKETS,
    DURATION_BUCKETS,
    ITERATION_BUCKETS,
    MAX_CHANNELS,
    vfio_state_number,
)

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Figure:
    """One value of a metric family: ``name`` is the full metric name."""

    name: str
    help: str
    value: float
    labels: Labels = ()


@dataclass(frozen=True)
class FieldSpec:
    """How one field deviates from the naming rule."""

    name: str = ""  # metric name fragment; "" derives it from the field name
    help: str = ""
    label: str = ""  # label of a dict's keys, a list's indices or a list of named items
    convert: Callable[[Any], float] | None = None  # for strings (and anything not a number)
    skip: bool = False  # not a figure: ids, free text, addresses, nested timelines


SKIP = FieldSpec(skip=True)

# (field suffix, metric suffix, factor to the base unit); the first match wins.
UNIT_SUFFIXES: tuple[tuple[str, str, float], ...] = (
    ("_bytes_per_s", "_bytes_per_second", 1.0),
    ("_ms", "_seconds", 1e-3),
    ("_us", "_seconds", 1e-6),
    ("_ns", "_seconds", 1e-9),
    ("_s", "_seconds", 1.0),
)

# RunRecord -> migbed_migration_last_<name>{scenario, policy}
RECORD_FIELDS: dict[str, FieldSpec] = {
    "run_id": SKIP,
    "scenario": SKIP,
    "policy": SKIP,
    "repeat": SKIP,
    "outcome": SKIP,
    "error": SKIP,
    "decision_reason": SKIP,
    "source_address": SKIP,
    "target_address": SKIP,
    "labels": SKIP,
    "device_drivers": SKIP,  # strings: the run's scenario names them
    "timeline": SKIP,
    "events": SKIP,
    "verified": FieldSpec(help="1 if the target's RAM and device state equalled the source's at its stop"),
    "destination_prepare_ms": FieldSpec(
        help="Setup sent to the target accepting it (its RAM resident): before QEMU's clocks"),
    "setup_time_ms": FieldSpec(help="Setup time (QEMU setup-time)"),
    "total_time_ms": FieldSpec(help="Total time (QEMU total-time)"),
    "downtime_ms": FieldSpec(help="QEMU-reported downtime: source stop to completion on the source"),
    "expected_downtime_ms": FieldSpec(help="QEMU's expected downtime at the decision: dirty bytes / bandwidth"),
    "dirty_sync_count": FieldSpec(
        name="iterations", help="Dirty-bitmap syncs (QEMU ram.dirty-sync-count, libvirt 'Iteration')"
    ),
    "precopy_bytes": FieldSpec(help="Bytes sent while the VM ran (QEMU ram.precopy-bytes, all handlers)"),
    "downtime_bytes": FieldSpec(help="Bytes sent while the VM was stopped (QEMU ram.downtime-bytes, all handlers)"),
    "ram_transferred_bytes": FieldSpec(help="RAM bytes sent (QEMU ram.transferred)"),
    "device_transferred_bytes": FieldSpec(help="Device-state bytes sent (QEMU vfio.transferred)"),
    "guest_downtime_ms": FieldSpec(help="Guest-visible downtime: last vCPU tick on the source to first on the target"),
    "guest_downtime_uncertainty_ms": FieldSpec(help="Uncertainty of the guest-visible downtime (clock offset + tick)"),
    "stream_rtt_at_stop_ms": FieldSpec(help="Round trip of a ping in the migration stream right after the stop"),
    "predicted_downtime_ms": FieldSpec(help="The policy's own downtime prediction at the decision"),
    "switchover_ack_wait_ms": FieldSpec(help="Pending first below the threshold to the switchover ACK"),
    "device_initial_load_ms": FieldSpec(
        name="device_initial_load_seconds", label="device", help="Device initial-data load time on the target"
    ),
    "forced_by_cap": FieldSpec(convert=bool, help="1 if max-iterations or max-time forced the switchover"),
    "clock_offset_ns": FieldSpec(help="Target clock minus source clock (estimated)"),
    "same_clock": FieldSpec(help="1 if source and target share one CLOCK_MONOTONIC (one kernel)"),
    "source_guest_running_after": FieldSpec(help="1 if the source guest ran again after a failed or cancelled run"),
    "source_integrity_ok": FieldSpec(help="1 if the source guest's pages passed their self-check after the run"),
    "multifd_channel_bytes": FieldSpec(label="channel", help="Bytes sent on each multifd channel"),
    "multifd_channel_packets": FieldSpec(label="channel", help="Packets sent on each multifd channel"),
    "multifd_channel_device_bytes": FieldSpec(
        label="channel", help="Of the bytes sent on each multifd channel: device state (multifd device state)"
    ),
    "multifd_channels": FieldSpec(help="multifd channels beside the main stream (0: multifd off)"),
    "verification_ms": FieldSpec(help="Completion to the target's Verified (outside total time)"),
    "return_path": FieldSpec(help="1 if the return path was on (forced on by a policy that needs switchover-ack)"),
    # where guest downtime went: these five add up to guest_downtime_ms
    "stop_lag_ms": FieldSpec(help="Guest downtime part: last vCPU tick to the stop (source clock)"),
    "stop_copy_ms": FieldSpec(help="Guest downtime part: the stop to the source writing the last byte"),
    "device_save_ms": FieldSpec(help="Of stop_copy: time the stop-copy was blocked on devices (suspends, saves)"),
    "ram_stop_copy_ms": FieldSpec(help="Of stop_copy: the stop to RAM's last stop-copy byte written"),
    "tracker_report_ms": FieldSpec(
        help="Of stop_copy: the device dirty-page trackers' report at the final sync"),
    "device_stop_copy": FieldSpec(name="device_stop_copy", label="device"),
    "device_resume_ms": FieldSpec(
        help="Of resume: the destination's devices moved to RUNNING at vm_start (driver resume commands)"),
    "delivery_ms": FieldSpec(help="Guest downtime part: last byte written to the target reading it, inline loads"),
    "destination_load_ms": FieldSpec(help="Guest downtime part: target read the last byte to every device loaded"),
    "resume_ms": FieldSpec(help="Guest downtime part: every device loaded to the first vCPU tick on the target"),
}

# The parts of guest downtime, in order (RunRecord fields; they add up to guest_downtime_ms).
DOWNTIME_PARTS: tuple[str, ...] = ("stop_lag_ms", "stop_copy_ms", "delivery_ms", "destination_load_ms", "resume_ms")

# ProgressSample -> migbed_source_<name>{scenario, policy}
SAMPLE_FIELDS: dict[str, FieldSpec] = {
    "t_ms": FieldSpec(name="elapsed_seconds", help="Time since the current migration started (QEMU total-time)"),
    "phase": SKIP,  # one 0/1 gauge per phase (live.py)
    "ram_remaining_bytes": FieldSpec(help="RAM still to send (QEMU ram.remaining)"),
    "ram_transferred_bytes": FieldSpec(help="RAM sent so far in the current migration (ram.transferred)"),
    "device_transferred_bytes": FieldSpec(help="Device state sent so far in the current migration (vfio.transferred)"),
    "dirty_sync_count": FieldSpec(
        name="iterations",
        help="Dirty-bitmap syncs so far in the current migration (QEMU ram.dirty-sync-count, libvirt 'Iteration')",
    ),
    "bandwidth_bytes_per_s": FieldSpec(help="Bandwidth measured over the last 100 ms window (QEMU ram.mbps, in bytes)"),
    "threshold_bytes": FieldSpec(help="Switchover threshold: bandwidth x downtime-limit (threshold_size)"),
    "expected_downtime_ms": FieldSpec(help="QEMU's expected downtime: dirty bytes at the last sync / bandwidth"),
    "dirty_pages_rate": FieldSpec(
        name="dirty_pages_per_second",
        help="Pages newly dirtied per second at the last sync (QEMU ram.dirty-pages-rate)",
    ),
    "pending_bytes": FieldSpec(help="Pending bytes of all handlers (RAM + devices)"),
    "ack_received": FieldSpec(help="1 once the destination's SWITCHOVER_ACK has arrived, else 0"),
    "devices": FieldSpec(name="device", label="device"),
    "multifd_channel_bytes": FieldSpec(label="channel", help="Bytes sent so far on each multifd channel"),
    "multifd_channel_packets": FieldSpec(label="channel", help="Packets sent so far on each multifd channel"),
}

# DeviceSample -> migbed_source_device_<name>{scenario, policy, device}
DEVICE_FIELDS: dict[str, FieldSpec] = {
    "name": SKIP,  # the device label
    "state": FieldSpec(
        name="vfio_state",
        convert=vfio_state_number,
        help="VFIO device state on the source as the uAPI number (vfio_device_mig_state: 0 ERROR, "
        "1 STOP, 2 RUNNING, 3 STOP_COPY, 4 RESUMING, 5 RUNNING_P2P, 6 PRE_COPY, 7 PRE_COPY_P2P; -1 unknown)",
    ),
    "initial_bytes": FieldSpec(help="VFIO precopy initial_bytes still to read (VFIO_MIG_GET_PRECOPY_INFO)"),
    "dirty_bytes": FieldSpec(help="VFIO precopy dirty_bytes (VFIO_MIG_GET_PRECOPY_INFO)"),
    "target_loaded_bytes": FieldSpec(help="Device bytes the target has loaded (return path)"),
    "target_backlog_bytes": FieldSpec(help="Device bytes received by the target, not yet loaded (return path)"),
    "target_initial_loaded": FieldSpec(help="1 once the target has loaded the device's initial data (return path)"),
    "target_busy_s": FieldSpec(help="Time the target has spent inside this device's loads (return path)"),
    "target_loading": FieldSpec(help="1 while the target was loading this device's state (return path)"),
    # a destination cannot know how much setup work is left (it only sees its own busy time):
    # not a figure, whatever the sample still carries
    "target_setup_remaining_s": SKIP,
}

# DeviceStopCopy -> migbed_migration_last_device_stop_copy_<name>{scenario, policy, device}
STOP_COPY_FIELDS: dict[str, FieldSpec] = {
    "name": SKIP,  # the device label
    "save_start_ms": FieldSpec(help="The device's STOP_COPY save began (since the stop, source clock)"),
    "save_ready_ms": FieldSpec(help="The device's final image was readable (since the stop, source clock)"),
    "sent_ms": FieldSpec(help="The device's last stop-copy byte was written (since the stop, source clock)"),
    "save_wait_ms": FieldSpec(help="Time the stop-copy was blocked on this device's save"),
}

NESTED_TABLES: dict[str, dict[str, FieldSpec]] = {"devices": DEVICE_FIELDS,
                                                  "device_stop_copy": STOP_COPY_FIELDS}


@dataclass(frozen=True)
class HistogramSpec:
    """A record field observed into a histogram per (scenario, policy, outcome)."""

    field: str
    name: str  # full metric name
    help: str
    buckets: tuple[float, ...]
    stopped_only: bool  # observed only for runs that stopped the VM
    labels: Labels = ()  # constant labels (the part of guest downtime)


@dataclass(frozen=True)
class CounterSpec:
    """A record field added to a counter per (scenario, policy[, label])."""

    field: str
    name: str  # full metric name without ``_total``
    help: str
    labels: Labels = ()  # constant labels (bytes by stage)
    zero: bool = False  # exists at zero for every (scenario, policy) seen, before its first result


HISTOGRAMS: tuple[HistogramSpec, ...] = (
    HistogramSpec(
        "guest_downtime_ms", "migbed_migration_guest_downtime_seconds",
        "Guest-visible downtime: last vCPU tick on the source to first on the target", DOWNTIME_BUCKETS, True,
    ),
    HistogramSpec(
        "downtime_ms", "migbed_migration_downtime_seconds",
        "QEMU-reported downtime: source stop to completion on the source", DOWNTIME_BUCKETS, True,
    ),
    HistogramSpec(
        "switchover_ack_wait_ms", "migbed_migration_switchover_ack_wait_seconds",
        "Pending first below threshold to the switchover ACK (0 for policies that do not wait)",
        DURATION_BUCKETS, True,
    ),
    HistogramSpec(
        "total_time_ms", "migbed_migration_total_time_seconds", "Total migration time (QEMU total-time)",
        DURATION_BUCKETS, False,
    ),
    HistogramSpec(
        "dirty_sync_count", "migbed_migration_iterations", "Dirty-bitmap syncs per migration",
        ITERATION_BUCKETS, False,
    ),
    *(
        HistogramSpec(
            part, "migbed_migration_guest_downtime_part_seconds",
            "Where guest-visible downtime went, by part (stop_lag, stop_copy, delivery, destination_load, "
            "resume: they add up to the guest-visible downtime)",
            DOWNTIME_BUCKETS, True, (("part", part.removesuffix("_ms")),),
        )
        for part in DOWNTIME_PARTS
    ),
)  # fmt: skip

COUNTERS: tuple[CounterSpec, ...] = (
    CounterSpec(
        "precopy_bytes", "migbed_migration_transferred_bytes",
        "Bytes sent by stage (precopy: VM running, downtime: VM stopped)", (("stage", "precopy"),), zero=True,
    ),
    CounterSpec(
        "downtime_bytes", "migbed_migration_transferred_bytes",
        "Bytes sent by stage (precopy: VM running, downtime: VM stopped)", (("stage", "downtime"),), zero=True,
    ),
    CounterSpec("ram_transferred_bytes", "migbed_migration_ram_transferred_bytes", "RAM bytes sent", zero=True),
    CounterSpec(
        "device_transferred_bytes", "migbed_migration_device_transferred_bytes", "Device-state bytes sent", zero=True
    ),
    CounterSpec("multifd_channel_bytes", "migbed_migration_multifd_channel_bytes", "Bytes sent per multifd channel"),
    CounterSpec(
        "multifd_channel_packets", "migbed_migration_multifd_channel_packets", "Packets sent per multifd channel"
    ),
    CounterSpec(
        "multifd_channel_device_bytes", "migbed_migration_multifd_channel_device_bytes",
        "Device-state bytes sent per multifd channel (of the channel's bytes)",
    ),
)  # fmt: skip

_NAME_OK = re.compile(r"^[a-z_][a-z0-9_]*$")


def metric_fragment(field_name: str) -> tuple[str, float]:
    """The naming rule: field name -> (metric name fragment, factor to the base unit)."""
    for suffix, metric_suffix, factor in UNIT_SUFFIXES:
        if field_name.endswith(suffix):
            return field_name[: -len(suffix)] + metric_suffix, factor
    return field_name, 1.0


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    return None


def figures(
    obj: Any, table: Mapping[str, FieldSpec], prefix: str, labels: Labels = (), what: str = ""
) -> Iterator[Figure]:
    """Every figure of a dataclass instance, named ``prefix + fragment`` (see the module doc)."""
    what = what or type(obj).__name__
    for f in dataclasses.fields(obj):
        spec = table.get(f.name, FieldSpec())
        if spec.skip:
            continue
        fragment, factor = metric_fragment(f.name)
        name = prefix + (spec.name or fragment)
        doc = str(f.metadata.get("help", "")) or spec.help or f"{f.name} ({what}.{f.name})"
        if not _NAME_OK.match(name):
            continue
        yield from _field_figures(getattr(obj, f.name), f.name, spec, name, doc, factor, labels)


def _field_figures(
    value: Any, field_name: str, spec: FieldSpec, name: str, doc: str, factor: float, labels: Labels
) -> Iterator[Figure]:
    if spec.convert is not None:
        yield Figure(name, doc, float(spec.convert(value)), labels)
        return
    number = _number(value)
    if number is not None:
        yield Figure(name, doc, number * factor, labels)
    elif isinstance(value, Mapping):
        key_label = spec.label or ("device" if field_name.startswith("device") else "part")
        for key, v in value.items():
            n = _number(v)
            if n is not None:
                yield Figure(name, doc, n * factor, (*labels, (key_label, str(key))))
    elif isinstance(value, list | tuple):
        yield from _list_figures(value, field_name, spec, name, doc, factor, labels)


def _list_figures(
    value: list[Any] | tuple[Any, ...], field_name: str, spec: FieldSpec, name: str, doc: str, factor: float,
    labels: Labels,
) -> Iterator[Figure]:
    if all(_number(v) is not None for v in value):
        # per-index values: multifd channels (bounded by multifd-channels <= 16)
        index_label = spec.label or ("channel" if "channel" in field_name else "")
        if not index_label:
            return  # an unnamed index is not a bounded, meaningful label
        # the scenario validator bounds multifd-channels to 16: a longer list is a bug
        # elsewhere, and must not make the label unbounded
        for i, v in enumerate(value[:MAX_CHANNELS]):
            yield Figure(name, doc, float(_number(v) or 0.0) * factor, (*labels, (index_label, str(i))))
        return
    nested = NESTED_TABLES.get(field_name, {})
    item_label = spec.label or "device"
    for item in value:
        key = getattr(item, "name", None)
        if dataclasses.is_dataclass(item) and not isinstance(item, type) and isinstance(key, str):
            yield from figures(item, nested, name + "_", (*labels, (item_label, key)))


def record_value(obj: Any, field_name: str) -> list[tuple[Labels, float]]:
    """A field's values in base units, with the labels of a dict key or list index (for
    histograms and counters); empty when the record has no such field."""
    if not hasattr(obj, field_name):
        return []
    out = []
    spec = RECORD_FIELDS.get(field_name, FieldSpec())
    fragment, factor = metric_fragment(field_name)
    for fig in _field_figures(getattr(obj, field_name), field_name, spec, fragment, "", factor, ()):
        if math.isfinite(fig.value):
            out.append((fig.labels, fig.value))
    return out
