"""The target service: gRPC in, sessions out. A thin shell.

Admission and lookup are the registry's (registry.py), reading and deadlines the streams'
(stream.py), what each message means the session's (session.py and its parts). Each
Migrate stream is one session; a bad stream ends with its own status without disturbing
the others.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

import grpc

from migbed import __version__
from migbed.core import limits as lim
from migbed.core.clock import boot_id
from migbed.dataplane.receiver import MultifdListener
from migbed.wire import migration_pb2 as pb
from migbed.wire import migration_pb2_grpc as pbg
from migbed.wire.errors import ProtocolError

from .registry import SessionRegistry, default_memory_budget, return_memory
from .session import TargetSession
from .stream import DEFAULT_HEARTBEAT_S, MainStream, first_message

log = logging.getLogger("migbed.target")
MEMORY_RETURN_DELAY_S = 0.5  # a closed session's cancelled tasks finish first


class TargetService(pbg.MigrationServicer, pbg.ControlServicer):
    def __init__(self, metrics: Any = None, max_sessions: int = 16,
                 memory_budget: int | None = None,
                 idle_timeout_s: float = lim.DEFAULT_IDLE_TIMEOUT_S,
                 multifd: MultifdListener | None = None) -> None:
        self.metrics = metrics
        budget = default_memory_budget() if memory_budget is None else memory_budget
        self.registry = SessionRegistry(max_sessions, budget)
        self.idle_timeout_s = idle_timeout_s
        self.multifd = multifd  # where multifd channels connect (one for every session)
        log.info("memory budget %.2f GiB, at most %d sessions", budget / 2**30, max_sessions)

    @property
    def sessions(self) -> dict[str, TargetSession]:
        return self.registry.sessions

    async def Migrate(
        self, request_iterator: AsyncIterator[pb.SourceMessage], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.TargetMessage]:
        session: TargetSession | None = None
        reader: asyncio.Task[None] | None = None
        try:
            first = await first_message(aiter(request_iterator), "setup")
            if first is None:
                return
            if first.WhichOneof("body") != "setup":
                raise ProtocolError("FAILED_PRECONDITION", "the first message must be setup, "
                                    f"got {first.WhichOneof('body')}")
            session = self.registry.open(first.setup, lambda s: TargetSession(s, self.metrics))
            self._on_session(session.scenario, "started")
            await session.prepare()  # RAM resident before SetupAccepted
            session.start(self._accepted(session))
            stream = MainStream(session, aiter(request_iterator), self.idle_timeout_s,
                                context.peer())
            reader = asyncio.get_running_loop().create_task(stream.read())
            while (out := await session.outbox.get()) is not None:
                yield out
            session.check_failed()
        except ProtocolError as e:
            if session is not None:
                session.close("failed")
            log.warning("migration refused: %s", e)
            await context.abort(e.status, lim.clip(e.message))
        finally:
            if reader is not None and not reader.done():
                reader.cancel()
            if session is not None:
                self._end(session)

    def _accepted(self, session: TargetSession) -> pb.SetupAccepted:
        """What SetupAccepted says beyond the session: where multifd channels connect."""
        accepted = pb.SetupAccepted()
        n = session.setup.multifd_channels
        if n and self.multifd is not None:
            token = os.urandom(16)
            # QEMU 10.0's multifd device state: every device's stop-copy state comes on
            # these channels too, each device buffering a bounded window of it.
            devices = len(session.devices) if session.parts.multifd_device_state else 0
            mf = self.multifd.register(token, session.memory.ram, n, session.memory.page_size,
                                       session.setup.heartbeat_timeout_s or DEFAULT_HEARTBEAT_S,
                                       devices=devices)
            session.ram.attach_multifd(mf)
            accepted.multifd_port, accepted.multifd_token = self.multifd.port, token
        elif n:
            raise ProtocolError("FAILED_PRECONDITION", f"setup.multifd_channels = {n}: this "
                                "target serves no multifd channels")
        return accepted

    def _end(self, session: TargetSession) -> None:
        # Always (close is idempotent): a stream cut while the resumed guest runs its grace
        # period ends with the result already "verified", and its vCPU thread and tasks
        # would otherwise run on for the life of the process.
        if session.result == "running" and not session.cancel_reason:
            session.cancel_reason = "the migration stream was cut (the source went away)"
        session.close("cancelled" if session.result == "running" else session.result)
        self.registry.release(session)
        self._on_session(session.scenario, session.result)
        # A session's tasks and callbacks form reference cycles: without a collection its
        # guest RAM (GiBs) stays resident until Python's GC happens to run.
        asyncio.get_running_loop().call_later(MEMORY_RETURN_DELAY_S, return_memory)

    def _on_session(self, scenario: str, state: str) -> None:
        if self.metrics is not None:
            self.metrics.on_session(scenario, state)

    async def shutdown(self) -> None:
        """SIGTERM: every session stops now (a prefault too) and gives its memory back."""
        self.registry.close_all("cancelled")
        if self.multifd is not None:
            self.multifd.close()
        await asyncio.sleep(0)
        return_memory()

    # ------------------------------------------------------------ control

    async def Status(self, request: pb.StatusRequest, context: grpc.aio.ServicerContext) -> pb.StatusReply:
        return pb.StatusReply(role="target", protocol_version=pb.PROTOCOL_VERSION_1,
                              sessions=sorted(self.sessions), boot_id=boot_id(),
                              migbed_version=__version__)

    async def Cancel(self, request: pb.CancelRequest, context: grpc.aio.ServicerContext) -> pb.CancelReply:
        s = self.registry.get(request.run_id)
        ended = self.registry.ended.get(request.run_id)
        if s is None and ended is not None:  # too late: say how it ended, and why
            return pb.CancelReply(cancelled=False, state=ended)
        if s is None:
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                lim.clip(f"no session {request.run_id!r} on this target"))
        assert s is not None
        if s.result != "running":  # too late: say what it is
            return pb.CancelReply(cancelled=False, state=s.result)
        s.cancel_reason = request.reason[:200]
        s.close("cancelled")
        return pb.CancelReply(cancelled=True, state="cancelled")

    async def Start(self, request: pb.StartRequest, context: grpc.aio.ServicerContext) -> pb.StartReply:
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                            "this is a target: start migrations on the source")
        raise AssertionError

    async def Watch(self, request: pb.WatchRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[pb.WatchEvent]:
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                            "this is a target: watch migrations on the source")
        yield pb.WatchEvent()
