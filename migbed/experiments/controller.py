"""The orchestrator's client of a source service: start a run, follow it, get its record."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

import grpc

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
              labels: dict[str, str] | None = None) -> str:
        try:
            reply = self.stub.Start(pb.StartRequest(
                scenario_toml=scenario_toml, policy=policy, target_address=target, run_id=run_id,
                labels_json=json.dumps(labels or {})), timeout=30)
        except grpc.RpcError as e:
            raise ControlError(f"source {self.address} refused the run: {describe_rpc_error(e)}") from None
        return str(reply.run_id)

    def watch(self, run_id: str, on_sample: Callable[[ProgressSample], None] | None = None,
              timeout: float = 3600) -> RunRecord:
        call = self.stub.Watch(pb.WatchRequest(run_id=run_id), timeout=timeout)
        with self._lock:
            self._watches[run_id] = call
            why = self._abandoned.pop(run_id, "")
        try:
            if why:
                raise RecordAbandoned(why)
            for ev in call:
                body = ev.WhichOneof("body")
                if body == "progress":
                    if on_sample is not None:
                        on_sample(sample_from_pb(ev.progress))
                elif body == "record":
                    return record_from_pb(ev.record)
        except grpc.RpcError as e:
            with self._lock:
                why = self._abandoned.pop(run_id, "")
            if why:
                raise RecordAbandoned(why) from None
            if e.code() == grpc.StatusCode.NOT_FOUND:  # a run id the source does not know
                raise ControlError(f"source {self.address}: {describe_rpc_error(e)}") from None
            detail = describe_rpc_error(e)
            raise SourceLost(f"lost the source {self.address} while watching {run_id}: "
                             f"{detail}", detail) from None
        finally:
            with self._lock:
                self._watches.pop(run_id, None)
            call.cancel()
        raise SourceLost(f"source {self.address} ended the watch of {run_id} without a record",
                         "the watch ended without a record")

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
