"""Bad calls on the source's Control API: each refused with a clear status naming the field,
and the source still runs a good migration afterwards."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest
from faultlab import Lab, control_stub, scenario_toml, sessions, start_run, stop_cleanly

from migbed.experiments.controller import SourceControl
from migbed.experiments.localstack import Service, free_port
from migbed.wire import migration_pb2 as pb

pytestmark = pytest.mark.timeout(300)
Code = grpc.StatusCode
GOOD = scenario_toml("control-good")


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, Service]]:
    lb = Lab(tmp_path_factory.mktemp("badcontrol"))
    try:
        target = lb.start("target")
        source = lb.start("source", extra_args=["--max-sessions", "1"])
        yield source, target
        ctl = SourceControl(source.address)
        rec = start_run(ctl, GOOD, "legacy", target.address).result(60)
        ctl.close()
        assert rec.outcome == "completed" and rec.verified, rec.error
        assert sessions(source.address) == [] and sessions(target.address) == []
        stop_cleanly(source)
        stop_cleanly(target)
    finally:
        lb.close()


def start(source: Service, **over: str | float) -> pb.StartReply:
    req = pb.StartRequest(scenario_toml=GOOD, policy="legacy", target_address="127.0.0.1:1",
                          run_id=f"c-{time.monotonic_ns()}")
    for k, v in over.items():
        setattr(req, k, v)
    ch, stub = control_stub(source.address)
    with ch:
        return stub.Start(req, timeout=10)


@pytest.mark.parametrize(("over", "code", "words"), [
    ({"run_id": ""}, Code.INVALID_ARGUMENT, ["run_id"]),
    ({"run_id": "has space"}, Code.INVALID_ARGUMENT, ["run_id"]),
    ({"run_id": "r" * 129}, Code.INVALID_ARGUMENT, ["run_id"]),
    ({"run_id": "../../etc"}, Code.INVALID_ARGUMENT, ["run_id"]),
    ({"policy": ""}, Code.INVALID_ARGUMENT, ["policy", "legacy", "switchover-ack"]),
    ({"policy": "yolo"}, Code.INVALID_ARGUMENT, ["policy = 'yolo'"]),
    ({"target_address": ""}, Code.INVALID_ARGUMENT, ["target_address", "HOST:PORT"]),
    ({"target_address": "no-port"}, Code.INVALID_ARGUMENT, ["target_address"]),
    ({"target_address": "a b:1"}, Code.INVALID_ARGUMENT, ["target_address"]),
    ({"scenario_toml": ""}, Code.INVALID_ARGUMENT, ["scenario: ", "guest is required"]),
    ({"scenario_toml": "\0\1garbage"}, Code.INVALID_ARGUMENT, ["scenario: ", "TOML"]),
    ({"labels_json": "{"}, Code.INVALID_ARGUMENT, ["labels_json"]),
    ({"labels_json": "[1, 2]"}, Code.INVALID_ARGUMENT, ["labels_json", "not an object"]),
    ({"watcher_grace_s": float("nan")}, Code.INVALID_ARGUMENT, ["watcher_grace_s", "allowed 0"]),
    ({"watcher_grace_s": -1.0}, Code.INVALID_ARGUMENT, ["watcher_grace_s", "3600 s"]),
    ({"watcher_grace_s": 1e9}, Code.INVALID_ARGUMENT, ["watcher_grace_s", "3600 s"]),
])
def test_bad_start(pair: tuple[Service, Service], over: dict[str, str], code: grpc.StatusCode,
                   words: list[str]) -> None:
    source, _ = pair
    with pytest.raises(grpc.RpcError) as e:
        start(source, **over)
    assert e.value.code() == code, e.value
    for w in words:
        assert w in str(e.value.details()), e.value.details()
    assert sessions(source.address) == []


def test_unknown_run(pair: tuple[Service, Service]) -> None:
    source, _ = pair
    ch, stub = control_stub(source.address)
    with ch:
        for call in (lambda: stub.Cancel(pb.CancelRequest(run_id="ghost"), timeout=5),
                     lambda: list(stub.Watch(pb.WatchRequest(run_id="ghost"), timeout=5))):
            with pytest.raises(grpc.RpcError) as e:
                call()
            assert e.value.code() == Code.NOT_FOUND
            assert "no run 'ghost'" in str(e.value.details())


def test_duplicate_run_id_and_too_many_runs(pair: tuple[Service, Service]) -> None:
    """The source runs at most one (--max-sessions 1): a second is RESOURCE_EXHAUSTED; reusing
    a run id is ALREADY_EXISTS; the running one is unaffected."""
    source, target = pair
    slow = scenario_toml("control-slow", devices=[{
        "name": "vf0", "initial-bytes": "4MB", "load-setup-time": "600s"}])
    ctl = SourceControl(source.address)
    w = start_run(ctl, slow, "switchover-ack", target.address)
    try:
        with pytest.raises(grpc.RpcError) as e:
            start(source, run_id=w.run_id)
        assert e.value.code() == Code.ALREADY_EXISTS and w.run_id in str(e.value.details())
        with pytest.raises(grpc.RpcError) as e:
            start(source, target_address=target.address)
        assert e.value.code() == Code.RESOURCE_EXHAUSTED
        assert "at most 1" in str(e.value.details())
        assert sessions(source.address) == [w.run_id]
    finally:
        ctl.cancel(w.run_id, "test over")
    rec = w.result(30)
    assert rec.outcome == "cancelled" and rec.source_guest_running_after
    ctl.close()


@pytest.mark.parametrize("where", ["nothing listening", "not a gRPC server"])
def test_target_address_that_is_no_target(pair: tuple[Service, Service], where: str) -> None:
    """A well-formed address with no target behind it: the run fails in setup, saying why,
    and the guest is fine."""
    source, _ = pair
    addr = (f"127.0.0.1:{free_port()}" if where == "nothing listening"
            else source.metrics_address)  # an HTTP/1.1 server (Prometheus exporter)
    ctl = SourceControl(source.address)
    rec = start_run(ctl, GOOD, "legacy", addr).result(60)
    ctl.close()
    assert rec.outcome == "failed"
    assert "during setup" in rec.error and "UNAVAILABLE" in rec.error, rec.error
    assert rec.source_guest_running_after and rec.source_integrity_ok


def test_source_refuses_migration_calls(pair: tuple[Service, Service]) -> None:
    """The source serves Control only: a stream sent to it is UNIMPLEMENTED, not a crash."""
    from migbed.wire import migration_pb2_grpc as pbg

    source, _ = pair
    with grpc.insecure_channel(source.address) as ch:
        with pytest.raises(grpc.RpcError) as e:
            list(pbg.MigrationStub(ch).Migrate(iter([pb.SourceMessage()]), timeout=5))
        assert e.value.code() == Code.UNIMPLEMENTED
