"""How RAM pages travel: the seam between choosing pages and moving their bytes.

QEMU sends pages either inline on the main channel or, with multifd, in packets on N
channels beside it, ending each pass over RAM with a sync so the destination knows the
pass's pages have landed (multifd_ram_sync_per_round). The phases only call
`send_scan(ram, scan)` (the pages of a bitmap search, with a `round_done()` where the search
passed the end of RAM); which transport runs is decided once, at setup.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Protocol

import numpy as np

from migbed.core.guest import GuestMemory
from migbed.dataplane import MultifdError, MultifdSender
from migbed.dataplane import packet as pk
from migbed.dataplane.sender import DEFAULT_BURST_BYTES
from migbed.wire import migration_pb2 as pb
from migbed.wire.channel import CHUNK_BYTES
from migbed.wire.encode import encode_ram_pages

from .failure import MigrationFailed
from .link import SETUP_TIMEOUT_S, Link
from .scanner import Scan


class RamTransport(Protocol):
    pages_sent: int
    batch_bytes: int  # how much RAM one send() should carry (what a bitmap search takes)

    async def send(self, pages: np.ndarray) -> int:
        """Send these pages (indices, in order); returns the bytes sent."""

    async def round_done(self) -> None:
        """A pass over RAM ended: make its pages land before any of the next pass."""

    def check(self) -> None:
        """Raise MigrationFailed if the transport has failed."""

    def stats(self) -> tuple[list[int], list[int], list[int]]:
        """Per channel: bytes, packets, and of the bytes device state (empty without
        channels)."""

    def close(self, completed: bool) -> None: ...


async def send_scan(ram: RamTransport, scan: Scan) -> int:
    """Send what one bitmap search took; returns the bytes. Where the search passed the end
    of RAM a pass ended, and the channels sync there, between the two passes' pages
    (find_dirty_block -> multifd_ram_flush_and_sync)."""
    cut = scan.pages.size if scan.wrap_at is None else scan.wrap_at
    sent = await ram.send(scan.pages[:cut]) if cut else 0
    if scan.wrap_at is not None:
        await ram.round_done()
    if cut < scan.pages.size:
        sent += await ram.send(scan.pages[cut:])
    return sent


class MainChannelRam:
    """Pages inline on the main stream: one RamPages message per chunk."""

    def __init__(self, link: Link, memory: GuestMemory) -> None:
        self.link = link
        self.memory = memory
        self.pages_sent = 0
        self.batch_bytes = CHUNK_BYTES  # one RamPages message

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

    def stats(self) -> tuple[list[int], list[int], list[int]]:
        return [], [], []

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
        # A burst for every channel per search: the engine's loop (search, submit, count)
        # runs once per few MiB, not once per packet.
        self.batch_bytes = DEFAULT_BURST_BYTES * channels
        self.generation = 0

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
        # Every pass ends with a sync, even one that sent nothing: QEMU's
        # multifd_ram_flush_and_sync sends the SYNCs and RAM_SAVE_FLAG_MULTIFD_FLUSH anyway.
        self.generation += 1
        try:
            # The sender's own count of pages written before this SYNC (it sends a page
            # given twice in one batch once): the number the target checks exactly.
            sent = await self.sender.sync(self.generation, self.heartbeat_s)
        except (MultifdError, TimeoutError) as e:
            raise MigrationFailed(f"multifd: {e}") from None
        await self.link.write(pb.SourceMessage(multifd_sync=pb.MultifdSync(
            generation=self.generation, pages_sent=sent)))

    async def send_device_state(self, ds: pk.DeviceState, data: bytes) -> None:
        """One packet of a device's state on the channels, beside the RAM (QEMU 10.0's
        multifd_queue_device_state)."""
        try:
            await self.sender.submit_device_state(ds, data)
        except MultifdError as e:
            raise MigrationFailed(f"multifd: {e}") from None

    def check(self) -> None:
        err = self.sender.error
        if err is not None:
            raise MigrationFailed(f"multifd: {err}")

    def stats(self) -> tuple[list[int], list[int], list[int]]:
        st = self.sender.stats()
        return [s.bytes for s in st], [s.packets for s in st], [s.device_bytes for s in st]

    def close(self, completed: bool) -> None:
        # A failed or cancelled run drops what is queued; a completed one has sent it all.
        self.sender.close(abort=not completed)
