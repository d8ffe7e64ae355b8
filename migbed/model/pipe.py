"""The migration stream as the model sees it: a sender's rate limit, a bounded buffer, and a
destination whose single reader stalls while a device loads.

- ``Limiter``: QEMU's max-bandwidth, a budget of rate/10 bytes per 100 ms window spent at
  the wire's speed (bursty inside the window), then a sleep to the window's end; off in
  stop-copy (rate = inf), when the wire alone sets the pace.
- ``Pipe``: bytes written by the source at the limiter's pace. The destination reads them
  as they arrive, except while it loads a device image *inline* (a ``Stall``): then it reads
  nothing, the source may run ``buffer`` bytes ahead (socket buffers, flow-control windows),
  and after that its writes block until the load ends (TCP back-pressure). Loads happen in
  stream order, one after another, as QEMU's incoming thread does them.

Pure arithmetic on times (s) and byte positions; no clock, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

WINDOW_S = 0.1  # QEMU's BUFFER_DELAY: rate-limit and bandwidth window
_EPS = 1e-9


class WireSchedule(float):
    """A wire whose rate changes over time: ``rates[i]`` bytes/s from ``times[i]`` on (the
    first from 0, the last for ever). Its float value is its highest rate: where the model
    asks for one number (the threshold's ceiling, how much RAM one 50 ms turn carries) it
    gets the bound. What the datacenter simulation measures its course approximation
    against (docs/datacenter.md): the model run with the bandwidth a migration really got.
    Only where the sender is not rate-limited: a Limiter refuses one whose top rate is
    above max-bandwidth (QEMU's budgeted bursts on a changing wire are not modelled)."""

    times: tuple[float, ...]
    rates: tuple[float, ...]

    def __new__(cls, changes: list[tuple[float, float]]) -> WireSchedule:
        if not changes or any(r <= 0 for _, r in changes):
            raise ValueError("a wire schedule needs at least one (time, rate > 0)")
        changes = sorted(changes)
        obj = super().__new__(cls, max(r for _, r in changes))
        obj.times = (0.0, *(t for t, _ in changes[1:]))
        obj.rates = tuple(r for _, r in changes)
        return obj

    def _segment(self, t: float) -> int:
        i = 0
        while i + 1 < len(self.times) and self.times[i + 1] <= t:
            i += 1
        return i

    def bytes_between(self, t0: float, t1: float) -> float:
        total, i = 0.0, self._segment(t0)
        while t0 < t1:
            end = self.times[i + 1] if i + 1 < len(self.times) else math.inf
            step = min(t1, end)
            total += (step - t0) * self.rates[i]
            t0, i = step, i + 1
        return total

    def send_end(self, t: float, n: float) -> float:
        """When n bytes sent from t are through."""
        i = self._segment(t)
        while True:
            end = self.times[i + 1] if i + 1 < len(self.times) else math.inf
            room = (end - t) * self.rates[i]
            if n <= room:
                return t + n / self.rates[i]
            n -= room
            t, i = end, i + 1


class Limiter:
    """Sending time under max-bandwidth (``rate``) on a wire of ``wire`` bytes/s.

    The window rolls like QEMU's (and migbed's RateLimiter): a send after the window's end
    opens a new window at that instant. Only when the wire is faster than the rate does the
    budget bind; otherwise the wire alone sets the pace.
    """

    def __init__(self, rate: float, wire: float, window: float = WINDOW_S) -> None:
        self.rate = rate
        self.wire = wire
        self.window = window
        self.budget = rate * window if math.isfinite(rate) else math.inf
        self.binding = wire > rate
        self.schedule = wire if isinstance(wire, WireSchedule) else None
        if self.schedule is not None and self.binding:
            raise ValueError("a changing wire is modelled only below max-bandwidth")
        self.window_start = -math.inf
        self.used = 0.0

    def _rolled(self, t: float) -> tuple[float, float]:
        if t - self.window_start >= self.window - _EPS:
            return t, 0.0
        return self.window_start, self.used

    def plan(self, t: float, n: float) -> tuple[float, float, float]:
        """(end time, window start, budget used) after sending n bytes from t."""
        if self.schedule is not None:
            return self.schedule.send_end(t, n), self.window_start, self.used
        if not self.binding:
            return t + n / self.wire, self.window_start, self.used
        ws, used = self._rolled(t)
        left = self.budget - used
        if n <= left + _EPS:
            return t + n / self.wire, ws, used + n
        n -= left
        t = ws + self.window  # slept to the window's end
        full, rest = divmod(n, self.budget)
        if rest <= self.budget * 1e-9:  # ends exactly on a spent budget
            ws = t + (full - 1) * self.window
            return ws + self.budget / self.wire, ws, self.budget
        ws = t + full * self.window
        return ws + rest / self.wire, ws, rest

    def sendable(self, t: float, until: float) -> float:
        """Bytes that can be sent from t to until."""
        if until <= t:
            return 0.0
        if self.schedule is not None:
            return self.schedule.bytes_between(t, until)
        if not self.binding:
            return (until - t) * self.wire
        ws, used = self._rolled(t)
        left = self.budget - used
        first = min(left, (until - t) * self.wire)
        start = ws + self.window
        if first < left or until <= start:
            return first
        windows = math.floor((until - start) / self.window)
        last = start + windows * self.window
        return first + windows * self.budget + min(self.budget, (until - last) * self.wire)

    def budget_left(self, t: float) -> float:
        """What the window open at t still allows (inf when the budget does not bind)."""
        if not self.binding:
            return math.inf
        return max(0.0, self.budget - self._rolled(t)[1])

    def commit(self, window_start: float, used: float) -> None:
        self.window_start, self.used = window_start, used

    def budget_spent(self) -> bool:
        return self.binding and self.used >= self.budget - 1.0

    def window_end(self) -> float:
        return self.window_start + self.window


@dataclass
class Stall:
    """The destination loads an image: it reads nothing in [start, end) past ``pos``."""

    start: float
    end: float
    pos: float


@dataclass
class Pipe:
    limiter: Limiter
    buffer: float  # bytes the source may write beyond what the destination has read
    pos: float = 0.0  # bytes written so far
    dest_free: float = 0.0  # when the destination's reader has loaded everything queued
    stalls: list[Stall] = field(default_factory=list)
    sent: list[tuple[float, float, float]] = field(default_factory=list)  # (t0, t1, bytes)

    def _constraint(self, t: float) -> tuple[float, float]:
        """(highest position writable now, until when that holds)."""
        nearest_future = math.inf
        for s in reversed(self.stalls):
            if s.end <= t:
                break
            if s.start <= t:
                return s.pos + self.buffer, s.end
            nearest_future = s.start
        return math.inf, nearest_future

    def write(self, t: float, n: float) -> float:
        """Write n bytes from t; returns when the last one is written (blocked by stalls)."""
        while n > _EPS:
            cap, until = self._constraint(t)
            room = cap - self.pos
            if room <= _EPS:
                t = until
                continue
            k = min(n, room)
            end, ws, used = self.limiter.plan(t, k)
            if end > until + _EPS:
                k = min(k, self.limiter.sendable(t, until))
                if k <= _EPS:
                    t = until
                    continue
                end, ws, used = self.limiter.plan(t, k)
                end = max(end, until)
            self.limiter.commit(ws, used)
            self.sent.append((t, end, k))
            self.pos += k
            n -= k
            t = end
        return t

    def load(self, written_at: float, cost: float) -> Stall:
        """The image ending at the current position, complete at written_at, loads for cost s
        once the reader gets to it (after every earlier load)."""
        start = max(written_at, self.dest_free)
        stall = Stall(start, start + cost, self.pos)
        if cost > 0:
            self.stalls.append(stall)
        self.dest_free = max(self.dest_free, stall.end)
        return stall

    def bytes_between(self, t0: float, t1: float) -> float:
        total = 0.0
        for a, b, k in reversed(self.sent):
            if b <= t0:
                break
            lo, hi = max(a, t0), min(b, t1)
            if hi > lo:
                total += k * (hi - lo) / (b - a)
            elif a == b and t0 <= a < t1:
                total += k
        return total
