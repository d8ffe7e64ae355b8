"""How RAM pages travel: the seam between choosing pages and moving their bytes.

QEMU sends pages either inline on the main channel or, with multifd, in packets on N
channels beside it, ending each dirty-bitmap round with a sync so the destination knows
the round's pages have landed. The phases only call `send(pages)` and `round_done()`;
which transport runs is decided once, at setup.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from migbed.core.guest import GuestMemory
from migbed.wire.encode import encode_ram_pages
from services.source.link import Link


class RamTransport(Protocol):
    pages_sent: int

    async def send(self, pages: np.ndarray) -> int:
        """Send these pages (indices, in order); returns the bytes sent."""

    async def round_done(self) -> None:
        """A dirty-bitmap round ended (or the final copy did): make its pages land first."""

    def check(self) -> None:
        """Raise MigrationFailed if the transport has failed."""

    def close(self) -> None: ...


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

    def close(self) -> None:
        return None
