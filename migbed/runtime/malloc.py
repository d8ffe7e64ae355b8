"""glibc malloc settings for a process that streams GiBs through short-lived 1 MiB buffers.

Every message gRPC receives (and every Python bytes made of it) is a fresh buffer of about
1 MiB, freed a moment later. glibc serves such sizes either by mmap (a new mapping per
buffer) or from a heap whose free top it gives back to the kernel once it passes the trim
threshold (about twice the last freed mmap'd size: a few MiB). Either way the next buffer
lands on pages the kernel must fault in and zero again. On this kind of machine (a VM whose
freed memory goes back to its host) those faults cost more than the copies: perf on a gRPC
receiver moving 1 GiB showed page faults and their zeroing as the largest items, and the
receiver used 0.6-0.9 s of CPU per GiB; with both thresholds fixed 0.3 s, and gRPC's
throughput about doubled (docs/performance.md, section 1).

So, once per service process, as QEMU allocates its migration buffers once:
- buffers up to 4 MiB (a stream message holds at most a 2 MiB page plus framing) come from
  the heap; anything larger - guest RAM, device state - is its own mapping, given back to
  the kernel when freed (the threshold is fixed, so glibc no longer raises it to 32 MiB
  after the first large free and puts small guests on the heap);
- up to 16 MiB of free heap top stays mapped for the next messages (twice the HTTP/2
  window). After a migration the target gives every arena's free memory back
  (give_back_free_memory: a process serving many migrations has an arena per busy thread).
Touching that heap once at start was tried too, for a fresh process's first final copy: no
difference beyond the run-to-run spread (4 fresh pairs each, 2026-11-30), so it is not done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("migbed.malloc")

M_TRIM_THRESHOLD = -1  # <malloc.h>
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 4 << 20
TRIM_THRESHOLD_BYTES = 16 << 20

_libc: ctypes.CDLL | None = None


def _c_library() -> ctypes.CDLL | None:
    global _libc
    if _libc is None:
        name = ctypes.util.find_library("c")
        _libc = ctypes.CDLL(name) if name is not None else None
    return _libc


def keep_stream_buffers_mapped(mmap_threshold: int = MMAP_THRESHOLD_BYTES,
                               trim_threshold: int = TRIM_THRESHOLD_BYTES) -> bool:
    """Set the two thresholds (see the module doc); False where there is no glibc mallopt
    (musl, macOS): the process runs as before, only slower on a busy stream."""
    libc = _c_library()
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        log.info("no glibc mallopt: malloc thresholds left as they are")
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(
        mallopt(M_TRIM_THRESHOLD, trim_threshold))
    if not ok:
        log.info("mallopt refused the thresholds: malloc left as it is")
    return ok


def give_back_free_memory() -> None:
    """After a migration: every arena's free memory back to the kernel (malloc_trim; a
    process serving many migrations has an arena per busy thread, each keeping up to the
    trim threshold)."""
    libc = _c_library()
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return
    trim(0)

