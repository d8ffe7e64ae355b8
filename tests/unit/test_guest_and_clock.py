"""Guest memory (dirty log, integrity, snapshot digest), workload and clock offset."""

import numpy as np

from migbed.core.clock import OffsetEstimator
from migbed.core.guest import GuestMemory
from migbed.core.workload import guest_workload


def test_dirty_log_records_writes_only_while_logging() -> None:
    m = GuestMemory(1 << 20, 4096, seed=3)
    m.write_pages(np.array([1]))
    m.start_dirty_log()
    m.write_pages(np.array([5, 7, 5]))
    log = m.sync_dirty_log()
    assert np.flatnonzero(log).tolist() == [5, 7]
    assert not m.sync_dirty_log().any()  # sync clears


def test_pages_self_check_and_transfer_preserves_digest() -> None:
    src = GuestMemory(2 << 20, 4096, seed=9)
    src.write_pages(np.array([0, 1, 2, 2]))
    assert src.check_integrity() == []
    dst = GuestMemory(2 << 20, 4096, seed=9, fill=False)
    idx = np.arange(src.pages)
    dst.store_pages(idx, src.read_pages(idx))
    assert dst.digest() == src.digest() and dst.check_integrity() == []
    src.ram[3, 100] ^= 0xFF  # a flipped byte is caught
    assert src.check_integrity() == [3]


def test_snapshot_digest_is_the_state_at_resume() -> None:
    m = GuestMemory(1 << 20, 4096, seed=1)
    before = m.digest()
    m.begin_snapshot()
    m.write_pages(np.array([0, 10, 255]))
    assert m.digest() != before
    assert m.snapshot_digest() == before


def test_working_set_confines_writes() -> None:
    wl = guest_workload(64 << 20, 4096, 32 << 20, 4 << 20, False, seed=1)
    idx = np.concatenate([wl.next(0.001) for _ in range(1000)])
    assert idx.size == 8192  # 32 MiB/s for 1 s in 4 KiB pages, fractions carried
    assert idx.max() < 1024


def test_offset_estimate_prefers_the_shortest_round_trip() -> None:
    e = OffsetEstimator(same_clock=False)
    e.add(1_000, 5_000_600, 2_000)  # rtt 1000, offset 5_000_600 - 1500
    e.add(10_000, 5_010_100, 10_200)  # rtt 200: the better sample
    est = e.estimate()
    assert est.offset_ns == 5_010_100 - 10_100 and est.uncertainty_ns == 100
    assert OffsetEstimator(same_clock=True).estimate().offset_ns == 0
