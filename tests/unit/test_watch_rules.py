"""The Control channel's liveness rules (migbed/core/watch.py) and the watcher's silence check
(experiments/controller.Liveness), without services: the services' side is tested on real
processes in tests/faults/test_watch_liveness.py."""

from __future__ import annotations

import math
import threading
import time

import pytest

from migbed.core.watch import (
    LOST_AFTER_MAX_S,
    LOST_AFTER_MIN_S,
    WatcherLedger,
    accepted_lost_after,
    check_watcher_grace,
    lost_after_s,
)
from migbed.experiments import controller
from migbed.experiments.controller import Liveness
from migbed.wire import migration_pb2 as pb


def test_the_bound_is_the_runs_heartbeat_timeout_plus_a_margin_with_a_floor() -> None:
    assert lost_after_s(10.0) == 15.0  # the default heartbeat-timeout
    assert lost_after_s(1.0) == LOST_AFTER_MIN_S
    assert lost_after_s(60.0) == 65.0


@pytest.mark.parametrize(("claimed", "used"), [
    (30.0, 30.0), (1.0, LOST_AFTER_MIN_S), (1e9, LOST_AFTER_MAX_S), (math.nan, LOST_AFTER_MIN_S),
    (math.inf, LOST_AFTER_MIN_S), (-5.0, LOST_AFTER_MIN_S)])
def test_a_sources_claim_is_bounded(claimed: float, used: float) -> None:
    assert accepted_lost_after(claimed) == used


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, 3601.0])
def test_a_watcher_grace_out_of_range_is_refused_naming_the_field(bad: float) -> None:
    with pytest.raises(ValueError, match=r"^watcher_grace_s: .* allowed 0 .* to 3600 s"):
        check_watcher_grace(bad)
    assert check_watcher_grace(0.0) == 0.0 and check_watcher_grace(10.0) == 10.0


def test_a_run_whose_watcher_vanished_is_cancelled_after_the_grace_once() -> None:
    led = WatcherLedger(grace_s=10.0, since=0.0)
    assert led.cancel_due(100.0) == ""  # never watched: not cancelled (its record is kept)
    led.attached()
    assert led.cancel_due(100.0) == ""
    led.detached(100.0, "ipv4:127.0.0.1:4242", delivered=False)
    assert led.cancel_due(109.9) == ""
    reason = led.cancel_due(110.0)
    assert "ipv4:127.0.0.1:4242" in reason and "within 10s" in reason
    assert led.cancel_due(111.0) == ""  # once


def test_a_watcher_attaching_within_the_grace_keeps_the_run() -> None:
    led = WatcherLedger(grace_s=10.0, since=0.0)
    led.attached()
    led.detached(5.0, "a", delivered=False)
    led.attached()  # `migbed watch` within the grace
    assert led.cancel_due(100.0) == ""
    led.detached(100.0, "b", delivered=False)  # it left too: the grace counts from now
    assert led.cancel_due(109.0) == "" and led.cancel_due(110.0)


def test_no_grace_no_rule() -> None:
    led = WatcherLedger(grace_s=0.0, since=0.0)
    led.attached()
    led.detached(1.0, "a", delivered=False)
    led.ended = True
    assert led.cancel_due(1e6) == "" and not led.orphan_due(1e6) and not led.undelivered()


def test_a_record_its_watcher_left_without_is_an_orphan_at_the_end() -> None:
    # Written out at once, not after the grace: a source SIGKILLed meanwhile kept it only in
    # memory (the soak's seed 209885354 lost one so).
    led = WatcherLedger(grace_s=10.0, since=0.0)
    led.attached()
    led.detached(3.0, "a", delivered=False)
    assert not led.orphan_due(4.0)  # still running: nothing to hand on
    led.ended = True  # it ended at 5 s, unwatched
    assert led.orphan_due(5.0)
    assert not led.orphan_due(14.0) and not led.undelivered()  # handed on once


def test_a_record_never_watched_is_an_orphan_after_the_grace() -> None:
    # Never watched: its orchestrator may still be between Start and Watch.
    led = WatcherLedger(grace_s=10.0, since=0.0)
    led.ended = True
    assert not led.orphan_due(9.9)
    assert led.orphan_due(10.0)


def test_a_record_with_a_watch_open_is_no_orphan() -> None:
    led = WatcherLedger(grace_s=10.0, since=0.0)
    led.attached()
    led.detached(3.0, "a", delivered=False)
    led.attached()  # `migbed watch` came back before the end
    led.ended = True
    assert not led.orphan_due(1e6)


def test_a_delivered_record_is_no_orphan() -> None:
    led = WatcherLedger(grace_s=10.0, since=0.0)
    led.attached()
    led.ended = True
    led.detached(3.0, "a", delivered=True)
    assert not led.orphan_due(1e6) and not led.undelivered() and led.cancel_due(1e6) == ""


def test_a_watcher_present_at_shutdown_gets_no_orphan_while_undelivered_ones_do() -> None:
    led = WatcherLedger(grace_s=10.0, since=0.0)
    led.ended = True
    assert led.undelivered() and not led.undelivered()


class FakeCall:
    def __init__(self) -> None:
        self.cancelled = threading.Event()

    def cancel(self) -> None:
        self.cancelled.set()


def test_liveness_cancels_a_silent_watch_and_says_why() -> None:
    call = FakeCall()
    alive = Liveness(call, lost_after=0.6)  # type: ignore[arg-type]
    try:
        t0 = time.monotonic()
        assert call.cancelled.wait(5)
        took = time.monotonic() - t0
    finally:
        alive.close()
    assert 0.6 <= took < 2.0
    assert alive.silent_s >= 0.6
    assert "sent nothing on its Watch for" in alive.describe() and "frozen" in alive.describe()


def test_liveness_events_keep_the_watch_and_a_heartbeat_sets_the_bound() -> None:
    call = FakeCall()
    alive = Liveness(call, lost_after=0.6)  # type: ignore[arg-type]
    try:
        for _ in range(8):  # 1.6 s of events every 0.2 s: never silent 0.6 s
            time.sleep(0.2)
            alive.heard(pb.WatchEvent(progress=pb.ProgressSample()))
        assert not call.cancelled.is_set()
        alive.heard(pb.WatchEvent(heartbeat=pb.WatchHeartbeat(interval_s=1, lost_after_s=40)))
        assert alive.lost_after == 40.0
    finally:
        alive.close()


def test_a_stall_of_the_watcher_itself_is_not_the_sources_silence(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The checker wakes up late (this process was not running): the gap is not counted."""
    clock = [1000.0]
    monkeypatch.setattr(controller.time, "monotonic", lambda: clock[0])
    waits: list[int] = []

    class Steps(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            waits.append(1)
            # the 2nd wake-up comes 30 s late (a stall of ours), then 0.25 s steps
            clock[0] += 30.0 if len(waits) == 2 else 0.25
            return len(waits) > 12

    call = FakeCall()
    alive = Liveness.__new__(Liveness)
    alive.call, alive.lost_after, alive.last, alive.silent_s = call, 15.0, clock[0], 0.0  # type: ignore[assignment]
    alive._done = Steps()
    alive._check()
    assert not call.cancelled.is_set(), "a stall of the watcher was taken for the source's silence"
