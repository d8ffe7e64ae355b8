"""The source engine's parts, one at a time, without a network."""

from __future__ import annotations

import asyncio
import time

import grpc
import numpy as np
import pytest

from migbed.core.clock import OffsetEstimate
from migbed.core.device import SourceDevice, VfioState
from migbed.core.guest import GuestMemory
from migbed.core.scenario import DeviceConfig
from migbed.measure.record import RunRecord
from migbed.services.source.counters import Counters
from migbed.services.source.devices import DeviceStreams
from migbed.services.source.failure import MigrationFailed
from migbed.services.source.link import Link, stall_note
from migbed.services.source.recorder import Recorder, StopCopyTimes, TargetTimes
from migbed.services.source.scanner import PageScanner


def test_scanner_counts_the_setup_sync_and_the_final_one() -> None:
    mem = GuestMemory(1 << 20, 4096, seed=1)
    sc = PageScanner(mem)
    sc.start()  # ram_init_bitmaps: every page dirty, then the first sync
    assert sc.dirty_sync_count == 1 and sc.dirty_pages == mem.pages
    first = sc.take(10)
    assert first.pages.tolist() == list(range(10)) and sc.dirty_pages == mem.pages - 10
    mem.write_pages(np.array([3, 4]))
    assert sc.sync() == (mem.pages - 10 + 2) * 4096  # the sync brings them back
    assert sc.dirty_sync_count == 2
    sc.final_sync()
    assert sc.dirty_sync_count == 3
    mem.write_pages(np.array([5]))  # logging is off after the final sync
    assert sc.sync() == sc.dirty_bytes and sc.dirty_pages == mem.pages - 8


def test_scanner_goes_round_ram_and_a_pass_ends_at_its_end() -> None:
    """QEMU's walk (ram_find_and_save_block / find_dirty_block): a bitmap sync leaves the
    cursor where it is; a pass ends where the walk passes the end of RAM (multifd syncs
    there: multifd_ram_sync_per_round), and a search that finds nothing all the way round
    gives up, ending a pass on its way."""
    mem = GuestMemory(64 * 4096, 4096, seed=1)
    sc = PageScanner(mem)
    sc.start()
    a = sc.take(40)
    assert a.pages.tolist() == list(range(40)) and a.wrap_at is None and not a.clean
    mem.write_pages(np.array([5, 50]))
    sc.sync()  # 5 is behind the cursor, 50 ahead of it
    b = sc.take(100)  # 40..63, then the end of RAM, then 5 (up to where it began)
    assert b.pages.tolist() == [*range(40, 64), 5] and b.wrap_at == 24 and not b.clean
    assert sc.passes == 1
    c = sc.take(100)  # nothing left: round RAM (a second pass ends on the way), give up
    assert c.pages.size == 0 and c.wrap_at == 0 and c.clean and sc.passes == 2
    d = sc.take(100)  # every search of an empty bitmap ends a pass (QEMU syncs each time)
    assert d.clean and sc.passes == 3
    # No page is taken twice in one pass: 5 was re-dirtied behind the cursor and waited
    # for the wrap; a page dirtied ahead of the cursor goes out in this pass once.
    assert sorted([*a.pages, *b.pages[:b.wrap_at]]) == list(range(64))


def test_scanner_takes_the_tail_then_gives_up_in_one_search() -> None:
    """The search that reaches the end of RAM with nothing after the wrap is the give-up:
    one pass boundary, not two (QEMU sends the last page, then its next search wraps and
    gives up)."""
    mem = GuestMemory(64 * 4096, 4096, seed=1)
    sc = PageScanner(mem)
    sc.start()
    sc.take(60)
    tail = sc.take(16)
    assert tail.pages.tolist() == [60, 61, 62, 63] and tail.wrap_at == 4 and tail.clean
    assert sc.passes == 1 and sc.cursor == 64


def test_scanner_dirty_pages_rate_refreshes_once_a_second() -> None:
    mem = GuestMemory(1 << 20, 4096, seed=1)
    sc = PageScanner(mem)
    sc.start()
    sc.take(mem.pages)  # everything sent
    mem.write_pages(np.arange(8))
    sc.sync()
    assert sc.dirty_pages_rate == 0.0  # < 1 s since the period began: not yet (QEMU)
    sc._period_start -= 2.0  # as if the period began 2 s ago
    mem.write_pages(np.arange(8, 12))
    sc.sync()
    assert sc.dirty_pages_rate == pytest.approx(12 / 2.0, rel=0.05)  # newly dirtied only


def test_recorder_parts_add_up_to_guest_downtime() -> None:
    rec = Recorder(RunRecord("r", "s", "legacy", 0, "running"), None, None)
    rec.start(return_path=True, qemu_version="10.0", device_state_transfer="main")
    stop = StopCopyTimes(last_tick_ns=1_000_000, stop_ns=1_400_000, last_byte_ns=51_400_000,
                         completion_ns=90_000_000, ram_sent_ns=31_400_000,
                         tracker_report_s=0.002)
    rec.stop_copy(stop)
    offset = 7_000_000_000  # the target's clock runs 7 s ahead
    target = TargetTimes(received_ns=52_000_000 + offset, loads_done_ns=85_000_000 + offset,
                         devices_running_ns=86_500_000 + offset,
                         first_tick_ns=88_000_000 + offset)
    rec.resumed(stop, target, OffsetEstimate(offset, 100_000, False, 5), tick_ns=1_000_000)
    r = rec.record
    assert r.downtime_ms == pytest.approx(88.6)
    assert r.guest_downtime_ms == pytest.approx(87.0)
    parts = r.stop_lag_ms + r.stop_copy_ms + r.delivery_ms + r.destination_load_ms + r.resume_ms
    assert parts == pytest.approx(r.guest_downtime_ms, abs=1e-9)
    assert (r.stop_copy_ms, r.destination_load_ms, r.resume_ms) == pytest.approx((50, 33, 3))
    assert r.guest_downtime_uncertainty_ms == pytest.approx(1.1)
    assert (r.ram_stop_copy_ms, r.tracker_report_ms) == pytest.approx((30.0, 2.0))
    assert r.device_resume_ms == pytest.approx(1.5)  # of resume_ms: vm_start's device arcs


def test_recorder_keeps_the_decisions_basis_beside_its_reason() -> None:
    rec = Recorder(RunRecord("r", "s", "time-aware", 0, "running"), None, None)
    rec.start(return_path=True, qemu_version="10.0", device_state_transfer="main")
    rec.decision("predicted downtime 80 ms fits 300 ms", "prediction", "", 0.05, 0.08, 0.2)
    r = rec.record
    assert (r.decision_reason, r.decision_basis, r.forced_by_cap) == (
        "predicted downtime 80 ms fits 300 ms", "prediction", "")
    assert r.predicted_downtime_ms == pytest.approx(80.0)
    assert r.events[-1].name == "decision" and r.events[-1].detail == r.decision_reason


def test_link_names_the_side_that_went_silent() -> None:
    async def check() -> None:
        link = Link("127.0.0.1:1", None, heartbeat_s=1.0, devices=0)
        link.phase = "precopy"
        now = time.monotonic()
        link.last_heard = now - 3.0
        link._last_tick = now  # this process ticked just now: the target is silent
        with pytest.raises(MigrationFailed, match=r"target 127\.0\.0\.1:1 silent for 3"):
            link.check_alive()
        link._last_tick = now - 3.0  # this process did not run for 3 s: it was frozen
        with pytest.raises(MigrationFailed, match=r"this source stalled for 3\.0s"):
            link.check_alive()
        link.last_heard = time.monotonic()  # a live return path: no failure
        link._stall_s = 0.0
        link._last_tick = time.monotonic()
        link.check_alive()

    asyncio.run(check())


def test_a_stall_of_ours_is_named_only_when_the_target_gave_up_on_silence() -> None:
    """Issue 23, item 7: after a SIGKILLed target (connection reset: UNAVAILABLE) a recent
    stall of this process is not the cause and is not mentioned; when the target ended the
    stream because the source was silent (DEADLINE_EXCEEDED), it is."""
    code = grpc.StatusCode
    assert stall_note(code.UNAVAILABLE, 1.8, 0.5, 1.0) == ""
    assert stall_note(None, 1.8, 0.5, 1.0) == ""
    assert "stalled for 1.8s" in stall_note(code.DEADLINE_EXCEEDED, 1.8, 0.5, 1.0)
    assert stall_note(code.DEADLINE_EXCEEDED, 0.1, 0.5, 1.0) == ""  # no real stall
    assert stall_note(code.DEADLINE_EXCEEDED, 1.8, 5.0, 1.0) == ""  # too long ago


class _FakeLink:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    async def write(self, msg: object) -> None:
        self.written.append(msg if isinstance(msg, bytes) else b"marker")


def _devices() -> list[SourceDevice]:
    devs = []
    for i in range(2):
        d = SourceDevice(DeviceConfig(f"vf{i}", initial_bytes=4 << 20, stop_copy_size=0,
                                      block_size=1 << 20), seed=i)
        d.set_state(VfioState.PRE_COPY)
        devs.append(d)
    return devs


def test_devices_never_hold_each_other_back() -> None:
    # Every device in PRE_COPY gets its read each pass, in every version: 8.1's
    # vfio_save_iterate returned 1 ("so following handlers will not be potentially
    # blocked"), and from 9.0 qemu_savevm_state_iterate no longer stops at a handler that
    # has not finished. (RAM held them back until 9.0: tests/integration.)
    devs = _devices()
    link = _FakeLink()
    streams = DeviceStreams(link, devs, Counters(), lambda name: None)  # type: ignore[arg-type]
    sent = asyncio.run(streams.send_precopy(lambda: 64 << 20, lambda n: None))
    assert sent == 2 << 20
    assert streams.next_seq == [1, 1]


class _Ram:
    def __init__(self, error: str) -> None:
        self.error = error

    def check(self) -> None:
        if self.error:
            raise MigrationFailed(self.error)


def _failed_with(ram_error: str, failure: MigrationFailed) -> str:
    from types import SimpleNamespace

    from migbed.services.source.engine import Migration

    fake = SimpleNamespace(parts=SimpleNamespace(ram=_Ram(ram_error)))
    return Migration._first_cause(fake, failure)


def test_a_dropped_multifd_channel_leads_the_failure_it_caused() -> None:
    # The target ends the main stream because a channel dropped; that end can reach the
    # source first as a bare transport error (CI saw "INTERNAL: Internal error from Core").
    bare = MigrationFailed("target refused or failed during precopy: INTERNAL: Internal error from Core")
    text = _failed_with("multifd: channel 1: connection lost", bare)
    assert text.startswith("multifd: channel 1: connection lost (then: target refused")
    named = MigrationFailed("target refused: UNAVAILABLE: multifd: channel 1: connection lost")
    assert _failed_with("multifd: channel 1: connection lost", named) == str(named)  # said once
    assert _failed_with("", bare) == str(bare)  # no channel error: as it was
    cancel = MigrationFailed("cancelled by the user", "cancelled")
    assert _failed_with("multifd: channel 1: connection lost", cancel) == "cancelled by the user"
