"""Page scanning: the migration's dirty bitmap, its cursor, and the dirty-sync counters.

QEMU keeps a bitmap of pages still to send and walks it from a cursor that goes round RAM
(ram_find_and_save_block from rs->last_seen_block / last_page, find_dirty_block); a dirty
sync (migration_bitmap_sync) ORs KVM's dirty log into the bitmap and leaves the cursor where
it is. Each time the walk passes the end of RAM a pass ends: with multifd that is where QEMU
syncs the channels (find_dirty_block -> multifd_ram_sync_per_round ->
multifd_ram_flush_and_sync, RAM_SAVE_FLAG_MULTIFD_FLUSH), once per pass, not per bitmap
sync. A search that goes once round RAM and finds nothing gives up; it passed the end on
its way, so it, too, ends a pass. Within one pass a page is sent at most once (a page the
vCPU dirties behind the cursor waits for the next pass), which is why a sync per pass is
enough for the destination to keep the newest copy.

Three places sync the bitmap, and each counts in dirty-sync-count: the setup
(ram_init_bitmaps: every page dirty, then the first sync), the exact pending
(ram_state_pending_exact) and the final one in stop-copy (ram_save_complete).
dirty-pages-rate is refreshed at a sync at most once a second, from the pages newly dirtied
in that period (not already in the bitmap), as migration_update_rates computes it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from migbed.core.guest import GuestMemory

RATE_PERIOD_S = 1.0  # QEMU refreshes dirty-pages-rate when a sync is > 1000 ms after the last


@dataclass(frozen=True)
class Scan:
    """What one search of the bitmap took.

    pages: dirty pages, in the order the cursor met them (cleared from the bitmap).
    wrap_at: the search passed the end of RAM after pages[:wrap_at] (None: it did not). A
        pass ended there: pages[wrap_at:] belong to the next one, and multifd syncs between.
    clean: after the last page taken, the rest of the way round to where the search began
        holds no dirty page (QEMU's find_dirty_block gives up: PAGE_ALL_CLEAN).
    """

    pages: np.ndarray
    wrap_at: int | None
    clean: bool


class PageScanner:
    """The bitmap of pages to send and the syncs that fill it."""

    def __init__(self, memory: GuestMemory, rate_period_s: float = RATE_PERIOD_S) -> None:
        self.memory = memory
        self.rate_period_s = rate_period_s  # RATE_PERIOD_S x time-dilation
        self.page_size = memory.page_size
        self.bitmap = np.zeros(memory.pages, dtype=bool)
        self.cursor = 0  # the next page the walk looks at (QEMU's last_seen_block/last_page)
        self.passes = 0  # times the walk passed the end of RAM
        self._dirty = 0  # pages set in the bitmap (kept, not counted: a count is O(RAM))
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
        self.bitmap |= log_now  # the cursor stays: the walk goes on from where it was
        self._dirty = int(np.count_nonzero(self.bitmap))
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
        return self._dirty

    @property
    def dirty_bytes(self) -> int:
        return self.dirty_pages * self.page_size

    def take(self, want: int) -> Scan:
        """Up to `want` dirty pages from the cursor on, going round RAM, cleared from the
        bitmap. Stops after one pass boundary: pages after the wrap are taken only up to
        where the search began, so no page can be taken twice in one call."""
        size, start = self.bitmap.size, min(self.cursor, self.bitmap.size)
        before, reached_end = self._find(start, size, want)
        if not reached_end:
            return self._taken(before, None, False, start)
        self.passes += 1
        after, _ = self._find(0, start, want - before.size)
        # Nothing between the wrap and the start: the search gave up (it ended a pass on the
        # way). Pages after the wrap are followed by the next call's wrap instead.
        return self._taken(np.concatenate((before, after)) if after.size else before,
                           before.size, after.size == 0, start)

    def _taken(self, idx: np.ndarray, wrap_at: int | None, clean: bool, start: int) -> Scan:
        if idx.size:
            self.bitmap[idx] = False
            self._dirty -= idx.size
            self.cursor = int(idx[-1]) + 1
        else:
            self.cursor = start
        return Scan(idx, wrap_at, clean)

    def _find(self, lo: int, hi: int, want: int) -> tuple[np.ndarray, bool]:
        """Up to `want` dirty pages in [lo, hi), ascending, and whether the search reached
        hi. Scans only as far as needed (a scan of the whole tail per chunk made the bulk
        stage quadratic in RAM size)."""
        span = max(4 * want, 4096)
        parts: list[np.ndarray] = []
        got = 0
        while lo < hi and got < want:
            end = min(hi, lo + span)
            hit = np.flatnonzero(self.bitmap[lo:end])[: want - got]
            if hit.size:
                parts.append(hit + lo)
                got += hit.size
            lo = end
            span *= 2
        if not parts:
            return np.empty(0, dtype=np.int64), True
        # With `want` pages found the search stops short of hi, even if none is left before
        # it: the next search finds that out (and ends the pass then).
        return (parts[0] if len(parts) == 1 else np.concatenate(parts)), got < want
