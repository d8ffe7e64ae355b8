"""The datacenter file: what the network is, what every host runs, what to drain, under
which limits, and which policies to compare. Parsed and bounded like a scenario file
(migbed/core/bounded.py: size, nesting, digits); every value checked, every error naming the
field, the value and what is allowed.

    name = "rack-4to1"
    [topology]
    racks = 10
    hosts-per-rack = 40
    nic = "25Gbit"            # each host, each direction (a byte rate, "2400MB/s", is goodput)
    nic-in = "25Gbit"         # optional: what a NIC receives, when not `nic` (a lab shaped at the sources)
    oversubscription = 4      # or uplink = "250Gbit": each rack's uplink, each direction
    spine = "0"               # the spine's aggregate capacity; 0 = non-blocking
    slots = 24                # guests a host can hold (0 = no limit)
    [[guests]]                # what every host runs (repeat for a mix)
    scenario = "mlx5-like"    # a built-in name or a scenario file
    per-host = 20
    set = ["device.vf0.load-setup-time=2s"]
    [drain]
    racks = [0]               # or hosts = [0, 1], or share = 0.1, or rolling = true
    [limits]                  # KubeVirt's: parallelOutboundMigrationsPerNode, ...PerCluster
    per-source = 2
    per-cluster = 100
    per-target = 0
    [simulation]
    policies = ["legacy", "switchover-ack"]
    downtime-objective = "1s" # default: each guest's own downtime-limit
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from migbed.core.bounded import MAX_SCENARIO_BYTES, InputError, decode_utf8, loads_toml, read_regular_file
from migbed.core.overrides import MAX_OVERRIDES, OverrideError, dump_toml, split_override
from migbed.core.policy import DEFAULT_POLICIES, policy_names
from migbed.core.scenario import (
    Scenario,
    ScenarioError,
    _bool,
    _choice,
    _int,
    _str,
    _Table,
    resolve_scenario,
)
from migbed.core.units import FRAME_EFFICIENCY, UnitError, parse_bit_rate, parse_byte_rate, parse_duration
from migbed.fleet.planner import ORDERS, Limits

MAX_RACKS = 10_000
MAX_HOSTS_PER_RACK = 1_000
MAX_HOSTS = 100_000
MAX_GUESTS_PER_HOST = 1_000
MAX_GUESTS = 1_000_000  # ~0.5 KB each per policy process at its peak (results, planner): ~0.5 GB
MAX_MIX = 16
MAX_LIMIT = 100_000
DRAIN_MODES = ("racks", "hosts", "share", "rolling")
COURSE_UPDATES = ("retime", "reclass")
SEQUENCES = ("rack-by-rack", "across-racks")
_NO_INTS: tuple[int, ...] = ()
_NO_STRINGS: tuple[str, ...] = ()


class DatacenterError(ScenarioError):
    """A datacenter value that is not allowed; str() names the field, the value and the rule."""


@dataclass(frozen=True)
class Topology:
    racks: int
    hosts_per_rack: int
    nic: float  # bytes/s of goodput, each direction
    uplink: float  # bytes/s of goodput per rack, each direction
    spine: float  # bytes/s of goodput in all; 0 = non-blocking
    slots: int  # guests a host can hold; 0 = no limit
    nic_in: float = 0.0  # bytes/s a NIC receives, when not the same as `nic`

    @property
    def hosts(self) -> int:
        return self.racks * self.hosts_per_rack


@dataclass(frozen=True)
class GuestMix:
    scenario: Scenario
    per_host: int


@dataclass(frozen=True)
class Drain:
    mode: str  # racks | hosts | share | rolling
    racks: tuple[int, ...] = ()
    hosts: tuple[int, ...] = ()
    share: float = 0.0
    max_unavailable: int = 1  # rolling: hosts out of service at once
    maintenance: float = 0.0  # rolling: s a drained host stays out before it takes guests
    sequence: str = "rack-by-rack"  # rolling: the order hosts are taken in
    order: str = "first-come"  # the planner's order of guests


@dataclass(frozen=True)
class DatacenterSpec:
    name: str
    topology: Topology
    mix: tuple[GuestMix, ...]
    drain: Drain
    limits: Limits
    policies: tuple[str, ...]
    downtime_objective: float | None  # s; None: each guest's own downtime-limit
    overhead_before: float  # s per migration outside QEMU's total time (migbed: boot, prepare)
    overhead_after: float  # s per migration after it (migbed: verification)
    bandwidth_step: float  # width of a bandwidth class (relative)
    gantt_guests: int  # guests drawn in the Gantt chart (a sample when there are more)
    # retime: the course chosen at the start, its transfers re-timed as the share moves;
    # reclass: also, when the share moves to another bandwidth class, that class's course
    # from the same share of pre-copy sent (docs/datacenter.md measures both)
    course_update: str = "reclass"
    source_text: str = ""

    @property
    def guests_per_host(self) -> int:
        return sum(m.per_host for m in self.mix)


# ---------------------------------------------------------------- field readers


def _rate(value: Any) -> float:
    """Bytes/s of goodput: a bit rate on the wire ("25Gbit": TCP/IP over Ethernet carries
    1448 of every 1514 bytes) or a byte rate of payload ("2400MB/s", e.g. a measured wire)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value == 0:
        return 0.0
    if not isinstance(value, str):
        raise ValueError("expected a rate such as '25Gbit' or '2400MB/s'")
    if value.strip() == "0":
        return 0.0
    if "bit" in value.lower():
        return parse_bit_rate(value) / 8 * FRAME_EFFICIENCY
    return parse_byte_rate(value)


def _ranged(parse: Callable[[Any], Any], lo: float, hi: float) -> Callable[[Any], Any]:
    def check(v: Any) -> Any:
        x = parse(v)
        if not lo <= x <= hi:
            raise ValueError(f"allowed {lo:g} .. {hi:g}")
        return x
    return check


def _int_list(hi: int) -> Callable[[Any], tuple[int, ...]]:
    def parse(v: Any) -> tuple[int, ...]:
        if not isinstance(v, list) or not v:
            raise ValueError("expected a non-empty list of indices, e.g. [0, 1]")
        if len(v) > MAX_HOSTS:
            raise ValueError(f"at most {MAX_HOSTS} entries")
        out = tuple(_int(x) for x in v)
        bad = [x for x in out if not 0 <= x < hi]
        if bad:
            raise ValueError(f"index {bad[0]} out of range (allowed 0 .. {hi - 1})")
        if len(set(out)) != len(out):
            raise ValueError("indices must be unique")
        return out
    return parse


def _str_list(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        raise ValueError("expected a list of strings")
    if len(v) > 64:
        raise ValueError("at most 64 entries")
    return tuple(v)


# ---------------------------------------------------------------- sections


def _topology(t: _Table) -> Topology:
    racks = t.require("racks", _ranged(_int, 1, MAX_RACKS))
    per_rack = t.require("hosts-per-rack", _ranged(_int, 1, MAX_HOSTS_PER_RACK))
    nic = t.require("nic", _ranged(_rate, 1e5, 1e13))
    nic_in = t.get("nic-in", _ranged(_rate, 1e5, 1e13), nic)
    uplink = t.get("uplink", _ranged(_rate, 0, 1e15), 0.0)
    over = t.get("oversubscription", _ranged(_number, 0, 1000), 0.0)
    spine = t.get("spine", _ranged(_rate, 0, 1e17), 0.0)
    slots = t.get("slots", _ranged(_int, 0, MAX_GUESTS_PER_HOST), 0)
    t.finish()
    if racks * per_rack > MAX_HOSTS:
        raise DatacenterError(f"topology: {racks} racks x {per_rack} hosts = {racks * per_rack} hosts; "
                              f"at most {MAX_HOSTS}")
    if bool(uplink) == bool(over):
        raise DatacenterError("topology: give exactly one of uplink (a rate) and oversubscription "
                              "(hosts x nic / uplink, e.g. 4)")
    if over:
        if over < 1:
            raise DatacenterError(f"topology.oversubscription = {over:g}: at least 1 (1 = non-blocking)")
        uplink = per_rack * nic / over
    return Topology(racks, per_rack, nic, uplink, spine, slots, nic_in)


def _number(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ValueError("expected a number")
    return float(v)


def _mix(raw: Any) -> tuple[GuestMix, ...]:
    if not isinstance(raw, list) or not raw:
        raise DatacenterError("guests: at least one [[guests]] table (scenario, per-host)")
    if len(raw) > MAX_MIX:
        raise DatacenterError(f"guests: {len(raw)} tables; at most {MAX_MIX}")
    mix = []
    for i, entry in enumerate(raw):
        t = _Table(entry, f"guests[{i}]")
        name = t.require("scenario", _str)
        per_host = t.require("per-host", _ranged(_int, 1, MAX_GUESTS_PER_HOST))
        overrides = t.get("set", _str_list, _NO_STRINGS)
        t.finish()
        try:
            scenario = resolve_scenario(name, overrides)
        except ScenarioError as e:
            raise DatacenterError(f"guests[{i}].scenario = {name[:80]!r}: {e}") from None
        mix.append(GuestMix(scenario, per_host))
    return tuple(mix)


def _drain(t: _Table, topo: Topology) -> Drain:
    racks = t.get("racks", _int_list(topo.racks), _NO_INTS)
    hosts = t.get("hosts", _int_list(topo.hosts), _NO_INTS)
    share = t.get("share", _ranged(_number, 0, 1), 0.0)
    rolling = t.get("rolling", _bool, False)
    max_unavailable = t.get("max-unavailable", _ranged(_int, 1, topo.hosts), 1)
    maintenance = t.get("maintenance", _ranged(parse_duration, 0, 7 * 86400), 0.0)
    sequence = t.get("sequence", _choice(*SEQUENCES), "rack-by-rack")
    order = t.get("order", _choice(*ORDERS), "first-come")
    t.finish()
    chosen = [m for m, on in (("racks", racks), ("hosts", hosts), ("share", share), ("rolling", rolling)) if on]
    if len(chosen) != 1:
        raise DatacenterError("drain: give exactly one of racks = [...], hosts = [...], share = 0..1 "
                              f"or rolling = true (got {', '.join(chosen) or 'none'})")
    mode = chosen[0]
    if mode != "rolling" and ("max-unavailable" in t.data or "maintenance" in t.data or "sequence" in t.data):
        raise DatacenterError("drain: max-unavailable, maintenance and sequence belong to rolling = true")
    drained = len(racks) * topo.hosts_per_rack if racks else len(hosts) if hosts else round(share * topo.hosts)
    if mode != "rolling" and not 1 <= drained < topo.hosts:
        raise DatacenterError(f"drain: {drained} of {topo.hosts} hosts drained; at least 1 and at "
                              "least one host left to receive the guests")
    if mode == "rolling" and max_unavailable >= topo.hosts:
        raise DatacenterError(f"drain.max-unavailable = {max_unavailable}: fewer than the "
                              f"{topo.hosts} hosts (some must receive the guests)")
    return Drain(mode, racks, hosts, share, max_unavailable, maintenance, sequence, order)


def _limits(t: _Table) -> Limits:
    per_source = t.get("per-source", _ranged(_int, 1, MAX_LIMIT), 2)
    per_cluster = t.get("per-cluster", _ranged(_int, 1, MAX_LIMIT), 5)
    per_target = t.get("per-target", _ranged(_int, 0, MAX_LIMIT), 0)
    t.finish()
    return Limits(per_source, per_cluster, per_target)


def _policies(v: Any) -> tuple[str, ...]:
    names = _str_list(v)
    known = policy_names()
    bad = [n for n in names if n not in known]
    if bad or not names or len(set(names)) != len(names):
        raise ValueError(f"a non-empty list of distinct policies from {', '.join(known)}")
    return names


def _simulation(t: _Table) -> dict[str, Any]:
    out = {
        "policies": t.get("policies", _policies, tuple(DEFAULT_POLICIES)),
        "downtime_objective": t.get("downtime-objective", _ranged(parse_duration, 0.001, 3600), None),
        "overhead_before": t.get("overhead-before", _ranged(parse_duration, 0, 3600), 0.0),
        "overhead_after": t.get("overhead-after", _ranged(parse_duration, 0, 3600), 0.0),
        "bandwidth_step": t.get("bandwidth-step", _ranged(_number, 0.001, 0.5), 0.02),
        "gantt_guests": t.get("gantt-guests", _ranged(_int, 1, 1000), 120),
        "course_update": t.get("course-update", _choice(*COURSE_UPDATES), "reclass"),
    }
    t.finish()
    return out


# ---------------------------------------------------------------- the file


def parse_datacenter(text: str, where: str = "datacenter") -> DatacenterSpec:
    """Parse and validate a datacenter TOML text. Raises DatacenterError naming the field."""
    try:
        data = loads_toml(text, where)
    except InputError as e:
        raise DatacenterError(str(e)) from None
    try:
        return _from_data(data, text)
    except (UnitError, ScenarioError) as e:
        if isinstance(e, DatacenterError):
            raise
        raise DatacenterError(str(e)) from None


def _from_data(data: dict[str, Any], text: str) -> DatacenterSpec:
    top = _Table(data, "datacenter")
    name = top.get("name", _str, "unnamed")[:64]
    topo = _topology(_Table(top.require("topology", lambda v: v), "topology"))
    mix = _mix(top.require("guests", lambda v: v))
    drain = _drain(_Table(top.require("drain", lambda v: v), "drain"), topo)
    limits = _limits(_Table(top.get("limits", lambda v: v, {}), "limits"))
    sim = _simulation(_Table(top.get("simulation", lambda v: v, {}), "simulation"))
    top.finish()
    per_host = sum(m.per_host for m in mix)
    if per_host > MAX_GUESTS_PER_HOST:
        raise DatacenterError(f"guests: {per_host} per host in all; at most {MAX_GUESTS_PER_HOST}")
    if topo.slots and per_host > topo.slots:
        raise DatacenterError(f"topology.slots = {topo.slots}: fewer than the {per_host} guests each host runs")
    if per_host * topo.hosts > MAX_GUESTS:
        raise DatacenterError(f"guests: {per_host} per host x {topo.hosts} hosts = {per_host * topo.hosts}; "
                              f"at most {MAX_GUESTS}")
    return DatacenterSpec(name, topo, mix, drain, limits, source_text=text, **sim)


def builtin_datacenters() -> list[str]:
    folder = resources.files("migbed").joinpath("datacenters")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def builtin_datacenter_text(name: str) -> str:
    if name not in builtin_datacenters():
        raise DatacenterError(f"datacenter {name[:80]!r}: no such file and no built-in datacenter of that "
                              f"name (built-in: {', '.join(builtin_datacenters())})")
    return resources.files("migbed").joinpath(f"datacenters/{name}.toml").read_text(encoding="utf-8")


def resolve_datacenter(arg: str, overrides: Sequence[str] = ()) -> DatacenterSpec:
    """A datacenter file (a path, or a name ending in .toml) or a built-in name, with
    `--set SECTION.KEY=VALUE` overrides (limits.per-source=5, drain.racks=[0,1])."""
    if arg.endswith(".toml") or os.sep in arg or os.path.lexists(arg):
        try:
            text = decode_utf8(read_regular_file(arg, MAX_SCENARIO_BYTES, "datacenter file"), arg)
        except InputError as e:
            raise DatacenterError(str(e)) from None
    else:
        text = builtin_datacenter_text(arg)
    if overrides:
        text = _with_overrides(text, arg, overrides)
    return parse_datacenter(text, arg)


_OVERRIDABLE = ("topology", "drain", "limits", "simulation")


def _with_overrides(text: str, where: str, overrides: Sequence[str]) -> str:
    """The file's text with each --set applied (validated afterwards like any file)."""
    try:
        data = loads_toml(text, where)
    except InputError as e:
        raise DatacenterError(str(e)) from None
    if len(overrides) > MAX_OVERRIDES:
        raise DatacenterError(f"--set: {len(overrides)} given; at most {MAX_OVERRIDES}")
    for item in overrides:
        try:
            parts, value = split_override(item)
        except OverrideError as e:
            raise DatacenterError(str(e)) from None
        if len(parts) == 1 and parts[0] == "name":
            data["name"] = value
        elif len(parts) == 2 and parts[0] in _OVERRIDABLE:
            table = data.setdefault(parts[0], {})
            if not isinstance(table, dict):
                raise DatacenterError(f"--set {item[:80]!r}: [{parts[0]}] is not a table in the file")
            table[parts[1]] = value
        else:
            raise DatacenterError(f"--set {item[:80]!r}: KEY is name or "
                                  f"{', '.join(s + '.KEY' for s in _OVERRIDABLE)} (e.g. limits.per-source=5)")
    return f"# {where} with --set {' --set '.join(overrides)}\n" + dump_toml(data)
