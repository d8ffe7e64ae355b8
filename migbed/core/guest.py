"""Guest memory: real bytes in pages, a dirty log, self-describing page contents, digests.

Every page holds a header (page index, write version, seed) and a body filled with a byte
derived from them, so any page can be checked on its own (check_integrity) and a resumed
guest can keep writing where the source left off (the version lives in the page). The dirty
log plays KVM's role: writes set a bit while logging is on; sync_dirty_log() returns and
clears it, as QEMU's migration_bitmap_sync does.

The target keeps a copy-on-write snapshot from the moment it resumes, so the digest of the
state it received can be taken after the guest runs again (outside the downtime).
"""

from __future__ import annotations

import hashlib
import threading

import numpy as np

_HEADER_WORDS = 3  # uint64: page index, version, seed
DIGEST_CHUNK_PAGES = 256


def _consecutive(idx: np.ndarray) -> bool:
    """idx is first, first + 1, ..., in this order (a slice of RAM can stand for it)."""
    return idx.size == 1 or bool((np.diff(idx) == 1).all())


def _fill_byte(pages: np.ndarray, versions: np.ndarray, seed: int) -> np.ndarray:
    return ((pages * 131 + versions * 17 + seed) & 0xFF).astype(np.uint8)


class GuestMemory:
    """The guest's RAM. Thread-safe for one writer (the vCPU) and one reader (the engine)."""

    def __init__(self, ram_size: int, page_size: int, seed: int, fill: bool = True) -> None:
        if ram_size % page_size:
            raise ValueError("ram_size must be a multiple of page_size")
        self.page_size = page_size
        self.pages = ram_size // page_size
        self.seed = seed
        self.ram = np.zeros((self.pages, page_size), dtype=np.uint8)
        self._words = self.ram.view(np.uint64)  # (pages, page_size / 8)
        self._log = np.zeros(self.pages, dtype=bool)
        self._logging = False
        self._lock = threading.Lock()
        self._snapshot: dict[int, np.ndarray] | None = None
        if fill:
            everything = np.arange(self.pages, dtype=np.int64)
            self._write(everything, np.zeros(self.pages, dtype=np.uint64))

    @property
    def ram_size(self) -> int:
        return self.pages * self.page_size

    # ------------------------------------------------------------ the workload's writes

    def _write(self, idx: np.ndarray, versions: np.ndarray) -> None:
        fill = _fill_byte(idx.astype(np.uint64), versions, self.seed)
        self.ram[idx, :] = fill[:, None]
        self._words[idx, 0] = idx.astype(np.uint64)
        self._words[idx, 1] = versions
        self._words[idx, 2] = np.uint64(self.seed)

    def write_pages(self, idx: np.ndarray) -> None:
        """The guest writes these pages: each gets its next version."""
        if idx.size == 0:
            return
        idx = np.unique(idx)
        with self._lock:
            if self._snapshot is not None:
                for p in idx.tolist():
                    if p not in self._snapshot:
                        self._snapshot[p] = self.ram[p].copy()
            versions = self._words[idx, 1] + np.uint64(1)
            self._write(idx, versions)
            if self._logging:
                self._log[idx] = True

    # ------------------------------------------------------------ dirty logging (KVM's role)

    def start_dirty_log(self) -> None:
        with self._lock:
            self._log[:] = False
            self._logging = True

    def stop_dirty_log(self) -> None:
        with self._lock:
            self._logging = False

    def sync_dirty_log(self) -> np.ndarray:
        """Return the pages written since the last sync (bool per page) and clear the log."""
        with self._lock:
            log = self._log
            self._log = np.zeros(self.pages, dtype=bool)
        return log

    # ------------------------------------------------------------ moving pages

    def read_pages(self, idx: np.ndarray) -> bytes:
        return self.ram[idx].tobytes()

    def page_bytes(self, idx: np.ndarray) -> memoryview:
        """The bytes of pages `idx` in order, for sending.

        A run of consecutive pages (the bulk stage sends nothing else) is a view of RAM: no
        copy here, the one copy is made into the wire message. Other sets are gathered
        (one copy). Like read_pages, this takes no lock: a page the vCPU is writing may be
        torn, and is then also in the dirty log, so it is sent again (as in QEMU).
        """
        first = int(idx[0])
        block = self.ram[first : first + idx.size] if _consecutive(idx) else self.ram[idx]
        return block.data.cast("B")

    def store_pages(self, idx: np.ndarray, data: bytes | memoryview) -> None:
        """Target side: put received pages in place."""
        src = np.frombuffer(data, dtype=np.uint8).reshape(len(idx), self.page_size)
        first = int(idx[0])
        if _consecutive(idx):
            self.ram[first : first + len(idx)] = src  # one memcpy, no index arithmetic
        else:
            self.ram[idx] = src

    def prefault(self, chunk_bytes: int = 64 << 20,
                 stop: threading.Event | None = None) -> bool:
        """Make the RAM resident now (QEMU's -mem-prealloc), a chunk at a time.

        np.zeros only reserves: each page is faulted in on its first write. On this kind of
        machine (a VM whose freed memory goes back to its host) a first touch costs up to
        ~3 ms per MiB, which the target would otherwise pay inside the migration stream.
        One write per 4 KiB page; the kernel zero-fills the rest (with transparent huge
        pages one write per 2 MiB would do). Content stays zero. Returns False, early, once
        `stop` is set (a service told to stop must not go on faulting in GiBs first).
        """
        flat = self.ram.reshape(-1)
        step = 4096
        for start in range(0, flat.size, chunk_bytes):
            if stop is not None and stop.is_set():
                return False
            flat[start : start + chunk_bytes : step] = 0
        return True

    # ------------------------------------------------------------ checks

    def check_integrity(self) -> list[int]:
        """Pages whose bytes are not what their header says (empty when all is well)."""
        idx = np.arange(self.pages, dtype=np.uint64)
        versions = self._words[:, 1]
        bad = (self._words[:, 0] != idx) | (self._words[:, 2] != np.uint64(self.seed))
        fill = _fill_byte(idx, versions, self.seed)
        # The body (after the header) must be the fill byte throughout.
        body = self.ram[:, _HEADER_WORDS * 8 :]
        bad |= (body != fill[:, None]).any(axis=1)
        return np.flatnonzero(bad).tolist()

    def digest(self) -> bytes:
        """Digest of RAM as it is now (the caller makes sure nothing writes meanwhile)."""
        return hashlib.blake2b(self.ram.data.cast("B"), digest_size=32).digest()

    # ------------------------------------------------------------ target: state at resume

    def begin_snapshot(self) -> None:
        """Keep the current contents: later writes copy a page's old bytes first."""
        with self._lock:
            self._snapshot = {}

    def snapshot_digest(self) -> bytes:
        """Digest of RAM as it was at begin_snapshot(), while the guest may keep running.

        Hashes a chunk of pages at a time under the lock, so the vCPU is held for at most
        one chunk (about a millisecond) and no page changes while its chunk is hashed.
        """
        h = hashlib.blake2b(digest_size=32)
        for start in range(0, self.pages, DIGEST_CHUNK_PAGES):
            end = min(start + DIGEST_CHUNK_PAGES, self.pages)
            with self._lock:
                snap = self._snapshot or {}
                changed = [p for p in range(start, end) if p in snap] if snap else []
                if not changed:
                    h.update(self.ram[start:end].data.cast("B"))
                    continue
                chunk = self.ram[start:end].copy()
                for p in changed:
                    chunk[p - start] = snap[p]
            h.update(chunk.data.cast("B"))
        return h.digest()

    def end_snapshot(self) -> None:
        with self._lock:
            self._snapshot = None
