"""Evacuation planning: which guest migrates next, to which target host, within the limits.

Operators drain a host under limits such as KubeVirt's `parallelOutboundMigrationsPerNode`
(default 2) and `parallelMigrationsPerCluster` (default 5). The plan is a small state
machine, pure and unit-tested: the runner tells it what ended, it answers what may start
now and where. Order is a policy of its own (first-come, smallest-first, largest-first):
with slow-loading devices and switchover-ack, the order changes how long the host takes
to drain while each guest's downtime stays the same.
"""

from __future__ import annotations

import heapq
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from migbed.core.scenario import parse_scenario

ORDERS = ("first-come", "smallest-first", "largest-first")
# KubeVirt's defaults: parallelOutboundMigrationsPerNode, parallelMigrationsPerCluster.
DEFAULT_PER_SOURCE = 2
DEFAULT_PER_CLUSTER = 5
MAX_GUESTS = 256


class PlanError(ValueError):
    """A plan that cannot be made: names the field and what is allowed."""


@dataclass(frozen=True)
class FleetGuest:
    """One guest to evacuate: where it runs and how much state it carries."""

    name: str
    source_host: str
    scenario: str
    ram_bytes: int
    device_bytes: int = 0

    @property
    def state_bytes(self) -> int:
        return self.ram_bytes + self.device_bytes


@dataclass(frozen=True)
class Limits:
    per_source: int = DEFAULT_PER_SOURCE  # migrations in flight out of one source host
    per_cluster: int = DEFAULT_PER_CLUSTER  # migrations in flight in the whole lab
    per_target: int = 0  # migrations in flight into one target host; 0 = no limit

    def check(self, most: int = MAX_GUESTS) -> None:
        for name, value, low in (("per-source", self.per_source, 1),
                                 ("per-cluster", self.per_cluster, 1),
                                 ("per-target", self.per_target, 0)):
            if not low <= value <= most:
                raise PlanError(f"limits.{name} = {value}: allowed {low} .. {most}")


@dataclass(frozen=True)
class Placement:
    guest: FleetGuest
    target_host: str


def order_guests(guests: Sequence[FleetGuest], order: str) -> list[FleetGuest]:
    """The queue in the order the plan starts guests (stable: ties keep the given order)."""
    if order == "first-come":
        return list(guests)
    if order == "smallest-first":
        return sorted(guests, key=lambda g: g.state_bytes)
    if order == "largest-first":
        return sorted(guests, key=lambda g: -g.state_bytes)
    raise PlanError(f"order = {order!r}: allowed {', '.join(ORDERS)}")


def _check_guests(guests: Sequence[FleetGuest], most: int) -> None:
    if not guests:
        raise PlanError("guests: at least one guest to evacuate")
    if len(guests) > most:
        raise PlanError(f"guests: {len(guests)}; at most {most}")
    counts = Counter(g.name for g in guests)
    dup = sorted(name for name, n in counts.items() if n > 1)
    if dup:
        raise PlanError(f"guests: names must be unique ({', '.join(dup[:5])} repeated)")


class EvacuationPlan:
    """Which guests may start now, and on which target, given what is in flight.

    Scales to datacenter plans (migbed simulate: hundreds of thousands of guests, thousands
    of targets): each source host keeps its queue, a heap holds the sources that may start
    their next guest (keyed by that guest's place in the order), another the targets by
    (in flight, placed). `capacity` bounds the guests a target may receive (free slots);
    targets may join, leave and come back (a rolling maintenance wave), guests may be added
    while the plan runs (a host whose drain begins)."""

    def __init__(self, guests: Sequence[FleetGuest], targets: Sequence[str],
                 limits: Limits = Limits(), order: str = "first-come",
                 capacity: Mapping[str, int] | None = None, max_guests: int = MAX_GUESTS) -> None:
        _check_guests(guests, max_guests)
        if not targets:
            raise PlanError("targets: at least one target host")
        if len(set(targets)) != len(targets):
            raise PlanError("targets: host names must be unique")
        limits.check(max_guests)
        self.limits = limits
        self.order = order
        self.max_guests = max_guests
        self.targets: list[str] = []
        self.in_flight: dict[str, Placement] = {}
        self.outcomes: dict[str, str] = {}  # guest name -> completed | failed | cancelled | not-started
        self.lost_targets: set[str] = set()
        self.retired_targets: set[str] = set()  # left the plan on purpose (drained themselves)
        self._out: Counter[str] = Counter()  # source host -> in flight
        self._in: Counter[str] = Counter()  # target host -> in flight
        self._placed: Counter[str] = Counter()  # target host -> guests placed so far
        self._free: dict[str, int] = {}  # target host -> guest slots left (absent: no limit)
        self._index: dict[str, int] = {}  # target host -> its place in the target list
        self._targets_heap: list[tuple[int, int, int, str]] = []  # (in flight, placed, index, host)
        self._queues: dict[str, deque[tuple[int, FleetGuest]]] = {}  # source host -> its queue
        self._ready_heap: list[tuple[int, str]] = []  # (seq of the source's next guest, source)
        self._seq = 0
        self._queued = 0
        self._names: set[str] = set()
        self.add_guests(guests)
        for host in targets:
            self.add_target(host, (capacity or {}).get(host))

    # ------------------------------------------------------------ the plan's content

    def add_guests(self, guests: Sequence[FleetGuest]) -> None:
        """Queue more guests (in the plan's order among themselves) behind those queued."""
        if len(self._names) + len(guests) > self.max_guests:
            raise PlanError(f"guests: {len(self._names) + len(guests)}; at most {self.max_guests}")
        for guest in order_guests(guests, self.order):
            if guest.name in self._names:
                raise PlanError(f"guests: names must be unique ({guest.name} repeated)")
            self._names.add(guest.name)
            q = self._queues.setdefault(guest.source_host, deque())
            q.append((self._seq, guest))
            if len(q) == 1:
                self._source_may_start(guest.source_host)
            self._seq += 1
            self._queued += 1

    def add_target(self, host: str, capacity: int | None = None) -> None:
        """A target host joins (or comes back) with `capacity` free guest slots (None: no limit)."""
        if capacity is not None and capacity < 0:
            raise PlanError(f"target {host!r}: capacity {capacity}; at least 0")
        if host not in self._index:
            self._index[host] = len(self.targets)
            self.targets.append(host)
        self.retired_targets.discard(host)
        self.lost_targets.discard(host)
        if capacity is None:
            self._free.pop(host, None)
        else:
            self._free[host] = capacity
        self._push_target(host)

    def retire_target(self, host: str) -> None:
        """Place nothing more on `host` (its own drain begins); migrations into it go on."""
        if host not in self._index:
            raise PlanError(f"target {host!r} is not in this plan")
        self.retired_targets.add(host)

    @property
    def queue(self) -> list[FleetGuest]:
        """The guests not started yet, in the order the plan would start them."""
        return [g for _, g in sorted(item for q in self._queues.values() for item in q)]

    @property
    def queued(self) -> int:
        return self._queued

    @property
    def done(self) -> bool:
        return not self._queued and not self.in_flight

    # ------------------------------------------------------------ what starts, what ends

    def ready(self) -> list[Placement]:
        """Take every queued guest that may start now (limits permitting) and place it.

        A guest whose source host is at its limit is skipped, not blocking the guests of
        other source hosts behind it (KubeVirt's per-node limit works the same way): the
        next guest started is always the earliest queued one whose source has room."""
        started: list[Placement] = []
        heap = self._ready_heap
        while heap and len(self.in_flight) < self.limits.per_cluster:
            seq, source = heap[0]
            q = self._queues.get(source)
            if not q or q[0][0] != seq or self._out[source] >= self.limits.per_source:
                heapq.heappop(heap)  # stale: started, or the source is full (pushed again when not)
                continue
            target = self._pick_target()
            if target is None:
                break
            heapq.heappop(heap)
            _, guest = q.popleft()
            self._queued -= 1
            started.append(self._start(guest, target))
            self._source_may_start(source)
        return started

    def _start(self, guest: FleetGuest, target: str) -> Placement:
        placement = Placement(guest, target)
        self.in_flight[guest.name] = placement
        self._out[guest.source_host] += 1
        self._in[target] += 1
        self._placed[target] += 1
        if target in self._free:
            self._free[target] -= 1
        self._push_target(target)
        return placement

    def _source_may_start(self, source: str) -> None:
        q = self._queues.get(source)
        if q and self._out[source] < self.limits.per_source:
            heapq.heappush(self._ready_heap, (q[0][0], source))

    def _usable(self, host: str) -> bool:
        return (host not in self.lost_targets and host not in self.retired_targets
                and self._free.get(host, 1) > 0
                and (not self.limits.per_target or self._in[host] < self.limits.per_target))

    def _push_target(self, host: str) -> None:
        heapq.heappush(self._targets_heap, (self._in[host], self._placed[host], self._index[host], host))

    def _pick_target(self) -> str | None:
        """The usable target with the fewest migrations in flight, then the fewest placed."""
        heap = self._targets_heap
        while heap:
            n_in, placed, _, host = heap[0]
            if n_in != self._in[host] or placed != self._placed[host] or not self._usable(host):
                heapq.heappop(heap)  # stale, or unusable until a migration into it ends
                continue
            return host
        return None

    def finished(self, guest_name: str, outcome: str) -> Placement:
        """A migration ended (any outcome): free its slots (and, unless it completed, the
        target's guest slot it had taken)."""
        placement = self.in_flight.pop(guest_name, None)
        if placement is None:
            raise PlanError(f"guest {guest_name!r} is not in flight")
        source, target = placement.guest.source_host, placement.target_host
        self._out[source] -= 1
        self._in[target] -= 1
        if outcome != "completed" and target in self._free:
            self._free[target] += 1
        self.outcomes[guest_name] = outcome
        self._push_target(target)
        self._source_may_start(source)
        return placement

    def target_lost(self, host: str, stop_plan: bool = False) -> list[str]:
        """A target host is gone: nothing more is placed on it. With `stop_plan` the guests
        not yet started stay where they are (outcome not-started). Returns those guests."""
        if host not in self._index:
            raise PlanError(f"target {host!r} is not in this plan ({', '.join(self.targets)})")
        self.lost_targets.add(host)
        if not stop_plan and len(self.lost_targets) < len(self.targets):
            return []
        left = [g.name for g in self.queue]
        for name in left:
            self.outcomes[name] = "not-started"
        self._queues.clear()
        self._ready_heap.clear()
        self._queued = 0
        return left


@dataclass(frozen=True)
class Interval:
    key: str  # e.g. the source host
    start: float
    end: float


def max_in_flight(intervals: Iterable[Interval]) -> tuple[int, dict[str, int]]:
    """The most intervals open at once, overall and per key: the checker of the limits,
    from the run records' own timestamps. An interval ending when another starts does not
    overlap it (the runner starts the next one after the previous one ended)."""
    points: list[tuple[float, int, str]] = []
    for iv in intervals:
        points.append((iv.start, 1, iv.key))
        points.append((iv.end, -1, iv.key))
    points.sort(key=lambda p: (p[0], p[1]))  # ends before starts at the same instant
    total = best = 0
    per: Counter[str] = Counter()
    best_per: dict[str, int] = {}
    for _, step, key in points:
        total += step
        per[key] += step
        best = max(best, total)
        best_per[key] = max(best_per.get(key, 0), per[key])
    return best, best_per


def spread_guests(name: str, toml: str, count: int, source_hosts: Sequence[str]) -> list[FleetGuest]:
    """`count` guests of one scenario, dealt over the source hosts in turn (guest-0 on the
    first, guest-1 on the second, ...): each source host holds count/len(sources) of them."""
    if not source_hosts:
        raise PlanError("sources: at least one source host")
    sc = parse_scenario(toml, name)
    device = sum(d.initial_bytes + d.stop_copy_size + d.device_state_size for d in sc.devices)
    return [FleetGuest(f"guest-{i}", source_hosts[i % len(source_hosts)], name, sc.guest.ram_size, device)
            for i in range(count)]
