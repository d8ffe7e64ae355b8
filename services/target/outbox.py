"""The return path's queue: everything the target says to the source waits here for the
Migrate call to send it."""

from __future__ import annotations

import asyncio
import collections

from migbed.core import limits as lim
from migbed.wire import migration_pb2 as pb


class Outbox:
    """Bounded, so a source that never reads the return path cannot make the target grow;
    `None` from get() means the session is over."""

    def __init__(self, limit: int = lim.MAX_OUTBOX_MESSAGES) -> None:
        self._items: collections.deque[pb.TargetMessage] = collections.deque()
        self._ready = asyncio.Event()
        self._closed = False
        self.limit = limit
        self.overflowed = False

    def put(self, msg: pb.TargetMessage) -> None:
        if self._closed:
            return
        if len(self._items) >= self.limit:  # the source does not read: end the session
            self.overflowed = True
            self.close()
            return
        self._items.append(msg)
        self._ready.set()

    def close(self) -> None:
        self._closed = True
        self._ready.set()

    async def get(self) -> pb.TargetMessage | None:
        while not self._items:
            if self._closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    def drain(self) -> list[pb.TargetMessage]:
        out = list(self._items)
        self._items.clear()
        return out
