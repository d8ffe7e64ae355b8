"""The guest's vCPU: a thread that ticks every period, runs the workload and records when.

Its tick timestamps are the guest's progress as the guest itself sees it: guest-visible
downtime is the gap between the last tick on the source and the first on the target
(QEMU's guestperf does the same with a workload that prints its progress). Shared by the
source (the guest before migration) and the target (the guest after resume).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import numpy as np

from migbed.core.clock import now_ns
from migbed.core.guest import GuestMemory
from migbed.core.workload import Workload

DeviceDirtier = tuple[Callable[[np.ndarray], None], Workload]


class VCpu:
    def __init__(
        self,
        memory: GuestMemory,
        workload: Workload,
        tick_s: float,
        devices: Sequence[DeviceDirtier] = (),
    ) -> None:
        self.memory = memory
        self.workload = workload
        self.tick_ns = int(tick_s * 1e9)
        self.devices = list(devices)
        self.first_tick_ns = 0
        self.last_tick_ns = 0
        self.ticks = 0
        self._stop = threading.Event()
        self._first = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self._stop.clear()
        self._first.clear()
        self.ticks = 0  # first_tick_ns is the first tick of this start
        self._thread = threading.Thread(target=self._run, name="vcpu", daemon=True)
        self._thread.start()

    def wait_first_tick(self, timeout: float) -> bool:
        return self._first.wait(timeout)

    def stop(self) -> int:
        """Pause the vCPU; returns the timestamp of its last tick."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        return self.last_tick_ns

    def _run(self) -> None:
        try:
            prev = now_ns()
            next_tick = prev
            while not self._stop.is_set():
                t = now_ns()
                dt = (t - prev) / 1e9
                prev = t
                self.memory.write_pages(self.workload.next(dt))
                for dirty, wl in self.devices:
                    dirty(wl.next(dt))
                stamp = now_ns()
                if self.ticks == 0:
                    self.first_tick_ns = stamp
                    self._first.set()
                self.last_tick_ns = stamp
                self.ticks += 1
                next_tick += self.tick_ns
                delay = next_tick - now_ns()
                if delay > 0:
                    time.sleep(delay / 1e9)
                elif delay < -50 * self.tick_ns:
                    next_tick = now_ns()  # fell far behind (host stall): don't burst to catch up
        except BaseException as e:  # surfaced by the owner; a dead vCPU must not go unnoticed
            self.error = e
            self._first.set()
