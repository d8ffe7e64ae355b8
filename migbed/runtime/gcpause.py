"""No Python garbage collection inside a downtime.

QEMU has no collector; a migbed service has Python's, and a full collection over a busy
service's heap takes milliseconds that would land in the measured downtime (perf showed
gc_collect_main in both services' profiles around the stop). Each side pauses automatic
collection from its stop until its part of the downtime is over; the pause is counted so
that overlapping migrations in one process (a target serves several) resume collection
only when the last one is done. Memory is not at risk: a downtime lasts milliseconds to
seconds, and reference counting still frees everything that is not in a cycle.
"""

from __future__ import annotations

import gc
import threading


class DowntimeGcPause:
    """A counted pause of gc's automatic collections (one process, many migrations)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 0
        self._was_enabled = True

    def hold(self) -> None:
        with self._lock:
            if self._holders == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._holders += 1

    def release(self) -> None:
        with self._lock:
            if self._holders == 0:
                return  # released twice (a failure path and the normal end): harmless
            self._holders -= 1
            if self._holders == 0 and self._was_enabled:
                gc.enable()

    @property
    def holders(self) -> int:
        return self._holders


DOWNTIME_GC_PAUSE = DowntimeGcPause()  # the process's one pause
