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

So, once per service process: buffers up to 32 MiB (glibc's largest mmap threshold) come
from the heap, and up to 64 MiB of free heap top stays mapped for the next message. Guest
RAM above 32 MiB is still its own mapping and goes back to the kernel when freed; the
target's return_memory() trims the heap explicitly (malloc_trim) after every session.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("migbed.malloc")

M_TRIM_THRESHOLD = -1  # <malloc.h>
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 << 20  # DEFAULT_MMAP_THRESHOLD_MAX on 64-bit glibc
TRIM_THRESHOLD_BYTES = 64 << 20


def keep_stream_buffers_mapped(mmap_threshold: int = MMAP_THRESHOLD_BYTES,
                               trim_threshold: int = TRIM_THRESHOLD_BYTES) -> bool:
    """Set the two thresholds (see the module doc); False where there is no glibc mallopt
    (musl, macOS): the process runs as before, only slower on a busy stream."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name)
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        log.info("no mallopt in %s: malloc thresholds left as they are", name)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(
        mallopt(M_TRIM_THRESHOLD, trim_threshold))
    if not ok:
        log.info("mallopt refused the thresholds: malloc left as it is")
    return ok
