"""Reading a session's main stream, its one reader. Deadlines live here, apart from what
each message means (session.py and the parts it dispatches to).

The main stream has exactly one reader, as QEMU's incoming migration coroutine: it reads a
message, handles it to the end (a device load included) and only then reads the next. The
source's silence is measured only while the reader waits for a message, so time the target
spends loading is never taken for a silent source; the transport's flow-control window is
the only buffer between the two, so a stalled reader stalls the source.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TypeVar

from migbed.core import limits as lim
from migbed.runtime.tcpstate import peer_window
from migbed.wire import migration_pb2 as pb
from migbed.wire.errors import ProtocolError

from .session import TargetSession

DEFAULT_HEARTBEAT_S = 3.0  # a source that does not say (heartbeat_timeout_s = 0)
T = TypeVar("T")


async def first_message(messages: AsyncIterator[T], what: str) -> T | None:
    """A stream's first message, within the setup deadline (None: closed at once)."""
    try:
        async with asyncio.timeout(lim.SETUP_DEADLINE_S):
            return await anext(messages)
    except StopAsyncIteration:
        return None
    except TimeoutError:
        raise ProtocolError("DEADLINE_EXCEEDED", f"{what}: nothing received for "
                            f"{lim.SETUP_DEADLINE_S:g}s after the stream opened") from None


class MainStream:
    """The main stream's reader for one session."""

    def __init__(self, session: TargetSession, messages: AsyncIterator[pb.SourceMessage],
                 idle_timeout_s: float, peer: str = "") -> None:
        self.session = session
        self.messages = messages
        self.peer = peer  # gRPC's context.peer(): where the kernel's view of the link is found
        self.silence_s = session.setup.heartbeat_timeout_s or DEFAULT_HEARTBEAT_S
        self.idle_timeout_s = idle_timeout_s
        self._last_data = time.monotonic()
        self._verifying: asyncio.Task[None] | None = None

    async def read(self) -> None:
        """Until the stream ends; whatever goes wrong ends the session with its error."""
        s = self.session
        try:
            while (msg := await self._next()) is not None:
                if msg.WhichOneof("body") == "digests" and s.completed:
                    self._verify(msg)  # pings are answered while the digests are taken
                    continue
                await s.handle(msg)
            if self._verifying is not None:
                await self._verifying
            if not s.completed:
                raise ProtocolError("CANCELLED", "the source closed the stream before completing")
        except asyncio.CancelledError:
            raise
        except Exception as e:
            s.fail(e)
        finally:
            if self._verifying is not None:
                self._verifying.cancel()

    def _verify(self, msg: pb.SourceMessage) -> None:
        if self._verifying is not None:
            raise ProtocolError("FAILED_PRECONDITION", "digests twice")

        async def verify() -> None:
            try:
                await self.session.handle(msg)
            except Exception as e:
                self.session.fail(e)

        self._verifying = asyncio.get_running_loop().create_task(verify())

    async def _next(self) -> pb.SourceMessage | None:
        try:
            async with asyncio.timeout(self.silence_s):
                msg = await anext(self.messages)
        except StopAsyncIteration:
            return None
        except TimeoutError:
            raise ProtocolError("DEADLINE_EXCEEDED", self._silence()) from None
        if msg.WhichOneof("body") != "ping":
            self._last_data = time.monotonic()
        else:
            self._check_idle()
        return msg

    def _silence(self) -> str:
        """Why nothing came, as far as this side can tell: a source that does not read the
        return path cannot send either (runtime/tcpstate.py), though it believes it does."""
        text = f"the source sent nothing for {self.silence_s:g}s (setup.heartbeat_timeout_s)"
        queue = peer_window(self.peer) if self.peer else None
        if queue is not None and queue.peer_not_reading:
            text += (f": it has not taken the target's last {queue.unacked_bytes} bytes (its "
                     "TCP receive window is full: it does not read the return path), so the "
                     "flow-control credit it needs to send more cannot reach it either")
        return text

    def _check_idle(self) -> None:
        """Pings alone do not hold a session: something must move now and then."""
        last = max(self._last_data, self.session.last_device_activity())
        if time.monotonic() - last > self.idle_timeout_s:
            raise ProtocolError("DEADLINE_EXCEEDED", f"the source sent only pings for "
                                f"{self.idle_timeout_s:g}s (the target's --idle-timeout)")
