"""The target's sessions: admission (a count and a memory budget), lookup, release.

Every session is charged its guest RAM and device buffers against the budget *before*
anything is allocated; a Setup that does not fit is refused with RESOURCE_EXHAUSTED naming
the budget, what is in use and what was asked. The default budget is a share of the
memory the host (or the process's cgroup or address-space limit) has available at start.
"""

from __future__ import annotations

import collections
import gc
import logging
import resource
from collections.abc import Callable
from pathlib import Path

from migbed.core import limits as lim
from migbed.dataplane.packet import DEVICE_STATE_MAX_BYTES
from migbed.dataplane.reorder import DEFAULT_WINDOW as DEVICE_WINDOW
from migbed.runtime.malloc import give_back_free_memory
from migbed.wire import migration_pb2 as pb
from migbed.wire.errors import ProtocolError

from .session import TargetSession
from .validate import validate_setup

log = logging.getLogger("migbed.target")


def _meminfo_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def _cgroup_room() -> int | None:
    base = Path("/sys/fs/cgroup")
    try:
        limit = (base / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int((base / "memory.current").read_text())
    except (OSError, ValueError):
        return None


def _address_space_room() -> int | None:
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return soft - int(line.split()[1]) * 1024
    return soft


def default_memory_budget() -> int:
    """A safe share of what this process could still get: the host's MemAvailable, the
    cgroup's memory.max and RLIMIT_AS, whichever is tightest."""
    rooms = [r for r in (_meminfo_available(), _cgroup_room(), _address_space_room())
             if r is not None]
    return max(0, int(min(rooms) * lim.DEFAULT_MEMORY_SHARE))


def setup_bytes(s: pb.Setup) -> int:
    """Guest RAM and device state, and with multifd device state each device's window of
    buffered packets (migbed/dataplane/reorder.py: QEMU's buffers are unbounded, ours are
    charged here before anything is allocated)."""
    window = (DEVICE_WINDOW * DEVICE_STATE_MAX_BYTES
              if s.device_state_transfer == pb.DEVICE_STATE_TRANSFER_MULTIFD else 0)
    return lim.session_bytes(s.guest.ram_bytes, [
        d.initial_bytes + d.stop_copy_size + d.device_state_bytes + window for d in s.devices])


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


KEEP_ENDED = 256  # ended sessions remembered, for what the target reports of them


def how_it_ended(session: TargetSession) -> str:
    """One line: the session's result and why, as the target saw it."""
    why = (str(session.failure) if session.failure is not None
           else session.cancel_reason)
    return lim.clip(f"{session.result}: {why}" if why else session.result)


class SessionRegistry:
    def __init__(self, max_sessions: int, memory_budget: int) -> None:
        self.max_sessions = max_sessions
        self.memory_budget = memory_budget
        self.sessions: dict[str, TargetSession] = {}
        self._charged: dict[str, int] = {}
        # session id -> how it ended, the last KEEP_ENDED: an orchestrator whose source was
        # lost asks the target (Control.Cancel) and records what it says
        self.ended: collections.OrderedDict[str, str] = collections.OrderedDict()

    @property
    def in_use(self) -> int:
        return sum(self._charged.values())

    def open(self, setup: pb.Setup, make: Callable[[pb.Setup], TargetSession]) -> TargetSession:
        """Validate, admit (count, then memory), charge, and only then allocate."""
        validate_setup(setup)
        sid = setup.session_id
        if sid in self.sessions:
            raise ProtocolError("ALREADY_EXISTS", lim.clip(f"setup.session_id = {sid!r}: "
                                                           "already migrating here"))
        if len(self.sessions) >= self.max_sessions:
            raise ProtocolError("RESOURCE_EXHAUSTED", f"setup: {len(self.sessions)} migrations "
                                f"running here; at most {self.max_sessions} (--max-sessions)")
        need = setup_bytes(setup)
        if self.in_use + need > self.memory_budget:
            raise ProtocolError("RESOURCE_EXHAUSTED", (
                f"setup.guest.ram_bytes + device state: this session needs {_gib(need)}; the "
                f"target's memory budget is {_gib(self.memory_budget)} (--memory-budget) with "
                f"{_gib(self.in_use)} in use by {len(self.sessions)} session(s)"))
        self._charged[sid] = need
        try:
            session = make(setup)
        except MemoryError as e:
            del self._charged[sid]
            raise ProtocolError("RESOURCE_EXHAUSTED", f"setup.guest.ram_bytes: allocating "
                                f"{_gib(need)} failed ({type(e).__name__})") from None
        except BaseException:
            del self._charged[sid]
            raise
        self.sessions[sid] = session
        return session

    def get(self, session_id: str) -> TargetSession | None:
        return self.sessions.get(session_id)

    def release(self, session: TargetSession) -> None:
        if self.sessions.get(session.session_id) is session:
            del self.sessions[session.session_id]
            self._charged.pop(session.session_id, None)
            self.ended[session.session_id] = how_it_ended(session)
            self.ended.move_to_end(session.session_id)
            while len(self.ended) > KEEP_ENDED:
                self.ended.popitem(last=False)

    def close_all(self, result: str) -> None:
        """Shutdown: every session stops (a prefault in progress too)."""
        for s in list(self.sessions.values()):
            s.cancel_reason = s.cancel_reason or "the target is shutting down"
            s.close(result)


def return_memory() -> None:
    """Give freed session memory back to the system: collect the sessions' reference cycles,
    then hand every malloc arena's free memory back (runtime/malloc.py)."""
    gc.collect()
    give_back_free_memory()
