"""multifd syncs once per pass over RAM (QEMU 10.0: find_dirty_block ->
multifd_ram_sync_per_round -> multifd_ram_flush_and_sync), not at every bitmap sync: the
source engine's RAM paths against a transport that records what it is asked to do."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import numpy as np

from migbed.core.estimator import Estimator
from migbed.core.guest import GuestMemory
from migbed.services.source.counters import Counters
from migbed.services.source.precopy import Precopy
from migbed.services.source.scanner import PageScanner
from migbed.services.source.switchover import Switchover
from migbed.services.source.transport import send_scan

PAGES = 256


class RecordingRam:
    """A RamTransport that keeps the order of pages and syncs."""

    def __init__(self) -> None:
        self.ops: list[str | list[int]] = []
        self.pages_sent = 0
        self.batch_bytes = 1 << 20

    async def send(self, pages: np.ndarray) -> int:
        self.ops.append(pages.tolist())
        self.pages_sent += pages.size
        return int(pages.size) * 4096

    async def round_done(self) -> None:
        self.ops.append("sync")

    @property
    def syncs(self) -> int:
        return self.ops.count("sync")


async def _no_report(ram_bytes: int) -> float:
    return 0.0


def parts(ram: RecordingRam) -> SimpleNamespace:
    """What the RAM paths touch; no devices (a device's dirty-page tracker reports nothing)."""
    mem = GuestMemory(PAGES * 4096, 4096, seed=3)
    scanner = PageScanner(mem)
    scanner.start()
    return SimpleNamespace(scanner=scanner, ram=ram, memory=mem, counters=Counters(),
                           estimator=Estimator(0.3, 0.0), guest=SimpleNamespace(devices=[]),
                           devices=SimpleNamespace(vfio=[], tracker_report=_no_report),
                           scenario=SimpleNamespace(guest=SimpleNamespace(ram_size=mem.pages * 4096)),
                           check=lambda: None)


def test_an_exact_pending_syncs_the_bitmap_but_not_the_channels() -> None:
    ram = RecordingRam()
    p = parts(ram)
    pre = Precopy.__new__(Precopy)
    pre.p = p  # only _pending_exact is exercised: it needs the scanner, estimator, devices
    before = p.scanner.dirty_sync_count
    asyncio.run(pre._pending_exact())
    asyncio.run(pre._pending_exact())
    assert p.scanner.dirty_sync_count == before + 2
    assert ram.syncs == 0


def test_a_pass_syncs_where_it_passes_the_end_of_ram() -> None:
    ram = RecordingRam()
    p = parts(ram)

    async def walk() -> None:
        await send_scan(ram, p.scanner.take(200))  # 0..199: no end of RAM yet
        p.memory.write_pages(np.array([10, 220]))
        p.scanner.sync()  # a bitmap sync mid-pass: no channel sync
        await send_scan(ram, p.scanner.take(200))  # 200..255 (220 once), wrap, 10

    asyncio.run(walk())
    assert ram.ops == [list(range(200)), list(range(200, 256)), "sync", [10]]


def test_the_final_copy_ends_with_a_sync_after_its_last_page() -> None:
    ram = RecordingRam()
    p = parts(ram)

    async def final() -> None:
        await send_scan(ram, p.scanner.take(100))
        p.memory.write_pages(np.array([5, 150]))
        p.scanner.final_sync()
        so = Switchover.__new__(Switchover)
        so.p = p
        await so._send_ram()

    asyncio.run(final())
    *_, last_pages, last = ram.ops
    assert last == "sync" and isinstance(last_pages, list)
    sent = [x for op in ram.ops if op != "sync" for x in op]
    assert sorted(sent) == sorted([*range(PAGES), 5])  # 5 again, after the wrap
    assert ram.syncs == p.scanner.passes
    # Nothing sent before the sync that ends a pass is sent again after it in the same pass.
    first_sync = ram.ops.index("sync")
    before = [x for op in ram.ops[:first_sync] for x in op]
    assert len(before) == len(set(before))
