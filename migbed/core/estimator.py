"""Bandwidth, threshold and expected downtime, as QEMU's migration thread computes them.

Every 100 ms window (BUFFER_DELAY): bandwidth = bytes sent in the window / its length;
threshold_size = expected bandwidth x downtime_limit, where the expected bandwidth is
avail-switchover-bandwidth when set (QEMU 8.2+) and the measured one otherwise;
expected_downtime = dirty bytes at the last sync / expected bandwidth, recomputed only when
dirty-pages-rate is non-zero and more than 10000 bytes went out in the window, and
downtime-limit until then (migration_update_counters, migrate_fd_connect). Pure: the
engine reports bytes and time.
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
        self.expected_downtime = downtime_limit  # s; QEMU's initial value
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

    def update(self, now: float, dirty_pages_rate: float = 0.0) -> bool:
        """Close the window if it has run its length; True when the figures were renewed."""
        if self.window_start is None:
            self.start(now)
            return False
        elapsed = now - self.window_start
        if elapsed < self.window:
            return False
        self.bandwidth = self.window_bytes / elapsed
        self.threshold = self.switchover_bandwidth * self.downtime_limit
        expected_bw = self.switchover_bandwidth
        if dirty_pages_rate > 0 and self.window_bytes > 10000 and expected_bw > 0:
            self.expected_downtime = self.dirty_bytes_at_sync / expected_bw
        self.window_start = now
        self.window_bytes = 0
        return True
