"""Time dilation: run an experiment K times slower and report it in virtual time.

Network emulation's answer to hardware slower than the experiment (Gupta et al., "To
Infinity and Beyond: Time-Warped Network Emulation", NSDI 2006; DieCast, NSDI 2008): every
emulated duration is stretched by K and every emulated rate divided by K, so the host has K
times as long for each byte; the results, divided back, are those of a host K times faster.
migbed's guest, devices, policies and links are all emulated, so the whole experiment can
be dilated. What cannot be is the host itself: the real kernel, gRPC and Python costs of a
run take the same real time whatever K is, so in virtual time they shrink by K. That is the
point, and it means a dilated run shows a faster host (docs/fidelity.md, "Time dilation").

One table per dataclass says how each field scales (`Rule`); one function applies a table
either way. Into a run: `dilate_scenario` (times x K, rates / K, sizes as they are). Out of
it: `undilate` on the record, its samples and events (times / K, rates x K). Tables are keyed
by class name, so this module needs nothing outside core/; a field without a rule is an
error here and in tests/unit/test_dilation.py, never a silently unscaled figure.

Pure: no I/O, no clocks.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from migbed.core import limits as lim
from migbed.core.policy import Decision, Observation, Policy
from migbed.core.scenario import LinkConfig, Scenario, ScenarioError
from migbed.core.units import format_bytes

T = TypeVar("T")


class Rule(enum.Enum):
    TIME = "time"  # a duration or a point in time: x K into a run, / K out of it
    RATE = "rate"  # something per second: / K into a run, x K out of it
    SAME = "same"  # sizes, counts, names, switches: nothing of time in them
    NESTED = "nested"  # a dataclass, or a list / tuple of them: scaled by its own table


# ---------------------------------------------------------------- the scenario

SCENARIO_RULES: dict[str, dict[str, Rule]] = {
    "Scenario": {
        "name": Rule.SAME, "guest": Rule.NESTED, "devices": Rule.NESTED,
        "migration": Rule.NESTED, "link": Rule.NESTED,
        "source_text": Rule.SAME,  # the virtual text as the user wrote it (it names K)
        "time_dilation": Rule.SAME, "dilated": Rule.SAME,  # set by dilate_scenario itself
    },
    "GuestConfig": {
        "ram_size": Rule.SAME, "page_size": Rule.SAME, "dirty_rate": Rule.RATE,
        "working_set": Rule.SAME, "dirty_pattern": Rule.SAME,
        "vcpu_tick": Rule.TIME,  # the guest's progress tick: the guest runs K times slower
        "seed": Rule.SAME,
    },
    "DeviceConfig": {
        "name": Rule.SAME, "initial_bytes": Rule.SAME, "stop_copy_size": Rule.SAME,
        "dirty_rate": Rule.RATE, "block_size": Rule.SAME, "load_setup_time": Rule.TIME,
        "load_rate": Rule.RATE, "stop_copy_load_time": Rule.TIME, "load_trigger": Rule.SAME,
        "stop_copy_save_time": Rule.TIME, "config_load_time": Rule.TIME,
        "device_state_size": Rule.SAME, "driver": Rule.SAME, "resume_time": Rule.TIME,
        "tracker_report_rate": Rule.RATE,  # RAM bytes the device's tracker reports per second
        "suspend_time": Rule.TIME,
    },
    "MigrationConfig": {
        "downtime_limit": Rule.TIME, "max_bandwidth": Rule.RATE,
        "avail_switchover_bandwidth": Rule.RATE, "max_iterations": Rule.SAME,
        "max_time": Rule.TIME, "cap_action": Rule.SAME, "switchover_ack_timeout": Rule.TIME,
        "ack_timeout_action": Rule.SAME, "warmup": Rule.TIME, "heartbeat_timeout": Rule.TIME,
        "return_path": Rule.SAME, "qemu_version": Rule.SAME, "multifd": Rule.SAME,
        "multifd_channels": Rule.SAME, "device_state_transfer": Rule.SAME,
    },
    "LinkConfig": {
        "rate": Rule.RATE,  # tc tbf shapes the dilated rate
        # Bytes: an explicit bucket holds the same bytes. 0 stays 0 (automatic: the shaper
        # sizes it from the rate it applies, 5 ms of it in real time: the host's timer
        # granularity, which is not emulated and so is not dilated).
        "burst": Rule.SAME,
        "latency": Rule.TIME,  # tbf's queue limit: rate x latency bytes, the same bytes
    },
}

# ---------------------------------------------------------------- the run record

RECORD_RULES: dict[str, dict[str, Rule]] = {
    "RunRecord": {
        "run_id": Rule.SAME, "scenario": Rule.SAME, "policy": Rule.SAME, "repeat": Rule.SAME,
        "outcome": Rule.SAME, "error": Rule.SAME, "verified": Rule.SAME,
        "destination_prepare_ms": Rule.TIME, "setup_time_ms": Rule.TIME,
        "total_time_ms": Rule.TIME, "downtime_ms": Rule.TIME,
        "expected_downtime_ms": Rule.TIME, "dirty_sync_count": Rule.SAME,
        "precopy_bytes": Rule.SAME, "downtime_bytes": Rule.SAME,
        "ram_transferred_bytes": Rule.SAME, "device_transferred_bytes": Rule.SAME,
        "verification_ms": Rule.TIME, "qemu_version": Rule.SAME, "return_path": Rule.SAME,
        "downtime_end": Rule.SAME, "guest_downtime_ms": Rule.TIME,
        "guest_downtime_uncertainty_ms": Rule.TIME, "stop_lag_ms": Rule.TIME,
        "stop_copy_ms": Rule.TIME, "device_save_ms": Rule.TIME, "delivery_ms": Rule.TIME,
        "destination_load_ms": Rule.TIME, "resume_ms": Rule.TIME,
        "ram_stop_copy_ms": Rule.TIME, "tracker_report_ms": Rule.TIME,
        "device_resume_ms": Rule.TIME, "device_stop_copy": Rule.NESTED,
        "device_drivers": Rule.SAME,
        "stream_rtt_at_stop_ms": Rule.TIME, "predicted_downtime_ms": Rule.TIME,
        "switchover_ack_wait_ms": Rule.TIME,
        "device_initial_load_ms": Rule.TIME,  # a dict: each value
        "multifd_channels": Rule.SAME, "multifd_channel_bytes": Rule.SAME,
        "multifd_channel_packets": Rule.SAME, "multifd_channel_device_bytes": Rule.SAME,
        "device_state_transfer": Rule.SAME,
        "decision_reason": Rule.SAME, "decision_basis": Rule.SAME, "forced_by_cap": Rule.SAME,
        # The offset between the two hosts' clocks is a fact of the hosts, not a duration
        # of the experiment: kept in real nanoseconds (the figures computed with it are
        # durations and scale).
        "clock_offset_ns": Rule.SAME, "same_clock": Rule.SAME,
        "source_guest_running_after": Rule.SAME, "source_integrity_ok": Rule.SAME,
        "source_address": Rule.SAME, "target_address": Rule.SAME, "labels": Rule.SAME,
        "timeline": Rule.NESTED, "events": Rule.NESTED,
        "time_dilation": Rule.SAME,  # the factor itself
    },
    "ProgressSample": {
        "t_ms": Rule.TIME, "phase": Rule.SAME, "ram_remaining_bytes": Rule.SAME,
        "ram_transferred_bytes": Rule.SAME, "device_transferred_bytes": Rule.SAME,
        "dirty_sync_count": Rule.SAME, "bandwidth_bytes_per_s": Rule.RATE,
        "threshold_bytes": Rule.SAME,  # bandwidth x downtime-limit: K cancels out
        "expected_downtime_ms": Rule.TIME,
        "dirty_pages_rate": Rule.RATE,  # pages per second
        "pending_bytes": Rule.SAME, "ack_received": Rule.SAME, "devices": Rule.NESTED,
    },
    "DeviceSample": {
        "name": Rule.SAME, "state": Rule.SAME, "initial_bytes": Rule.SAME,
        "dirty_bytes": Rule.SAME, "target_loaded_bytes": Rule.SAME,
        "target_backlog_bytes": Rule.SAME, "target_initial_loaded": Rule.SAME,
        "target_busy_s": Rule.TIME, "target_loading": Rule.SAME,
    },
    "Event": {"t_ms": Rule.TIME, "name": Rule.SAME, "detail": Rule.SAME},
    "DeviceStopCopy": {
        "name": Rule.SAME, "save_start_ms": Rule.TIME, "save_ready_ms": Rule.TIME,
        "sent_ms": Rule.TIME, "save_wait_ms": Rule.TIME,
    },
}


# ---------------------------------------------------------------- the policy's view

# The policy decides in virtual time: it sees what QEMU would see on the K-times-faster
# host, so its reasons ("predicted downtime 180 ms fits 300 ms") are virtual like the record.
# Its decisions are the same either way: each compares two times, or two sizes.
POLICY_RULES: dict[str, dict[str, Rule]] = {
    "Observation": {
        "elapsed_s": Rule.TIME, "pending_bytes": Rule.SAME, "pending_exact": Rule.SAME,
        "threshold_bytes": Rule.SAME, "bandwidth": Rule.RATE, "downtime_limit_s": Rule.TIME,
        "dirty_sync_count": Rule.SAME, "ack_received": Rule.SAME, "ack_wait_s": Rule.TIME,
        "rtt_s": Rule.TIME, "devices": Rule.NESTED, "parallel_device_state": Rule.SAME,
        "threshold_inclusive": Rule.SAME,
    },
    "DeviceView": {
        "name": Rule.SAME, "initial_bytes_left": Rule.SAME, "dirty_bytes": Rule.SAME,
        "stop_copy_bytes": Rule.SAME, "target": Rule.NESTED, "driver": Rule.SAME,
        "initial_image_bytes": Rule.SAME,
    },
    "TargetLoad": {
        "loaded_bytes": Rule.SAME, "backlog_bytes": Rule.SAME, "busy_s": Rule.TIME,
        "measured_load_rate": Rule.RATE, "loading": Rule.SAME, "initial_loaded": Rule.SAME,
        "initial_load_s": Rule.TIME,
    },
    "Decision": {"action": Rule.SAME, "reason": Rule.SAME, "predicted_downtime_s": Rule.TIME,
                 "basis": Rule.SAME},
}
# What leaves a run (undilate) or is compared with it (dilate): the record and the policy's view.
OUT_RULES: dict[str, dict[str, Rule]] = {**RECORD_RULES, **POLICY_RULES}


class DilationError(ValueError):
    """A field without a rule, or a factor out of range."""


def check_factor(k: float, where: str = "time-dilation") -> float:
    lo, hi = lim.TIME_DILATION
    if isinstance(k, bool) or not isinstance(k, int | float) or not math.isfinite(k) or not lo <= k <= hi:
        raise DilationError(f"{where} = {k!r}: a number from {lo:g} to {hi:g}")
    return float(k)


# ---------------------------------------------------------------- applying a table


def scaled(obj: T, tables: Mapping[str, Mapping[str, Rule]], time_factor: float) -> T:
    """A copy of the dataclass `obj` with every TIME field x time_factor and every RATE
    field / time_factor, by `tables` (nested dataclasses by their own). Never mutates."""
    name = type(obj).__name__
    table = tables.get(name)
    if table is None:
        raise DilationError(f"no dilation rules for {name}")
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        rule = table.get(f.name)
        if rule is None:
            raise DilationError(f"{name}.{f.name} has no dilation rule (migbed/core/dilation.py)")
        if rule is not Rule.SAME:
            changes[f.name] = _apply(getattr(obj, f.name), rule, tables, time_factor)
    return dataclasses.replace(obj, **changes)  # type: ignore[type-var]


def _apply(value: Any, rule: Rule, tables: Mapping[str, Mapping[str, Rule]], factor: float) -> Any:
    if rule is Rule.NESTED:
        if isinstance(value, list | tuple):
            return type(value)(scaled(v, tables, factor) for v in value)
        return scaled(value, tables, factor)
    by = factor if rule is Rule.TIME else 1.0 / factor
    if isinstance(value, dict):
        return {k: _number(v, by) for k, v in value.items()}
    return _number(value, by)


def _number(value: Any, by: float) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DilationError(f"a timed field holds {type(value).__name__}, not a number")
    return round(value * by) if isinstance(value, int) else value * by


# ---------------------------------------------------------------- the two directions


def dilate_scenario(sc: Scenario) -> Scenario:
    """What the engine runs: the scenario K = sc.time_dilation times slower."""
    if sc.dilated:
        raise ScenarioError(f"scenario {sc.name}: already dilated (time-dilation = {sc.time_dilation:g})")
    k = check_factor(sc.time_dilation)
    return dataclasses.replace(scaled(sc, SCENARIO_RULES, k), dilated=True)


def undilate_scenario(sc: Scenario) -> Scenario:
    """The virtual scenario back from a dilated one (the inverse of dilate_scenario)."""
    if not sc.dilated:
        raise ScenarioError(f"scenario {sc.name}: not dilated")
    return dataclasses.replace(scaled(sc, SCENARIO_RULES, 1.0 / sc.time_dilation), dilated=False)


def undilate(obj: T, k: float) -> T:
    """A run record, progress sample, event or policy observation of a run dilated by k,
    in virtual time (times / k, rates x k); a copy."""
    return scaled(obj, OUT_RULES, 1.0 / check_factor(k))


def dilate(obj: T, k: float) -> T:
    """The inverse of undilate (virtual -> the run's real time)."""
    return scaled(obj, OUT_RULES, check_factor(k))


class VirtualTimePolicy(Policy):
    """`inner` deciding on the virtual view of a run dilated by k: it gets the observation
    undilated, and its decision's predicted downtime goes back into the run's time."""

    def __init__(self, inner: Policy, k: float) -> None:
        self.inner = inner
        self.k = check_factor(k)
        self.name = inner.name
        self.needs_ack = inner.needs_ack

    def decide(self, obs: Observation) -> Decision:
        return dilate(self.inner.decide(undilate(obs, self.k)), self.k)


def in_virtual_time(policy: Policy, k: float) -> Policy:
    return policy if k == 1.0 else VirtualTimePolicy(policy, k)


def real_seconds(virtual_s: float, k: float) -> float:
    """An emulated constant (QEMU's 100 ms bandwidth window, its 50 ms MAX_WAIT, the
    return path's report period...) as the engine of a run dilated by k waits it."""
    return virtual_s * k


# ---------------------------------------------------------------- where it meets the host


def shaped_link(sc: Scenario) -> LinkConfig:
    """The link as tc must shape it for this scenario: the dilated rate when it is dilated."""
    if sc.dilated or sc.time_dilation == 1.0:
        return sc.link
    return dilate_scenario(sc).link


# The dilated rate may use at most this share of what the host moves (issue 24): the other
# half is headroom for the host's own variation (other processes, the final copy's burst).
AUTO_HEADROOM = 0.5


@dataclass(frozen=True)
class AutoDilation:
    """What `--time-dilation auto` chose, and why (printed by the run, kept in its labels)."""

    factor: float
    reason: str


def transport_name(sc: Scenario) -> str:
    """The transport whose rate `auto` compares with: the main stream or multifd x N."""
    m = sc.migration
    return f"multifd-{m.multifd_channels}" if m.multifd else "main"


def needed_rate(sc: Scenario) -> tuple[float, str]:
    """(bytes/s, what sets it) the scenario asks the host to move, in virtual time. With a
    shaped link, its rate: the final copy runs unthrottled at it, and pre-copy at most at it
    (a max-bandwidth below the link then fits too; one above never binds). Without a link,
    max-bandwidth: pre-copy's rate (an unshaped final copy is the host's speed, dilated or not)."""
    m, link = sc.migration, sc.link
    if link.rate:
        return link.rate / 8, f"the link's {link.rate / 1e9:g} Gbit/s ({format_bytes(link.rate / 8)}/s)"
    return m.max_bandwidth, f"max-bandwidth {format_bytes(m.max_bandwidth)}/s"


def auto_factor(sc: Scenario, host_rate: float) -> AutoDilation:
    """The smallest whole K at which the dilated scenario fits this host: its rate / K at
    most AUTO_HEADROOM of `host_rate`, what this host measured for the scenario's transport
    (bytes/s). Raises DilationError when even the largest K does not fit."""
    if not host_rate > 0:
        raise DilationError(f"time-dilation auto: the host's measured rate is {host_rate!r}")
    need, what = needed_rate(sc)
    k = max(1, math.ceil(need / (AUTO_HEADROOM * host_rate) * (1 - 1e-9)))
    hi = lim.TIME_DILATION[1]
    host = f"this host's {format_bytes(host_rate)}/s on the {transport_name(sc).replace('-', ' x')} stream"
    if k > hi:
        raise DilationError(
            f"time-dilation auto: {what} would need K = {k}, more than {hi:g}, with {host}; "
            "give a lower max-bandwidth or link rate, or --time-dilation K")
    fits = f"{what} / {k} = {format_bytes(need / k)}/s is at most {AUTO_HEADROOM:g} of {host}"
    return AutoDilation(float(k), f"K = {k}: {fits}" + (
        f"; K = {k - 1} would need {format_bytes(need / (k - 1))}/s" if k > 1 else ""))
