"""Following one started run to its record, whatever happens to the source meanwhile.

Every orchestrator (`migbed run`, `sweep`, `evacuate`) follows its runs with `follow_run`,
so a run it started always ends with exactly one record:

- the source's own (completed, failed, cancelled), as it streams it on Watch;
- when the source is lost while the run is in flight (killed, its host gone), one the
  orchestrator writes: outcome `failed`, the reason (the Watch's gRPC status), and what the
  run's target says of its session, asked at once (the session is cancelled there if it is
  still open, so the target frees the guest's memory now rather than after its heartbeat);
- when the orchestrator itself is told to stop (interrupt.py), the run is cancelled on its
  source and the source's record (cancelled, the signal named) is the one kept; a source
  that sends none within RECORD_GRACE_S of the cancel gets one written for it, saying so.

Records the orchestrator writes carry the label `recorded-by: orchestrator`; their guest
figures are unknown (zero), and the source guest counts as not running: it lived in the
lost source's process.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import grpc

from migbed.experiments.controller import ControlError, RecordAbandoned, SourceControl, SourceLost
from migbed.experiments.interrupt import INTERRUPTED_LABEL, RECORD_GRACE_S, Interruption
from migbed.measure.record import ProgressSample, RunRecord

RECORDED_BY = "recorded-by"
TARGET_ASK_TIMEOUT_S = 3.0


@dataclass
class StartedRun:
    """What the orchestrator knows of a run it started: enough to write its record."""

    run_id: str
    scenario: str
    policy: str
    repeat: int
    source: str
    target: str  # as the source dials it
    labels: dict[str, str] = field(default_factory=dict)
    target_probe: str = ""  # where this process reaches the target, if not at `target`
    time_dilation: float = 1.0  # the scenario's K: a record written here says it too


def dilation_of(scenario_toml: str) -> float:
    """The time-dilation factor of a scenario the source accepted (1 when it has none)."""
    from migbed.core.scenario import parse_scenario

    return parse_scenario(scenario_toml).time_dilation


def ask_target(address: str, run_id: str, reason: str) -> str:
    """What the target says of the run's session, its source gone: a session still open is
    cancelled (its memory freed now). One line for the record."""
    from migbed.wire import migration_pb2 as pb
    from migbed.wire import migration_pb2_grpc as pbg
    from migbed.wire.channel import control_channel
    from migbed.wire.errors import describe_rpc_error
    from migbed.wire.tls import client_credentials

    channel = control_channel(address, client_credentials(None))
    try:
        reply = pbg.ControlStub(channel).Cancel(pb.CancelRequest(run_id=run_id, reason=reason),
                                                timeout=TARGET_ASK_TIMEOUT_S)
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.NOT_FOUND:
            return f"target {address}: no session {run_id} (it had already ended it)"
        return f"target {address}: no answer ({describe_rpc_error(e)})"
    finally:
        channel.close()
    if reply.cancelled:
        return f"target {address}: its session was still open; cancelled now, memory freed"
    return f"target {address}: its session had ended: {reply.state}"


def orchestrator_record(run: StartedRun, outcome: str, error: str) -> RunRecord:
    record = RunRecord(run_id=run.run_id, scenario=run.scenario, policy=run.policy,
                       repeat=run.repeat, outcome=outcome, error=error,
                       source_address=run.source, target_address=run.target,
                       labels={**run.labels, RECORDED_BY: "orchestrator"},
                       time_dilation=run.time_dilation)
    record.labels.pop("repeat", None)
    return record


def lost_source_record(run: StartedRun, lost: SourceLost) -> RunRecord:
    said = ask_target(run.target_probe or run.target, run.run_id,
                      f"its source {run.source} was lost")
    return orchestrator_record(run, "failed", f"lost the source {run.source} while the run was "
                               f"in flight ({lost.detail}); {said}")


def follow_run(control: SourceControl, run: StartedRun, interruption: Interruption | None = None,
               on_sample: Callable[[ProgressSample], None] | None = None,
               cancel_after: float = 0.0) -> RunRecord:
    """Watch a started run to its end; its record, always (see the module doc).
    `cancel_after` > 0 cancels the run that many seconds after this call (a test's cancel)."""
    ended = threading.Event()

    def cancel(reason: str) -> None:
        with contextlib.suppress(ControlError):  # ended meanwhile: its record says how
            control.cancel(run.run_id, reason)
        if not ended.wait(RECORD_GRACE_S):
            control.abandon(run.run_id, f"{reason}; the source {run.source} sent no record "
                            f"within {RECORD_GRACE_S:g}s of the cancel")

    timer = None
    if cancel_after > 0:
        timer = threading.Timer(cancel_after, cancel, ("cancel-after",))
        timer.daemon = True
        timer.start()
    scope = interruption.running(run.run_id, cancel) if interruption else contextlib.nullcontext()
    try:
        with scope:
            try:
                record = control.watch(run.run_id, on_sample)
            except SourceLost as e:
                record = lost_source_record(run, e)
            except RecordAbandoned as e:
                record = orchestrator_record(run, "failed", str(e))
    finally:
        ended.set()
        if timer is not None:
            timer.cancel()
    if (interruption is not None and interruption.fired and record.outcome == "cancelled"
            and interruption.reason() in record.error):
        record.labels[INTERRUPTED_LABEL] = interruption.signal_name
    record.source_address = run.source
    return record


def runs_outcome(records: Sequence[RunRecord]) -> str:
    """"source-lost" when a source was lost with a run in flight (the orchestrator wrote its
    record), "failed" when a run failed, was cancelled or did not verify (or none ran),
    "ok" when every one completed and verified."""
    if any(r.labels.get(RECORDED_BY) == "orchestrator" for r in records):
        return "source-lost"
    ok = bool(records) and all(r.outcome == "completed" and r.verified for r in records)
    return "ok" if ok else "failed"
