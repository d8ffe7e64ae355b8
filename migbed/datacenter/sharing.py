"""Max-min fair sharing of links among flows, re-solved only where a change can reach.

Each flow crosses a few links (its source NIC, rack uplink, spine, the target's rack
downlink and NIC) and has a limit of its own (QEMU's max-bandwidth in pre-copy, none in
stop-copy). Its rate is the max-min fair one: no flow can get more without taking from a
flow that has no more than it (progressive filling / water-filling, Bertsekas & Gallager,
"Data Networks", 6.5.2).

A full re-solve at every start and end would cost O(flows in flight) each time; at
datacenter scale that is most of the run. A change can only move the rates of flows tied
to it through *saturated* links (an unsaturated link constrains nobody), so the solver
re-fills that component alone, holding every other flow's rate as a fixed load, and then
checks the one way the component can reach further: a link that became saturated under a
flow outside it with a higher rate. Such flows join the component and it is filled again.
The result is the same as a global re-solve (tests/unit/test_datacenter_sharing.py checks
it against one on random networks).

Pure: no clock, no I/O. Rates in bytes/s.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Sequence

_REL = 1e-9  # relative tolerance: a link this close to its capacity is saturated


class SharingError(ValueError):
    """A flow or link that does not exist, or a capacity that is not positive."""


class FairShare:
    def __init__(self, capacities: Sequence[float]) -> None:
        if any(not c > 0 for c in capacities):
            raise SharingError("every link needs a capacity above 0")
        self.capacity = [float(c) for c in capacities]
        self.full = [c * (1 - _REL) for c in self.capacity]  # a load this high saturates a link
        self.load = [0.0] * len(capacities)  # sum of the rates of the flows on each link
        self.flows_on: list[set[int]] = [set() for _ in capacities]
        self.links: dict[int, tuple[int, ...]] = {}
        self.limit: dict[int, float] = {}
        self.rate: dict[int, float] = {}
        self._touched: set[int] = set()  # flows added or whose limit changed since the last solve
        self._freed: set[int] = set()  # links a removed flow left (saturated before it left)

    # ------------------------------------------------------------ changes (applied by solve)

    def add(self, flow: int, links: Iterable[int], limit: float = math.inf) -> None:
        if flow in self.links:
            raise SharingError(f"flow {flow} is already sharing")
        path = tuple(links)
        if path and (min(path) < 0 or max(path) >= len(self.capacity)):
            raise SharingError(f"flow {flow}: a link out of range in {path}")
        self.links[flow] = path
        self.limit[flow] = limit
        self.rate[flow] = 0.0
        for link in path:
            self.flows_on[link].add(flow)
        self._touched.add(flow)

    def remove(self, flow: int) -> None:
        path = self.links.pop(flow, None)
        if path is None:
            raise SharingError(f"flow {flow} is not sharing")
        rate = self.rate.pop(flow)
        del self.limit[flow]
        self._touched.discard(flow)
        load, full = self.load, self.full
        for link in path:
            if load[link] >= full[link]:
                self._freed.add(link)
            self.flows_on[link].discard(flow)
            load[link] -= rate

    def set_limit(self, flow: int, limit: float) -> None:
        if flow not in self.links:
            raise SharingError(f"flow {flow} is not sharing")
        self.limit[flow] = limit
        self._touched.add(flow)

    # ------------------------------------------------------------ the solve

    def _saturated(self, link: int) -> bool:
        return self.load[link] >= self.full[link]

    def solve(self) -> dict[int, float]:
        """Apply the pending changes; returns {flow: new rate} for every flow whose rate moved
        (added flows always)."""
        seeds = set(self._touched)
        for link in self._freed:
            seeds |= self.flows_on[link]
        self._touched.clear()
        self._freed.clear()
        if not seeds:  # only flows on unsaturated links left: nobody else moves
            return {}
        old = {f: self.rate[f] for f in seeds}
        component = self._closure(seeds)
        old.update((f, self.rate[f]) for f in component if f not in old)
        while True:
            self._fill(component)
            more = self._outsiders_above_level(component)
            if not more:
                break
            grown = self._closure(more | component)
            old.update((f, self.rate[f]) for f in grown if f not in old)
            component = grown
        return {f: self.rate[f] for f in component if self.rate[f] != old.get(f, -1.0)}

    def _closure(self, seeds: set[int]) -> set[int]:
        """The seeds and every flow tied to them through saturated links."""
        component = set(seeds)
        stack = list(seeds)
        seen_links: set[int] = set()
        load, full = self.load, self.full
        while stack:
            f = stack.pop()
            for link in self.links[f]:
                if link in seen_links or load[link] < full[link]:
                    continue
                seen_links.add(link)
                for g in self.flows_on[link]:
                    if g not in component:
                        component.add(g)
                        stack.append(g)
        return component

    def _fill(self, component: set[int]) -> None:
        """Water-filling of the component's flows over what the other flows leave."""
        if len(component) == 1:  # the most common case: one flow takes what its path leaves
            [f] = component
            r, cap, load = self.rate[f], self.capacity, self.load
            free = min((cap[link] - load[link] + r for link in self.links[f]), default=math.inf)
            rate = min(self.limit[f], max(0.0, free))
            self._set_rate(f, rate if math.isfinite(rate) else 0.0)
            return
        residual: dict[int, float] = {}  # per link: what the flows outside the component leave
        count: dict[int, int] = {}  # per link: the component's flows not yet frozen
        cap, load, rates, paths = self.capacity, self.load, self.rate, self.links
        for f in component:
            r = rates[f]
            for link in paths[f]:
                if link in residual:
                    residual[link] += r
                    count[link] += 1
                else:
                    residual[link] = cap[link] - load[link] + r
                    count[link] = 1
        heap: list[tuple[float, int, int]] = []  # (level, kind 0 link / 1 flow limit, id)
        for link, n in count.items():
            r = residual[link]
            heap.append(((r if r > 0 else 0.0) / n, 0, link))
        for f in component:
            if math.isfinite(self.limit[f]):
                heap.append((self.limit[f], 1, f))
        heapq.heapify(heap)
        frozen: set[int] = set()
        while heap and len(frozen) < len(component):
            level, kind, ident = heapq.heappop(heap)
            if kind == 1:
                if ident not in frozen:
                    self._freeze([ident], level, frozen, residual, count, heap)
                continue
            n = count[ident]
            r = residual[ident]
            if n == 0 or abs((r if r > 0 else 0.0) / n - level) > level * _REL + 1e-12:
                continue  # stale entry: a fresher one is in the heap
            self._freeze([g for g in self.flows_on[ident] if g in component and g not in frozen], level,
                         frozen, residual, count, heap)
        for f in component:  # flows crossing no link with a limit of inf
            if f not in frozen:
                self._set_rate(f, self.limit[f] if math.isfinite(self.limit[f]) else 0.0)

    def _freeze(self, flows: list[int], level: float, frozen: set[int], residual: dict[int, float],
                count: dict[int, int], heap: list[tuple[float, int, int]]) -> None:
        """Fix `flows` at `level`; the links they leave get one fresh heap entry each."""
        touched: set[int] = set()
        for f in flows:
            frozen.add(f)
            self._set_rate(f, level)
            for link in self.links[f]:
                residual[link] -= level
                count[link] -= 1
                touched.add(link)
        for link in touched:
            n = count[link]
            if n:
                r = residual[link]
                heapq.heappush(heap, ((r if r > 0 else 0.0) / n, 0, link))

    def _set_rate(self, f: int, rate: float) -> None:
        delta = rate - self.rate[f]
        if delta:
            for link in self.links[f]:
                self.load[link] += delta
            self.rate[f] = rate

    def _outsiders_above_level(self, component: set[int]) -> set[int]:
        """Flows outside the component on a link it saturated, with more than the component's
        flows there get: max-min says they must come down to that level."""
        load, full = self.load, self.full
        links = {link for f in component for link in self.links[f] if load[link] >= full[link]}
        found: set[int] = set()
        for link in links:
            flows = self.flows_on[link]
            inside = [self.rate[g] for g in flows if g in component]
            level = max(inside, default=0.0)
            for g in flows:
                if g not in component and self.rate[g] > level * (1 + 1e-7) + 1e-9:
                    found.add(g)
        return found

    # ------------------------------------------------------------ views

    def utilisation(self, link: int) -> float:
        return self.load[link] / self.capacity[link]


def global_max_min(capacities: Sequence[float], paths: dict[int, tuple[int, ...]],
                   limits: dict[int, float]) -> dict[int, float]:
    """The reference: progressive filling of every flow at once (for the tests)."""
    share = FairShare(capacities)
    for f, path in paths.items():
        share.add(f, path, limits.get(f, math.inf))
    share._fill(set(paths))
    return dict(share.rate)
