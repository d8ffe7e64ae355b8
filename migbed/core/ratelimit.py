"""QEMU's max-bandwidth rate limit: a budget of rate/10 bytes per 100 ms window.

When the budget is spent the sender waits for the window to end, so sending is bursty
inside a window (as in QEMU's migration_rate_limit). Pure: time is passed in; the caller
sleeps for wait().
"""

from __future__ import annotations

WINDOW_S = 0.1  # QEMU's BUFFER_DELAY


class RateLimiter:
    def __init__(self, rate_bytes_per_s: float, window_s: float = WINDOW_S) -> None:
        if rate_bytes_per_s <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate_bytes_per_s
        self.window = window_s
        self.window_start: float | None = None
        self.used = 0
        self.enabled = True

    @property
    def budget(self) -> float:
        return self.rate * self.window

    def _roll(self, now: float) -> None:
        # The epsilon keeps float rounding from leaving a caller that slept exactly wait()
        # one nanosecond short of the new window.
        if self.window_start is None or now - self.window_start >= self.window - 1e-9:
            self.window_start = now
            self.used = 0

    def allowance(self, now: float) -> int:
        """Bytes that may still be sent in the current window (unlimited when disabled)."""
        if not self.enabled:
            return 1 << 62
        self._roll(now)
        return max(0, int(self.budget - self.used))

    def consume(self, now: float, nbytes: int) -> None:
        self._roll(now)
        self.used += nbytes

    def wait(self, now: float) -> float:
        """Seconds to sleep before anything more may be sent (0 if budget remains)."""
        if not self.enabled:
            return 0.0
        self._roll(now)
        if self.used < self.budget:
            return 0.0
        assert self.window_start is not None
        return max(0.0, self.window_start + self.window - now)
