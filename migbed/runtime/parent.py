"""A service that dies with the orchestrator that started it.

`migbed run`, `sweep` and `evacuate` start their own source and target services. When the
orchestrator is killed outright (SIGKILL, the OOM killer) it cannot stop them, and they
would run on, re-parented to PID 1, holding ports, guests and memory. Started with
`--exit-with-parent PID`, a service watches its parent and, once it is gone, stops as on
SIGTERM: its runs are cancelled (the source restarts each guest, as QEMU does on a
cancelled migration), the target's sessions closed and their memory freed.

How it knows at once: the kernel sends it PARENT_DEATH_SIGNAL when the parent dies
(prctl(PR_SET_PDEATHSIG), Linux). That signal is tied to the parent *thread* that forked
us, not the process: when a killed orchestrator's threads die one by one, it can come
while getppid() still names the orchestrator (we were handed to one of its threads still
alive). So the signal only wakes the watcher, which then waits for getppid() to change;
a signal from a thread that ended while the orchestrator lives on stops nothing. The same
watcher polls getppid() every POLL_S as the second guard (another OS has no prctl). A
dedicated signal, not SIGTERM: a SIGTERM is the orchestrator stopping us on purpose.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import signal

log = logging.getLogger("migbed.parent")

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
PARENT_DEATH_SIGNAL = signal.SIGUSR2
POLL_S = 0.5
SETTLE_S = 2.0  # after the death signal: how long the orchestrator's last threads take to die
SETTLE_POLL_S = 0.02


def _set_death_signal(sig: int) -> bool:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return bool(libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


class ParentWatch:
    """This process's tie to the orchestrator process `parent_pid` that started it."""

    def __init__(self, parent_pid: int) -> None:
        self.parent_pid = parent_pid
        self.armed = False
        self._signalled = asyncio.Event()

    def arm(self, loop: asyncio.AbstractEventLoop) -> None:
        """PARENT_DEATH_SIGNAL when the parent (thread) dies wakes `wait_gone`."""
        loop.add_signal_handler(PARENT_DEATH_SIGNAL, self._signalled.set)
        self.armed = _set_death_signal(PARENT_DEATH_SIGNAL)
        if not self.armed:
            log.warning("no parent-death signal here (prctl failed): polling the parent")

    def gone(self) -> bool:
        return os.getppid() != self.parent_pid

    async def wait_gone(self) -> None:
        """Returns once the parent process is gone (it may already be: it could die between
        our fork and the prctl, when no death signal was set yet)."""
        while not self.gone():
            try:
                await asyncio.wait_for(self._signalled.wait(), POLL_S)
            except TimeoutError:
                continue
            self._signalled.clear()
            for _ in range(int(SETTLE_S / SETTLE_POLL_S)):
                if self.gone():
                    return
                await asyncio.sleep(SETTLE_POLL_S)

    def reason(self) -> str:
        """Why the runs stop, in the records they leave."""
        return (f"the orchestrator (pid {self.parent_pid}) that started this service died "
                "without stopping it")
