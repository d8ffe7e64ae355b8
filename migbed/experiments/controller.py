"""The orchestrator's client of a source service: start a run, follow it, get its record.

Runs are started tied to this watcher (a watcher grace: the source cancels a run whose
watcher vanished), and followed with a liveness check: a source that sends nothing on the
Watch, not even its heartbeat, for the bound it announced is declared lost (SourceLost), so
a frozen source or a vanished host never makes the orchestrator wait for ever
(migbed/core/watch.py).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import grpc

from migbed.core.watch import LOST_AFTER_MIN_S, WATCHER_GRACE_S, accepted_lost_after
from migbed.measure.record import ProgressSample, RunRecord
from migbed.measure.record_wire import record_from_pb, sample_from_pb
from migbed.wire import migration_pb2 as pb
from migbed.wire import migration_pb2_grpc as pbg
from migbed.wire.channel import control_channel
from migbed.wire.errors import describe_rpc_error
from migbed.wire.tls import client_credentials


class ControlError(RuntimeError):
    pass


class SourceLost(ControlError):
    """The source stopped answering while a run was in flight (its Watch broke)."""

    def __init__(self, text: str, detail: str) -> None:
        super().__init__(text)
        self.detail = detail  # the gRPC status, as described


class RecordAbandoned(ControlError):
    """The orchestrator gave up waiting for a run's record (abandon())."""


LIVENESS_POLL_S = 0.25
OWN_STALL_S = 1.0  # the checker itself late by more than this: this process was stalled


class Liveness:
    """Cancels a Watch call once the source has sent nothing for `lost_after` seconds (a
    heartbeat sets the bound the source announces). A stall of this process itself (the
    checker woke up late) does not count as the source's silence: messages may be waiting
    unread in this process while it was not running."""

    def __init__(self, call: grpc.Future, lost_after: float = LOST_AFTER_MIN_S) -> None:
        self.call = call
        self.lost_after = lost_after
        self.last = time.monotonic()
        self.silent_s = 0.0  # > 0 once the call was cancelled for silence
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._check, name="watch-liveness", daemon=True)
        self._thread.start()

    def heard(self, event: pb.WatchEvent) -> None:
        self.last = time.monotonic()
        if event.WhichOneof("body") == "heartbeat":
            self.lost_after = accepted_lost_after(event.heartbeat.lost_after_s)

    def close(self) -> None:
        self._done.set()

    def _check(self) -> None:
        tick = time.monotonic()
        while not self._done.wait(LIVENESS_POLL_S):
            now = time.monotonic()
            if now - tick > LIVENESS_POLL_S + OWN_STALL_S:
                self.last = max(self.last, now)  # we were not running: cannot judge the gap
            tick = now
            if now - self.last >= self.lost_after:
                self.silent_s = now - self.last
                self.call.cancel()
                return

    def describe(self) -> str:
        return (f"it sent nothing on its Watch for {self.silent_s:.1f}s, not even its heartbeat "
                f"(the bound: {self.lost_after:g}s): frozen, or its host unreachable")


class SourceControl:
    def __init__(self, address: str, credentials: grpc.ChannelCredentials | None = None) -> None:
        if credentials is None:  # $MIGBED_TLS_DIR (`migbed run --tls-dir` sets it), or none
            credentials = client_credentials(None)
        self.address = address
        self.channel = control_channel(address, credentials)
        self.stub = pbg.ControlStub(self.channel)
        self._lock = threading.Lock()
        self._watches: dict[str, grpc.Future] = {}  # run id -> its Watch call, while watched
        self._abandoned: dict[str, str] = {}  # run id -> why its record was given up on

    def close(self) -> None:
        self.channel.close()

    def status(self, timeout: float = 5.0) -> pb.StatusReply:
        try:
            return self.stub.Status(pb.StatusRequest(), timeout=timeout)
        except grpc.RpcError as e:
            raise ControlError(f"source {self.address}: {describe_rpc_error(e)}") from None

    def start(self, scenario_toml: str, policy: str, target: str, run_id: str,
              labels: dict[str, str] | None = None, watcher_grace_s: float = WATCHER_GRACE_S) -> str:
        """Start a run on the source. `watcher_grace_s`: the source cancels the run once its
        watcher (our Watch) vanished and nobody watched it for that long (0: never)."""
        try:
            reply = self.stub.Start(pb.StartRequest(
                scenario_toml=scenario_toml, policy=policy, target_address=target, run_id=run_id,
                labels_json=json.dumps(labels or {}), watcher_grace_s=watcher_grace_s), timeout=30)
        except grpc.RpcError as e:
            raise ControlError(f"source {self.address} refused the run: {describe_rpc_error(e)}") from None
        return str(reply.run_id)

    def watch(self, run_id: str, on_sample: Callable[[ProgressSample], None] | None = None,
              timeout: float | None = None) -> RunRecord:
        """Follow a run to its record. SourceLost when the source goes away (the call breaks,
        or it stays silent past its liveness bound); RecordAbandoned after abandon()."""
        call = self.stub.Watch(pb.WatchRequest(run_id=run_id), timeout=timeout)
        alive = Liveness(call)
        with self._lock:
            self._watches[run_id] = call
            why = self._abandoned.pop(run_id, "")
        try:
            if why:
                raise RecordAbandoned(why)
            for ev in call:
                alive.heard(ev)
                body = ev.WhichOneof("body")
                if body == "progress":
                    if on_sample is not None:
                        on_sample(sample_from_pb(ev.progress))
                elif body == "record":
                    return record_from_pb(ev.record)
        except grpc.RpcError as e:
            self._lost(run_id, e, alive)
        finally:
            alive.close()
            with self._lock:
                self._watches.pop(run_id, None)
            call.cancel()
        raise SourceLost(f"source {self.address} ended the watch of {run_id} without a record",
                         "the watch ended without a record")

    def _lost(self, run_id: str, e: grpc.RpcError, alive: Liveness) -> None:
        """Why the Watch broke, raised as what it means for the run."""
        with self._lock:
            why = self._abandoned.pop(run_id, "")
        if why:
            raise RecordAbandoned(why) from None
        if e.code() == grpc.StatusCode.NOT_FOUND:  # a run id the source does not know
            raise ControlError(f"source {self.address}: {describe_rpc_error(e)}") from None
        detail = alive.describe() if alive.silent_s else describe_rpc_error(e)
        raise SourceLost(f"lost the source {self.address} while watching {run_id}: "
                         f"{detail}", detail) from None

    def abandon(self, run_id: str, why: str) -> None:
        """Stop waiting for `run_id`'s record: its watch() raises RecordAbandoned(why)."""
        with self._lock:
            self._abandoned[run_id] = why
            call = self._watches.get(run_id)
        if call is not None:
            call.cancel()

    def cancel(self, run_id: str, reason: str = "cancelled by the user") -> pb.CancelReply:
        try:
            return self.stub.Cancel(pb.CancelRequest(run_id=run_id, reason=reason), timeout=10)
        except grpc.RpcError as e:
            raise ControlError(f"source {self.address}: {describe_rpc_error(e)}") from None
