"""The RAM side of an incoming migration: pages on the main stream (RamPages), pages on the
multifd channels and the syncs that account for them (MultifdSync), bytes received."""

from __future__ import annotations

import numpy as np

from migbed.core import limits as lim
from migbed.dataplane.receiver import MultifdSession
from migbed.dataplane.sender import MultifdError
from migbed.wire import migration_pb2 as pb
from migbed.wire.channel import CHUNK_BYTES

from .parts import Parts
from .validate import refuse


def check_in_order(idx: np.ndarray) -> None:
    """RamPages.pages: "page indices, in order" (the proto), each once, as a multifd
    packet's (dataplane/packet.py): a repeated page would be stored twice and counted twice."""
    if idx.size > 1:
        steps = np.diff(idx)
        if bool((steps <= 0).any()):
            at = int(np.argmax(steps <= 0)) + 1
            what = "repeated" if int(idx[at]) == int(idx[at - 1]) else "out of order"
            raise refuse("INVALID_ARGUMENT", f"ram.pages: page {int(idx[at])} at index {at} is "
                         f"{what} (after page {int(idx[at - 1])}): strictly increasing, each "
                         "page once")


class RamReceiver:
    def __init__(self, parts: Parts) -> None:
        self.p = parts
        self.main_stream_pages = 0  # pages received in RamPages
        self.multifd: MultifdSession | None = None  # the channels, when multifd is on
        self._multifd_counted = 0  # pages the channels delivered, counted in bytes received
        self._multifd_generation = 0  # the last MultifdSync's generation

    def attach_multifd(self, channels: MultifdSession) -> None:
        """The session's multifd channels (a dataplane MultifdSession): RAM pages land in
        guest memory from their own threads; the main stream waits at each sync."""
        self.multifd = channels

    def pages_received(self) -> int:
        """Pages received so far, on the main stream and the channels."""
        return self.main_stream_pages + self._multifd_pages()

    def _multifd_pages(self) -> int:
        return int(self.multifd.pages_received) if self.multifd is not None else 0

    def check_channels(self) -> None:
        """Raise if a multifd channel was lost: that fails the migration at once, not at
        the next sync."""
        if self.multifd is not None and self.multifd.error is not None:
            raise refuse("UNAVAILABLE", f"multifd: {self.multifd.error}")

    def close(self) -> None:
        if self.multifd is not None:
            self.multifd.close()  # joins its channel threads: no page lands after this

    async def store(self, m: pb.RamPages) -> None:
        memory = self.p.memory
        n, ps = len(m.pages), memory.page_size
        if n == 0 or n * ps > CHUNK_BYTES * 4:
            raise refuse("INVALID_ARGUMENT", f"ram.pages: {n} pages; 1 to {CHUNK_BYTES * 4 // ps}")
        data = m.data  # each read of a bytes field copies it (1 MiB): read it once
        if len(data) != n * ps:
            raise refuse("INVALID_ARGUMENT",
                         f"ram.data: {len(data)} bytes for {n} pages of {ps} (truncated?)")
        idx = np.array(m.pages, dtype=np.int64)
        check_in_order(idx)
        if int(idx.max()) >= memory.pages:
            raise refuse("OUT_OF_RANGE",
                         f"ram.pages: page {int(idx.max())} beyond the guest's {memory.pages}")
        memory.store_pages(idx, data)
        self.main_stream_pages += n
        self.p.count_received("ram", len(data))

    async def sync(self, m: pb.MultifdSync) -> None:
        """QEMU's RAM_SAVE_FLAG_MULTIFD_FLUSH: read no further until every channel has
        delivered this generation's SYNC (all pages sent before it are in RAM)."""
        if self.multifd is None:
            raise refuse("FAILED_PRECONDITION", "multifd_sync: this session has no multifd "
                         "channels (setup.multifd_channels = 0)")
        if m.generation <= self._multifd_generation:
            raise refuse("INVALID_ARGUMENT", f"multifd_sync.generation = {m.generation} must "
                         f"be > the last one, {self._multifd_generation}")
        self._multifd_generation = m.generation
        silence = self.p.setup.heartbeat_timeout_s or lim.HEARTBEAT_TIMEOUT_S[1]
        try:
            # Pages the channels delivered before this generation's SYNC: exactly what the
            # source wrote before it, neither fewer (lost) nor more (stray pages in RAM).
            through = await self.multifd.wait_sync(m.generation, silence)
        except TimeoutError as e:
            raise refuse("DEADLINE_EXCEEDED",
                         f"multifd_sync.generation = {m.generation}: {e}") from None
        except MultifdError as e:  # a channel failed
            raise refuse("UNAVAILABLE", f"multifd channel failed: {e}") from None
        if through != m.pages_sent:
            raise refuse("DATA_LOSS", f"multifd_sync.pages_sent = {m.pages_sent}, the "
                         f"channels delivered {through} before this sync")
        got = self._multifd_pages()  # may include pages of the next round already
        self.p.count_received("ram", (got - self._multifd_counted) * self.p.memory.page_size)
        self._multifd_counted = got
