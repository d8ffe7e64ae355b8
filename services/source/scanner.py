"""Page scanning: the migration's dirty bitmap, its cursor, and the dirty-sync counters.

QEMU keeps a bitmap of pages still to send and walks it from a cursor; a dirty sync
(migration_bitmap_sync) ORs KVM's dirty log into it. Three places sync, and each counts in
dirty-sync-count: the setup (ram_init_bitmaps: every page dirty, then the first sync), the
exact pending (ram_state_pending_exact) and the final one in stop-copy (ram_save_complete).
dirty-pages-rate is refreshed at a sync at most once a second, from the pages newly dirtied
in that period (not already in the bitmap), as migration_update_rates computes it.
"""

from __future__ import annotations

import time

import numpy as np

from migbed.core.guest import GuestMemory

RATE_PERIOD_S = 1.0  # QEMU refreshes dirty-pages-rate when a sync is > 1000 ms after the last


class PageScanner:
    """The bitmap of pages to send and the syncs that fill it."""

    def __init__(self, memory: GuestMemory, rate_period_s: float = RATE_PERIOD_S) -> None:
        self.memory = memory
        self.rate_period_s = rate_period_s  # RATE_PERIOD_S x time-dilation
        self.page_size = memory.page_size
        self.bitmap = np.zeros(memory.pages, dtype=bool)
        self.cursor = 0
        self.dirty_sync_count = 0
        self.dirty_pages_rate = 0.0  # pages/s
        self.dirty_bytes_at_last_sync = 0
        self._period_start = 0.0
        self._period_pages = 0

    def start(self) -> None:
        """ram_init_bitmaps: dirty logging on, every page to send, the first sync."""
        self.memory.start_dirty_log()
        self.bitmap[:] = True
        self._period_start = time.monotonic()
        self.sync()

    def sync(self) -> int:
        """migration_bitmap_sync: OR the dirty log into the bitmap; returns the dirty bytes."""
        log_now = self.memory.sync_dirty_log()
        self._period_pages += int((log_now & ~self.bitmap).sum())
        self.bitmap |= log_now
        self.cursor = 0
        self.dirty_sync_count += 1
        now = time.monotonic()
        if now - self._period_start > self.rate_period_s:
            self.dirty_pages_rate = self._period_pages / (now - self._period_start)
            self._period_start, self._period_pages = now, 0
        self.dirty_bytes_at_last_sync = self.dirty_bytes
        return self.dirty_bytes_at_last_sync

    def final_sync(self) -> None:
        """ram_save_complete's last sync (the guest is stopped), then logging off."""
        self.sync()
        self.memory.stop_dirty_log()

    @property
    def dirty_pages(self) -> int:
        return int(self.bitmap.sum())

    @property
    def dirty_bytes(self) -> int:
        return self.dirty_pages * self.page_size

    def take(self, want: int) -> np.ndarray:
        """Up to `want` dirty pages from the cursor on, cleared from the bitmap.

        Scans only as far as needed (a scan of the whole tail per chunk made the bulk stage
        quadratic in RAM size)."""
        size = self.bitmap.size
        start = self.cursor
        span = max(4 * want, 4096)
        parts: list[np.ndarray] = []
        got = 0
        while start < size and got < want:
            end = min(size, start + span)
            hit = np.flatnonzero(self.bitmap[start:end])[: want - got]
            if hit.size:
                parts.append(hit + start)
                got += hit.size
            start = end
            span *= 2
        if not parts:
            self.cursor = size
            return np.empty(0, dtype=np.int64)
        idx = parts[0] if len(parts) == 1 else np.concatenate(parts)
        self.bitmap[idx] = False
        self.cursor = int(idx[-1]) + 1
        return idx
