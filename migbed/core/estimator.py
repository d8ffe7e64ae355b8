"""Bandwidth, threshold and expected downtime, as QEMU's migration thread computes them.

Every 100 ms window (BUFFER_DELAY): bandwidth = bytes sent in the window / its length;
threshold_size = bandwidth x downtime_limit (or avail-switchover-bandwidth x limit when
set: it replaces the measured bandwidth for the threshold only); expected_downtime =
dirty bytes at the last sync / bandwidth. Pure: the engine reports bytes and time.
"""

from __future__ import annotations

from migbed.core.ratelimit import WINDOW_S


class Estimator:
    def __init__(
        self, downtime_limit: float, avail_switchover_bandwidth: float = 0.0,
        window_s: float = WINDOW_S,
    ) -> None:
        self.downtime_limit = downtime_limit
        self.avail = avail_switchover_bandwidth
        self.window = window_s
        self.window_start: float | None = None
        self.window_bytes = 0
        self.bandwidth = 0.0  # bytes/s measured over the last full window
        self.threshold = 0.0  # bytes; QEMU starts at 0, so nothing switches in window one
        self.expected_downtime = 0.0  # s
        self.dirty_bytes_at_sync = 0

    def start(self, now: float) -> None:
        self.window_start = now
        self.window_bytes = 0

    def on_sent(self, nbytes: int) -> None:
        self.window_bytes += nbytes

    def on_sync(self, dirty_bytes: int) -> None:
        self.dirty_bytes_at_sync = dirty_bytes

    @property
    def switchover_bandwidth(self) -> float:
        return self.avail if self.avail > 0 else self.bandwidth

    def update(self, now: float) -> bool:
        """Close the window if it has run its length; True when the figures were renewed."""
        if self.window_start is None:
            self.start(now)
            return False
        elapsed = now - self.window_start
        if elapsed < self.window:
            return False
        self.bandwidth = self.window_bytes / elapsed
        self.threshold = self.switchover_bandwidth * self.downtime_limit
        if self.bandwidth > 0:
            self.expected_downtime = self.dirty_bytes_at_sync / self.bandwidth
        self.window_start = now
        self.window_bytes = 0
        return True
