"""The target service: accepts migration streams and runs a TargetSession for each.

A thin shell: all the checking and loading is in session.py. Each stream is independent
(one session per stream, keyed by session_id), so several guests can migrate at once and
a bad stream ends with its own status without disturbing the others.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from migbed import __version__
from migbed.core.clock import boot_id
from migbed.wire import migration_pb2 as pb
from migbed.wire import migration_pb2_grpc as pbg
from migbed.wire.errors import ProtocolError
from services.target.session import TargetSession

log = logging.getLogger("migbed.target")
DEFAULT_HEARTBEAT_S = 3.0  # a source that does not say (heartbeat_timeout_s = 0)


class TargetService(pbg.MigrationServicer, pbg.ControlServicer):
    def __init__(self, metrics: Any = None, max_sessions: int = 16) -> None:
        self.sessions: dict[str, TargetSession] = {}
        self.metrics = metrics
        self.max_sessions = max_sessions

    async def Migrate(
        self, request_iterator: AsyncIterator[pb.SourceMessage], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.TargetMessage]:
        session: TargetSession | None = None
        reader: asyncio.Task[None] | None = None
        failure: list[ProtocolError] = []
        try:
            first = await anext(aiter(request_iterator), None)
            if first is None:
                return
            if first.WhichOneof("body") != "setup":
                raise ProtocolError("FAILED_PRECONDITION",
                                    f"the first message must be setup, got {first.WhichOneof('body')}")
            sid = first.setup.session_id
            if sid in self.sessions:
                raise ProtocolError("ALREADY_EXISTS", f"session {sid!r} is already migrating here")
            if len(self.sessions) >= self.max_sessions:
                raise ProtocolError("RESOURCE_EXHAUSTED",
                                    f"{len(self.sessions)} migrations running; at most {self.max_sessions}")
            session = TargetSession(first.setup, self.metrics)
            self.sessions[sid] = session
            self._on_session(first.setup.scenario, "started")
            await session.prepare()  # RAM resident before SetupAccepted
            session.start()

            # A source that goes silent (killed host, cut link: no RST ever comes) would hold
            # the session until TCP gives up, minutes later: its pings come every 100 ms.
            silence = first.setup.heartbeat_timeout_s or DEFAULT_HEARTBEAT_S
            inbox: asyncio.Queue[pb.SourceMessage | None] = asyncio.Queue()

            def fail(e: Exception) -> None:
                assert session is not None
                if not isinstance(e, ProtocolError):  # a bug or a broken stream: this session only
                    log.error("session %s", sid, exc_info=e)
                    e = ProtocolError("INTERNAL", f"{type(e).__name__}: {e}")
                failure.append(e)
                session.close("failed")

            async def work() -> None:
                # In stream order; final loads and digests may take seconds here.
                assert session is not None
                try:
                    while (msg := await inbox.get()) is not None:
                        await session.handle(msg)
                    if not session.completed:
                        raise ProtocolError("CANCELLED", "the source closed the stream before "
                                            "completing")
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    fail(e)

            async def read() -> None:
                # Never blocked by work(): pings are answered at once, so a target busy with
                # the final loads or digests is not mistaken for a dead one by the source.
                assert session is not None
                messages = aiter(request_iterator)
                worker = asyncio.get_running_loop().create_task(work())
                try:
                    while not worker.done():
                        try:
                            async with asyncio.timeout(silence):
                                msg = await anext(messages)
                        except StopAsyncIteration:
                            break
                        except TimeoutError:
                            raise ProtocolError("DEADLINE_EXCEEDED", f"the source sent nothing "
                                                f"for {silence:g}s (setup.heartbeat_timeout_s)"
                                                ) from None
                        if msg.WhichOneof("body") == "ping":
                            await session.handle(msg)
                        else:
                            inbox.put_nowait(msg)
                    inbox.put_nowait(None)
                    await worker
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    fail(e)
                finally:
                    worker.cancel()

            reader = asyncio.get_running_loop().create_task(read())
            while True:
                out = await session.outbox.get()
                if out is None:
                    break
                yield out
            if failure:
                raise failure[0]
            if session.result == "cancelled":  # by Control.Cancel here: tell the source so
                raise ProtocolError("ABORTED", f"session cancelled on the target: "
                                    f"{session.cancel_reason or 'no reason given'}")
        except ProtocolError as e:
            if session is not None:
                session.close("failed")
            log.warning("migration refused: %s", e)
            await context.abort(e.status, e.message)
        finally:
            if reader is not None and not reader.done():
                reader.cancel()
            if session is not None:
                # Always (close is idempotent): a stream cut while the resumed guest runs its
                # grace period ends with the result already "verified", and its vCPU thread
                # and tasks would otherwise run on for the life of the process.
                session.close("cancelled" if session.result == "running" else session.result)
                self.sessions.pop(session.session_id, None)
                self._on_session(session.setup.scenario, session.result)
                # A session's tasks and callbacks form reference cycles: without a collection
                # its guest RAM (GiBs) stays resident until Python's GC happens to run. Its
                # cancelled tasks finish first (on the next turns of the loop).
                session = None
                asyncio.get_running_loop().call_later(0.5, gc.collect)

    def _on_session(self, scenario: str, state: str) -> None:
        if self.metrics is not None:
            self.metrics.on_session(scenario, state)

    # ------------------------------------------------------------ control

    async def Status(self, request: pb.StatusRequest, context: grpc.aio.ServicerContext) -> pb.StatusReply:
        return pb.StatusReply(role="target", protocol_version=pb.PROTOCOL_VERSION_1,
                              sessions=sorted(self.sessions), boot_id=boot_id(),
                              migbed_version=__version__)

    async def Cancel(self, request: pb.CancelRequest, context: grpc.aio.ServicerContext) -> pb.CancelReply:
        s = self.sessions.get(request.run_id)
        if s is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no session {request.run_id!r} on this target")
        assert s is not None
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
