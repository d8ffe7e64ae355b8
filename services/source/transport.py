"""How RAM pages travel: the seam between choosing pages and moving their bytes.

QEMU sends pages either inline on the main channel or, with multifd, in packets on N
channels beside it, ending each dirty-bitmap round with a sync so the destination knows
the round's pages have landed. The phases only call `send(pages)` and `round_done()`;
which transport runs is decided once, at setup.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Protocol

import numpy as np

from migbed.core.guest import GuestMemory
from migbed.dataplane import MultifdError, MultifdSender
from migbed.wire import migration_pb2 as pb
from migbed.wire.encode import encode_ram_pages

from .failure import MigrationFailed
from .link import SETUP_TIMEOUT_S, Link


class RamTransport(Protocol):
    pages_sent: int

    async def send(self, pages: np.ndarray) -> int:
        """Send these pages (indices, in order); returns the bytes sent."""

    async def round_done(self) -> None:
        """A dirty-bitmap round ended (or the final copy did): make its pages land first."""

    def check(self) -> None:
        """Raise MigrationFailed if the transport has failed."""

    def stats(self) -> tuple[list[int], list[int]]:
        """Per channel: bytes and packets (empty without channels)."""

    def close(self, completed: bool) -> None: ...


class MainChannelRam:
    """Pages inline on the main stream: one RamPages message per chunk."""

    def __init__(self, link: Link, memory: GuestMemory) -> None:
        self.link = link
        self.memory = memory
        self.pages_sent = 0

    async def send(self, pages: np.ndarray) -> int:
        # Encoded by hand: the page bytes are copied once, straight from guest RAM.
        data = self.memory.page_bytes(pages)
        await self.link.write(encode_ram_pages(pages, data))
        self.pages_sent += int(pages.size)
        return data.nbytes

    async def round_done(self) -> None:
        return None  # one ordered stream: what was written before is ahead of what follows

    def check(self) -> None:
        return None

    def stats(self) -> tuple[list[int], list[int]]:
        return [], []

    def close(self, completed: bool) -> None:
        return None


class MultifdRam:
    """Pages on N multifd channels beside the main stream (migbed.dataplane).

    The engine's limiter budgets bytes across all channels together (max-bandwidth is one
    budget in QEMU too). A round ends with QEMU's multifd_send_sync_main: every channel
    writes a SYNC behind the round's pages, then MultifdSync goes on the main stream, so the
    target reads the main stream no further until its channels have delivered the round.
    """

    def __init__(self, link: Link, memory: GuestMemory, host: str, port: int, token: bytes,
                 channels: int, heartbeat_s: float,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.link = link
        self.page_size = memory.page_size
        self.heartbeat_s = heartbeat_s
        self.sender = MultifdSender(host, port, token, channels, memory.ram, ssl_context,
                                    heartbeat_timeout_s=heartbeat_s)
        self.pages_sent = 0
        self.generation = 0
        self._synced_pages = 0

    async def connect(self) -> None:
        try:
            await asyncio.to_thread(self.sender.connect, SETUP_TIMEOUT_S)
        except (MultifdError, OSError) as e:
            raise MigrationFailed(f"multifd: {e}") from None

    async def send(self, pages: np.ndarray) -> int:
        try:
            await self.sender.submit_async(pages)
        except MultifdError as e:
            raise MigrationFailed(f"multifd: {e}") from None
        self.pages_sent += int(pages.size)
        return int(pages.size) * self.page_size

    async def round_done(self) -> None:
        if self.pages_sent == self._synced_pages and self.generation:
            return  # nothing sent since the last sync
        self.generation += 1
        try:
            # The sender's own count of pages written before this SYNC (it sends a page
            # given twice in one batch once): the number the target checks exactly.
            sent = await self.sender.sync(self.generation, self.heartbeat_s)
        except (MultifdError, TimeoutError) as e:
            raise MigrationFailed(f"multifd: {e}") from None
        self._synced_pages = self.pages_sent
        await self.link.write(pb.SourceMessage(multifd_sync=pb.MultifdSync(
            generation=self.generation, pages_sent=sent)))

    def check(self) -> None:
        err = self.sender.error
        if err is not None:
            raise MigrationFailed(f"multifd: {err}")

    def stats(self) -> tuple[list[int], list[int]]:
        st = self.sender.stats()
        return [s.bytes for s in st], [s.packets for s in st]

    def close(self, completed: bool) -> None:
        # A failed or cancelled run drops what is queued; a completed one has sent it all.
        self.sender.close(abort=not completed)
