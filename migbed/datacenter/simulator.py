"""The datacenter's maintenance as a discrete-event simulation (SimPy).

Every migration is a SimPy process walking its course (course.py): transfers through the
network, fixed times as timeouts. The network (`Transfers`) keeps each transfer's bytes left
and its max-min fair rate (sharing.py), re-solved at every start and end (all changes of
one instant solved together), and wakes the transfers that end; one timer, armed for the
earliest end, stands for all of them. The planner (migbed/fleet/planner.py, the one
`migbed evacuate` uses) decides what starts when and where; for a rolling wave hosts leave
the targets when their drain begins and come back after their maintenance.

Times are seconds of simulated time from the start of the drain.
"""

from __future__ import annotations

import heapq
import math
from array import array
from collections import deque
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import simpy

from migbed.datacenter.course import Course, CourseCache
from migbed.datacenter.sharing import FairShare
from migbed.datacenter.spec import DatacenterSpec
from migbed.datacenter.topology import Network, drained_hosts
from migbed.fleet.planner import EvacuationPlan, FleetGuest, Placement

_DUE = 1e-9  # a transfer this close to its end (relative to the clock) has ended
OUTCOMES = ("completed", "cancelled", "no-convergence")
MAX_SAMPLES = 4096  # points of each time series kept (decimated as the run goes on)


# (bandwidth, bytes left or inf before the first call) -> bytes left to send
Sizer = Callable[[float, float], float]


class _Transfer:
    __slots__ = ("done", "left", "rate", "resize", "since", "size", "version")

    def __init__(self, left: float, done: simpy.Event, since: float, size: Sizer | None, resize: bool) -> None:
        self.left = left
        self.rate = 0.0
        self.since = since
        self.version = 0
        self.done = done
        self.size = size  # bytes to send, decided once the transfer's bandwidth is known
        self.resize = resize  # and decided again whenever its rate changes


class Transfers:
    """Bytes through shared links: each transfer ends when its bytes are through at the
    rates the max-min sharing gives it, re-solved at every start and end."""

    def __init__(self, env: simpy.Environment, capacities: list[float],
                 on_solve: Callable[[float], None] | None = None) -> None:
        self.env = env
        self.share = FairShare(capacities)
        self.live: dict[int, _Transfer] = {}
        self.total_rate = 0.0  # bytes/s through the network now
        self.solves = 0
        self._heap: list[tuple[float, int, int]] = []  # (end time, version, transfer id)
        self._timer_at = math.inf
        self._pending = False
        self._new: list[int] = []  # transfers started since the last solve
        # transfer id -> (time, rate) at each change of its rate, for the transfers traced
        self.history: dict[int, list[tuple[float, float]]] = {}
        self._on_solve = on_solve

    def start(self, ident: int, links: tuple[int, ...], nbytes: float, limit: float = math.inf,
              size: Sizer | None = None, resize: bool = False) -> simpy.Event:
        """An event that fires when `nbytes` have gone through `links` (rate at most `limit`).
        With `size`, the bytes are size(bandwidth, inf), asked once the transfer's share is
        solved (every start of the same instant included), and with `resize` asked again,
        size(bandwidth, bytes left), at every change of its rate. `bandwidth` is the rate it
        gets, or when its own limit binds, that rate plus what its path has left (the wire
        it could use)."""
        done = self.env.event()
        if nbytes <= 0 and size is None:
            done.succeed()
            return done
        self.live[ident] = _Transfer(math.inf if size else nbytes, done, self.env.now, size, resize)
        self.share.add(ident, links, limit)
        self._new.append(ident)
        self._changed()
        return done

    def _bandwidth(self, ident: int) -> float:
        s = self.share
        rate = s.rate[ident]
        if rate < s.limit[ident] * (1 - 1e-9):
            return rate
        return rate + min(s.capacity[link] - s.load[link] for link in s.links[ident])

    def _changed(self) -> None:
        if not self._pending:
            self._pending = True
            self.env.timeout(0).callbacks.append(self._solve)

    def _solve(self, _: Any) -> None:
        self._pending = False
        now = self.env.now
        self.solves += 1
        changed = self.share.solve()
        for ident in self._new:
            t = self.live[ident]
            if t.size is not None:
                t.left = t.size(self._bandwidth(ident), math.inf)
                if not t.resize:
                    t.size = None
                changed.setdefault(ident, self.share.rate[ident])
                t.rate = -1.0  # forces the (re)push below even when the rate is unchanged
        self._new.clear()
        for ident, rate in changed.items():
            t = self.live[ident]
            if t.rate < 0:
                t.rate = 0.0
            t.left -= t.rate * (now - t.since)
            t.since = now
            if t.size is not None and t.rate > 0:  # resized (a new one has rate 0 here)
                t.left = t.size(self._bandwidth(ident), t.left)
            self.total_rate += rate - t.rate
            t.rate = rate
            t.version += 1
            if ident in self.history:
                self.history[ident].append((now, rate))
            if rate > 0:
                heapq.heappush(self._heap, (now + t.left / rate, t.version, ident))
        self._arm()
        if self._on_solve is not None:
            self._on_solve(now)

    def _arm(self) -> None:
        heap = self._heap
        while heap:
            end, version, ident = heap[0]
            t = self.live.get(ident)
            if t is None or t.version != version:
                heapq.heappop(heap)
                continue
            if end < self._timer_at:
                self._timer_at = end
                self.env.timeout(max(0.0, end - self.env.now)).callbacks.append(self._wake)
            return

    def _wake(self, _: Any) -> None:
        now = self.env.now
        self._timer_at = math.inf
        heap = self._heap
        ended = False
        while heap:
            end, version, ident = heap[0]
            t = self.live.get(ident)
            if t is None or t.version != version:
                heapq.heappop(heap)
                continue
            if end > now + _DUE * max(1.0, now):
                break
            heapq.heappop(heap)
            del self.live[ident]
            self.history.pop(ident, None)
            self.share.remove(ident)
            self.total_rate -= t.rate
            t.done.succeed()
            ended = True
        if ended:
            self._changed()
        else:
            self._arm()


@dataclass
class PolicyResult:
    """One policy's drain: per migration (arrays, in the order they ended) and the run."""

    policy: str
    drain_time_s: float = 0.0
    wave_time_s: float = 0.0
    migrations: int = 0
    not_started: int = 0
    model_runs: int = 0
    bandwidth_classes: int = 0
    solves: int = 0
    guest: list[str] = field(default_factory=list)  # only for the sampled Gantt guests
    kind: array[int] = field(default_factory=lambda: array("i"))
    source: array[int] = field(default_factory=lambda: array("i"))
    target: array[int] = field(default_factory=lambda: array("i"))
    outcome: array[int] = field(default_factory=lambda: array("b"))  # index in OUTCOMES
    queued_at: array[float] = field(default_factory=lambda: array("d"))  # its host's drain began
    start: array[float] = field(default_factory=lambda: array("d"))  # the plan started it
    stop: array[float] = field(default_factory=lambda: array("d"))  # vm_stop (NaN: none)
    end: array[float] = field(default_factory=lambda: array("d"))
    downtime: array[float] = field(default_factory=lambda: array("d"))  # QEMU's
    guest_downtime: array[float] = field(default_factory=lambda: array("d"))
    total_time: array[float] = field(default_factory=lambda: array("d"))  # QEMU's total-time
    bandwidth: array[float] = field(default_factory=lambda: array("d"))  # its class at the start
    objective: array[float] = field(default_factory=lambda: array("d"))  # its downtime objective
    series: dict[str, array[float]] = field(default_factory=dict)


@dataclass
class Trace:
    """One migration followed closely: the rates its transfers got (time, bytes/s, on the
    simulation's clock), for comparing its course with the model run on that bandwidth."""

    kind: int
    t0: float  # its pre-copy began (QEMU's clock zero)
    course: Course
    rates: list[tuple[float, float]] = field(default_factory=list)
    total_time: float = math.nan
    downtime: float = math.nan
    guest_downtime: float = math.nan


class _Series:
    """Time series decimated to at most MAX_SAMPLES points: in flight, throughput, the most
    used rack uplink and the spine."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.data: dict[str, array[float]] = {n: array("d") for n in ["t", *names]}
        self.every = 0.0  # s between kept samples (doubles when full)
        self.last = -math.inf

    def add(self, t: float, values: Callable[[], list[float]]) -> None:
        if t - self.last < self.every:
            return
        self.last = t
        self.data["t"].append(t)
        for name, v in zip(self.names, values(), strict=True):
            self.data[name].append(v)
        if len(self.data["t"]) >= MAX_SAMPLES:
            for name, col in self.data.items():
                self.data[name] = col[::2]
            span = self.data["t"][-1] - self.data["t"][0]
            self.every = max(2 * self.every, span / MAX_SAMPLES)


class Simulation:
    """One policy's drain of the datacenter."""

    def __init__(self, spec: DatacenterSpec, policy: str, cache: CourseCache,
                 progress: Callable[[int], None] | None = None, trace_every: int = 0,
                 start_delays: Sequence[float] = ()) -> None:
        self.spec = spec
        self.policy = policy
        self.cache = cache
        self.net = Network(spec.topology)
        self.env = simpy.Environment()
        self.transfers = Transfers(self.env, self.net.capacities(), self._sample)
        self.result = PolicyResult(policy)
        self.progress = progress
        self._series = _Series(["in_flight", "throughput", "uplink_max", "spine"])
        self._ids = 0
        self._guest_count = 0
        self._changed_hosts: dict[int, list[int]] = {}  # hosts whose guests moved: count per kind
        self._kind_of: dict[str, int] = {}
        self._host_of = {self.net.host_name(h): h for h in range(self.net.hosts)}
        self._on_host = [spec.guests_per_host] * self.net.hosts  # guests each host holds
        self._left: dict[int, int] = {}  # draining host -> migrations off it not yet ended
        self._incoming = [0] * self.net.hosts  # migrations into each host in flight
        self._draining: set[int] = set()
        self._queued_at: dict[int, float] = {}  # draining host -> when its drain began
        self._queue: deque[int] = deque()  # rolling: hosts still to drain, in order
        self._sizes = [(m.scenario.guest.ram_size, sum(d.initial_bytes + d.stop_copy_size for d in m.scenario.devices))
                       for m in spec.mix]
        self._objectives = [spec.downtime_objective or m.scenario.migration.downtime_limit for m in spec.mix]
        self.plan: EvacuationPlan | None = None
        self.trace_every = trace_every  # follow every n-th migration closely (0: none)
        # s more before the n-th guest's migration begins (its guests numbered as the plan
        # gets them): measured start times of real runs the simulation is checked against
        self.start_delays = list(start_delays)
        self.traces: list[Trace] = []
        self._started = 0

    # ------------------------------------------------------------ the run

    def run(self) -> PolicyResult:
        order = drained_hosts(self.spec.topology, self.spec.drain)
        rolling = self.spec.drain.mode == "rolling"
        first = order[: self.spec.drain.max_unavailable] if rolling else order
        self._queue = deque(order[len(first):])
        drained = set(first)
        targets = [h for h in range(self.net.hosts) if h not in drained]
        slots = self.spec.topology.slots
        capacity = {self.net.host_name(h): slots - self._on_host[h] for h in targets} if slots else None
        guests = [g for h in first for g in self._guests_of(h)]
        self.plan = EvacuationPlan(guests, [self.net.host_name(h) for h in targets], self.spec.limits,
                                   self.spec.drain.order, capacity, max_guests=10**8)
        for h in first:
            self._begin_drain(h, announce=False)
        self._dispatch()
        self.env.run()
        r = self.result
        r.drain_time_s = max(r.end, default=0.0)  # the last migration's end
        r.wave_time_s = self.env.now  # rolling: until the last host is back from maintenance
        r.not_started = self.plan.queued
        r.solves = self.transfers.solves
        r.series = self._series.data
        return r

    def _guests_of(self, h: int) -> list[FleetGuest]:
        """The guests a host holds now, as the plan's to move."""
        return [self._new_guest(h, kind) for kind, n in enumerate(self._held(h)) for _ in range(n)]

    def _held(self, h: int) -> list[int]:
        """Guests of each kind on host h (every host starts with the mix)."""
        held = self._changed_hosts.get(h)
        if held is None:
            held = self._changed_hosts[h] = [m.per_host for m in self.spec.mix]
        return held

    def _new_guest(self, h: int, kind: int) -> FleetGuest:
        self._guest_count += 1
        ram, device = self._sizes[kind]
        g = FleetGuest(f"m{self._guest_count}", self.net.host_name(h), self.spec.mix[kind].scenario.name, ram, device)
        self._kind_of[g.name] = kind
        return g

    def _begin_drain(self, h: int, announce: bool = True) -> None:
        assert self.plan is not None
        self._draining.add(h)
        self._left[h] = self._on_host[h]
        if announce:
            self.plan.retire_target(self.net.host_name(h))
            self.plan.add_guests(self._guests_of(h))
        self._queued_at[h] = self.env.now
        if not self._left[h] and not self._incoming[h]:
            self._drained(h)

    def _drained(self, h: int) -> None:
        self._draining.discard(h)
        self._left.pop(h, None)
        if self.spec.drain.mode != "rolling":
            return
        self.env.process(self._maintain(h))

    def _maintain(self, h: int) -> Generator[simpy.Event, Any, None]:
        yield self.env.timeout(self.spec.drain.maintenance)
        assert self.plan is not None
        slots = self.spec.topology.slots
        self.plan.add_target(self.net.host_name(h), slots - self._on_host[h] if slots else None)
        if self._queue:
            self._begin_drain(self._queue.popleft())
        self._dispatch()

    def _dispatch(self) -> None:
        assert self.plan is not None
        for placement in self.plan.ready():
            self.env.process(self._migrate(placement))

    # ------------------------------------------------------------ one migration

    def _migrate(self, placement: Placement) -> Generator[simpy.Event, Any, None]:
        env, spec = self.env, self.spec
        guest = placement.guest
        kind = self._kind_of.pop(guest.name)
        src, dst = self._host_of[guest.source_host], self._host_of[placement.target_host]
        self._incoming[dst] += 1
        started = env.now
        serial = int(guest.name[1:]) - 1
        delay = spec.overhead_before + (self.start_delays[serial] if serial < len(self.start_delays) else 0.0)
        if delay:
            yield env.timeout(delay)
        links = self.net.path(src, dst)
        chosen: list[Course] = []

        def precopy_bytes(bandwidth: float, left: float) -> float:
            """The course for the bandwidth this migration gets as it starts; with reclass,
            when its bandwidth moves to another class, that class's course from the same
            share of its pre-copy sent."""
            if chosen and chosen[0].low <= bandwidth < chosen[0].high:
                return left  # still in its course's class (most changes of a share)
            new = self.cache.course(kind, self.policy, bandwidth)
            if not chosen:
                chosen.append(new)
                return new.precopy_bytes
            old = chosen[0]
            if new is old or not old.precopy_bytes:
                return left
            chosen[0] = new
            return max(0.0, left / old.precopy_bytes * new.precopy_bytes)

        t0 = env.now
        cap = spec.mix[kind].scenario.migration.max_bandwidth
        self._started += 1
        rates: list[tuple[float, float]] | None = (
            [] if self.trace_every and self._started % self.trace_every == 0 else None)
        yield self._send(links, 0.0, cap, precopy_bytes, rates, spec.course_update == "reclass")
        course = chosen[0]
        if course.precopy_idle_s:
            yield env.timeout(course.precopy_idle_s)
        stop = math.nan
        if course.outcome == "completed":
            stop = env.now
            if course.save_s:
                yield env.timeout(course.save_s)
            yield self._send(links, course.downtime_bytes, math.inf, None, rates)
            if course.downtime_fixed_s:
                yield env.timeout(course.downtime_fixed_s)
        end = env.now
        if rates is not None:
            self.traces.append(Trace(kind, t0, course, rates, course.setup_s + end - t0, end - stop,
                                     end - stop + course.guest_extra_s))
        if spec.overhead_after:
            yield env.timeout(spec.overhead_after)
        self._record(guest, kind, src, dst, course, started, t0, stop, end)
        self._ended(guest, kind, src, dst, course.outcome)

    def _send(self, links: tuple[int, ...], nbytes: float, limit: float, size: Sizer | None = None,
              trace: list[tuple[float, float]] | None = None, resize: bool = False) -> simpy.Event:
        self._ids += 1
        done = self.transfers.start(self._ids, links, nbytes, limit, size, resize)
        if trace is not None and self._ids in self.transfers.live:
            self.transfers.history[self._ids] = trace
        return done

    def _record(self, guest: FleetGuest, kind: int, src: int, dst: int, course: Course,
                started: float, t0: float, stop: float, end: float) -> None:
        r = self.result
        r.migrations += 1
        r.kind.append(kind)
        r.source.append(src)
        r.target.append(dst)
        r.outcome.append(OUTCOMES.index(course.outcome))
        r.queued_at.append(self._queued_at[src])
        r.start.append(started)
        r.stop.append(stop)
        r.end.append(self.env.now)
        completed = course.outcome == "completed"
        r.downtime.append(end - stop if completed else math.nan)
        r.guest_downtime.append(end - stop + course.guest_extra_s if completed else math.nan)
        r.total_time.append(course.setup_s + end - t0)
        r.bandwidth.append(course.bandwidth)
        r.objective.append(self._objectives[kind])

    def _ended(self, guest: FleetGuest, kind: int, src: int, dst: int, outcome: str) -> None:
        assert self.plan is not None
        self.plan.finished(guest.name, outcome)
        self._incoming[dst] -= 1
        self._left[src] -= 1
        if outcome == "completed":
            self._on_host[src] -= 1
            self._on_host[dst] += 1
            self._held(src)[kind] -= 1
            self._held(dst)[kind] += 1
            if dst in self._draining:  # it landed on a host whose own drain began meanwhile
                self._left[dst] += 1
                self.plan.add_guests([self._new_guest(dst, kind)])
        if self.progress is not None:
            self.progress(1)
        for h in (src, dst):
            if h in self._draining and not self._left[h] and not self._incoming[h]:
                self._drained(h)
        self._dispatch()

    # ------------------------------------------------------------ time series

    def _sample(self, now: float) -> None:
        self._series.add(now, self._values)

    def _values(self) -> list[float]:
        s, net = self.transfers.share, self.net
        racks = self.spec.topology.racks
        lo = net.uplink_up(0)  # every uplink, up then down, has the same capacity
        up = max(s.load[lo:lo + 2 * racks], default=0.0) / s.capacity[lo]
        spine = net.spine_link
        return [float(len(self.plan.in_flight)) if self.plan else 0.0, self.transfers.total_rate, up,
                s.load[spine] / s.capacity[spine] if spine is not None else 0.0]


def simulate_datacenter(spec: DatacenterSpec, progress: Callable[[int], None] | None = None,
                        cache: CourseCache | None = None, parallel: bool = True) -> list[PolicyResult]:
    """Every policy's drain of `spec`, on the same plan. With `parallel` and more than one
    policy and core, each policy runs in a process of its own (forked: nothing to import
    again); the results are the same either way (tests/unit/test_datacenter.py)."""
    import multiprocessing as mp
    import os

    if not parallel or len(spec.policies) < 2 or (os.cpu_count() or 1) < 2 or cache is not None:
        cache = cache or CourseCache([m.scenario for m in spec.mix], spec.bandwidth_step)
        return [_one_policy(spec, policy, cache, progress) for policy in spec.policies]
    ctx = mp.get_context("fork")
    done = ctx.Array("q", len(spec.policies), lock=False)  # migrations ended, per policy
    with ctx.Pool(len(spec.policies), initializer=_init_worker, initargs=(done,)) as pool:
        pending = pool.starmap_async(_policy_worker, [(spec, i) for i in range(len(spec.policies))])
        reported = 0
        while not pending.ready():
            pending.wait(0.5)
            now = sum(done)
            if progress is not None and now > reported:
                progress(now - reported)
                reported = now
        results: list[PolicyResult] = pending.get()
    if progress is not None and sum(r.migrations for r in results) > reported:
        progress(sum(r.migrations for r in results) - reported)
    return results


def _one_policy(spec: DatacenterSpec, policy: str, cache: CourseCache,
                progress: Callable[[int], None] | None) -> PolicyResult:
    before = cache.model_runs
    res = Simulation(spec, policy, cache, progress).run()
    res.model_runs = cache.model_runs - before
    res.bandwidth_classes = sum(1 for key in cache.keys() if key[1] == policy)  # noqa: SIM118
    return res


_worker_done: Any = None  # in a policy's process: the parent's per-policy counters


def _init_worker(done: Any) -> None:
    global _worker_done
    _worker_done = done


def _policy_worker(spec: DatacenterSpec, index: int) -> PolicyResult:
    def count(n: int) -> None:
        _worker_done[index] += n

    cache = CourseCache([m.scenario for m in spec.mix], spec.bandwidth_step)
    return _one_policy(spec, spec.policies[index], cache, count)
