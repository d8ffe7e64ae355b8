"""The orchestrator's client of a source service: start a run, follow it, get its record."""

from __future__ import annotations

import json
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


class SourceControl:
    def __init__(self, address: str, credentials: grpc.ChannelCredentials | None = None) -> None:
        if credentials is None:  # $MIGBED_TLS_DIR (`migbed run --tls-dir` sets it), or none
            credentials = client_credentials(None)
        self.address = address
        self.channel = control_channel(address, credentials)
        self.stub = pbg.ControlStub(self.channel)

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
        try:
            for ev in self.stub.Watch(pb.WatchRequest(run_id=run_id), timeout=timeout):
                body = ev.WhichOneof("body")
                if body == "progress":
                    if on_sample is not None:
                        on_sample(sample_from_pb(ev.progress))
                elif body == "record":
                    return record_from_pb(ev.record)
        except grpc.RpcError as e:
            raise ControlError(f"lost the source {self.address} while watching {run_id}: "
                               f"{describe_rpc_error(e)}") from None
        raise ControlError(f"source {self.address} ended the watch of {run_id} without a record")

    def cancel(self, run_id: str, reason: str = "cancelled by the user") -> pb.CancelReply:
        try:
            return self.stub.Cancel(pb.CancelRequest(run_id=run_id, reason=reason), timeout=10)
        except grpc.RpcError as e:
            raise ControlError(f"source {self.address}: {describe_rpc_error(e)}") from None
