"""The orchestrator's side of a stop signal and of a lost source, on their own
(experiments/interrupt.py, experiments/follow.py): which runs get cancelled, with what
reason, and which record each run ends with. The real processes are in
tests/faults/test_orchestrator_signals.py."""

from __future__ import annotations

import dataclasses
import signal
import threading

import pytest

from migbed.experiments import follow
from migbed.experiments.controller import RecordAbandoned, SourceLost
from migbed.experiments.follow import RECORDED_BY, StartedRun, follow_run
from migbed.experiments.interrupt import INTERRUPTED_LABEL, Interrupted, Interruption
from migbed.measure.record import RunRecord


def wait_for(event: threading.Event) -> None:
    assert event.wait(5), "timed out"


def test_a_signal_cancels_every_run_in_flight_once() -> None:
    stop = Interruption("migbed evacuate")
    got: list[tuple[str, str]] = []
    done = threading.Event()

    def canceller(run_id: str):  # type: ignore[no-untyped-def]
        def cancel(reason: str) -> None:
            got.append((run_id, reason))
            if len(got) == 2:
                done.set()
        return cancel

    with stop.running("a", canceller("a")), stop.running("b", canceller("b")):
        stop.fire(signal.SIGTERM)
        wait_for(done)
        stop.fire(signal.SIGINT)  # a second signal: nothing more
    assert sorted(r for r, _ in got) == ["a", "b"]
    assert all(reason.startswith("migbed evacuate got SIGTERM (pid ") for _, reason in got)
    assert stop.signal_name == "SIGTERM" and stop.exit_code() == 143
    with pytest.raises(Interrupted) as e:
        stop.check()
    assert e.value.exit_code == 143


def test_a_run_started_after_the_signal_is_cancelled_at_once() -> None:
    stop = Interruption("migbed run")
    stop.fire(signal.SIGHUP)
    cancelled = threading.Event()
    with stop.running("late", lambda reason: cancelled.set()):
        wait_for(cancelled)


class FakeControl:
    """The orchestrator's view of a source: watch() ends as the test says."""

    def __init__(self, watch: object) -> None:
        self._watch = watch
        self.cancels: list[str] = []
        self.cancelled = threading.Event()
        self.abandoned = threading.Event()
        self.why = ""

    def watch(self, run_id: str, on_sample: object = None) -> RunRecord:
        return self._watch(self)  # type: ignore[operator]

    def cancel(self, run_id: str, reason: str) -> None:
        self.cancels.append(reason)
        self.cancelled.set()

    def abandon(self, run_id: str, why: str) -> None:
        self.why = why
        self.abandoned.set()


RUN = StartedRun("r1", "tiny", "legacy", 0, "127.0.0.1:1", "127.0.0.1:2", {"cell": "3"})


def test_a_lost_source_gets_the_orchestrators_record(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = []

    def ask(addr: str, run_id: str, reason: str) -> str:
        asked.append((addr, run_id))
        return f"target {addr}: its session had ended: cancelled"

    monkeypatch.setattr(follow, "ask_target", ask)

    def lost(ctl: FakeControl) -> RunRecord:
        raise SourceLost("lost", "UNAVAILABLE: Socket closed")

    rec = follow_run(FakeControl(lost), RUN)  # type: ignore[arg-type]
    assert rec.outcome == "failed" and rec.run_id == "r1" and rec.policy == "legacy"
    assert rec.error == ("lost the source 127.0.0.1:1 while the run was in flight (UNAVAILABLE: "
                         "Socket closed); target 127.0.0.1:2: its session had ended: cancelled")
    assert rec.labels == {"cell": "3", RECORDED_BY: "orchestrator"}
    assert not rec.source_guest_running_after and rec.source_address == "127.0.0.1:1"
    assert asked == [("127.0.0.1:2", "r1")]
    assert rec.time_dilation == 1.0


def test_a_lost_sources_record_says_the_runs_time_dilation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(follow, "ask_target", lambda *a: "target: gone")

    def lost(ctl: FakeControl) -> RunRecord:
        raise SourceLost("lost", "UNAVAILABLE: Socket closed")

    dilated = dataclasses.replace(RUN, time_dilation=follow.dilation_of(
        'time-dilation = 4\n[guest]\nram-size = "16MiB"\n'))
    assert follow_run(FakeControl(lost), dilated).time_dilation == 4.0  # type: ignore[arg-type]


def test_a_signal_ends_with_the_sources_cancelled_record() -> None:
    stop = Interruption("migbed run")

    def watch(ctl: FakeControl) -> RunRecord:
        wait_for(ctl.cancelled)
        return RunRecord("r1", "tiny", "legacy", 0, "cancelled", error=ctl.cancels[0])

    ctl = FakeControl(watch)
    threading.Timer(0.1, stop.fire, (signal.SIGTERM,)).start()
    rec = follow_run(ctl, RUN, stop)  # type: ignore[arg-type]
    assert rec.outcome == "cancelled" and rec.labels[INTERRUPTED_LABEL] == "SIGTERM"
    assert rec.error.startswith("migbed run got SIGTERM")


def test_a_source_that_sends_no_record_after_the_cancel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(follow, "RECORD_GRACE_S", 0.2)
    stop = Interruption("migbed sweep")

    def watch(ctl: FakeControl) -> RunRecord:
        wait_for(ctl.abandoned)
        raise RecordAbandoned(ctl.why)

    stop.fire(signal.SIGTERM)
    rec = follow_run(FakeControl(watch), RUN, stop)  # type: ignore[arg-type]
    assert rec.outcome == "failed" and rec.labels[RECORDED_BY] == "orchestrator"
    assert "sent no record within 0.2s of the cancel" in rec.error
