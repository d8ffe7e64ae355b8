"""Evacuation planning: which guest migrates next, to which target host, within the limits.

Operators drain a host under limits such as KubeVirt's `parallelOutboundMigrationsPerNode`
(default 2) and `parallelMigrationsPerCluster` (default 5). The plan is a small state
machine, pure and unit-tested: the runner tells it what ended, it answers what may start
now and where. Order is a policy of its own (first-come, smallest-first, largest-first):
with slow-loading devices and switchover-ack, the order changes how long the host takes
to drain while each guest's downtime stays the same.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
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

    def check(self) -> None:
        for name, value, low in (("per-source", self.per_source, 1),
                                 ("per-cluster", self.per_cluster, 1),
                                 ("per-target", self.per_target, 0)):
            if not low <= value <= MAX_GUESTS:
                raise PlanError(f"limits.{name} = {value}: allowed {low} .. {MAX_GUESTS}")


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


def _check_guests(guests: Sequence[FleetGuest]) -> None:
    if not guests:
        raise PlanError("guests: at least one guest to evacuate")
    if len(guests) > MAX_GUESTS:
        raise PlanError(f"guests: {len(guests)}; at most {MAX_GUESTS}")
    names = [g.name for g in guests]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise PlanError(f"guests: names must be unique ({', '.join(dup[:5])} repeated)")


class EvacuationPlan:
    """Which guests may start now, and on which target, given what is in flight."""

    def __init__(self, guests: Sequence[FleetGuest], targets: Sequence[str],
                 limits: Limits = Limits(), order: str = "first-come") -> None:
        _check_guests(guests)
        if not targets:
            raise PlanError("targets: at least one target host")
        if len(set(targets)) != len(targets):
            raise PlanError("targets: host names must be unique")
        limits.check()
        self.limits = limits
        self.targets = list(targets)
        self.queue = order_guests(guests, order)
        self.in_flight: dict[str, Placement] = {}
        self.outcomes: dict[str, str] = {}  # guest name -> completed | failed | cancelled | not-started
        self.lost_targets: set[str] = set()
        self._out: Counter[str] = Counter()  # source host -> in flight
        self._in: Counter[str] = Counter()  # target host -> in flight
        self._placed: Counter[str] = Counter()  # target host -> guests placed so far

    @property
    def done(self) -> bool:
        return not self.queue and not self.in_flight

    def ready(self) -> list[Placement]:
        """Take every queued guest that may start now (limits permitting) and place it.

        A guest whose source host is at its limit is skipped, not blocking the guests of
        other source hosts behind it (KubeVirt's per-node limit works the same way)."""
        started: list[Placement] = []
        for guest in list(self.queue):
            if len(self.in_flight) >= self.limits.per_cluster:
                break
            if self._out[guest.source_host] >= self.limits.per_source:
                continue
            target = self._pick_target()
            if target is None:
                break
            self.queue.remove(guest)
            placement = Placement(guest, target)
            self.in_flight[guest.name] = placement
            self._out[guest.source_host] += 1
            self._in[target] += 1
            self._placed[target] += 1
            started.append(placement)
        return started

    def _pick_target(self) -> str | None:
        """The live target with the fewest migrations in flight, then the fewest placed."""
        live = [t for t in self.targets if t not in self.lost_targets
                and (not self.limits.per_target or self._in[t] < self.limits.per_target)]
        if not live:
            return None
        return min(live, key=lambda t: (self._in[t], self._placed[t], self.targets.index(t)))

    def finished(self, guest_name: str, outcome: str) -> Placement:
        """A migration ended (any outcome): free its slots."""
        placement = self.in_flight.pop(guest_name, None)
        if placement is None:
            raise PlanError(f"guest {guest_name!r} is not in flight")
        self._out[placement.guest.source_host] -= 1
        self._in[placement.target_host] -= 1
        self.outcomes[guest_name] = outcome
        return placement

    def target_lost(self, host: str, stop_plan: bool = False) -> list[str]:
        """A target host is gone: nothing more is placed on it. With `stop_plan` the guests
        not yet started stay where they are (outcome not-started). Returns those guests."""
        if host not in self.targets:
            raise PlanError(f"target {host!r} is not in this plan ({', '.join(self.targets)})")
        self.lost_targets.add(host)
        if not stop_plan and len(self.lost_targets) < len(self.targets):
            return []
        left = [g.name for g in self.queue]
        for name in left:
            self.outcomes[name] = "not-started"
        self.queue.clear()
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
