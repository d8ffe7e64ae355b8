"""Issue 23, item 4: requests gRPC cannot decode (a `string` field that is not UTF-8) get
INVALID_ARGUMENT naming the field, on every method of both services, and no traceback in
the service's log. The bytes are sent raw (a serializer that passes them through), as a
client in another language, or a hostile one, could send them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from faultlab import Lab, sessions

from migbed.experiments.localstack import Service
from migbed.wire import migration_pb2 as pb
from migbed.wire.servicers import bad_string_field

pytestmark = pytest.mark.timeout(120)

BAD = b"name = \"x\"\n\xff\xfe not utf-8"


def field(number: int, payload: bytes) -> bytes:
    """One length-delimited field, encoded by hand (protobuf would refuse to)."""
    assert len(payload) < 128 and number < 16
    return bytes([number << 3 | 2, len(payload)]) + payload


def test_the_walker_names_nested_and_repeated_fields() -> None:
    start = field(1, BAD[:20]) + field(2, b"legacy")
    assert bad_string_field(pb.StartRequest.DESCRIPTOR, start) == \
        "scenario_toml: not valid UTF-8 (byte 0xff at offset 11); a string field takes UTF-8 text"
    good_dev, bad_dev = field(1, b"vf0"), field(1, b"v\xc3")
    setup = field(2, b"s-1") + field(4, good_dev) + field(4, bad_dev)  # devices = 4
    msg = field(1, setup)  # SourceMessage.setup = 1
    assert bad_string_field(pb.SourceMessage.DESCRIPTOR, msg).startswith(
        "setup.devices[1].name: not valid UTF-8 (byte 0xc3 at offset 1)")
    assert bad_string_field(pb.StartRequest.DESCRIPTOR, field(2, b"ok")) is None
    assert bad_string_field(pb.StartRequest.DESCRIPTOR, b"\xff\xff\xff") is None  # not a message


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, Service]]:
    lab = Lab(tmp_path_factory.mktemp("undecodable"))
    try:
        yield lab.start("source"), lab.start("target")
    finally:
        lab.close()


def raw_call(address: str, method: str, payload: bytes, stream: bool = False) -> grpc.RpcError:
    with grpc.insecure_channel(address) as ch:
        try:
            if stream:
                call = ch.stream_stream(method, request_serializer=lambda b: b,
                                        response_deserializer=lambda b: b)
                list(call(iter([payload]), timeout=10))
            else:
                ch.unary_unary(method, request_serializer=lambda b: b,
                               response_deserializer=lambda b: b)(payload, timeout=10)
        except grpc.RpcError as e:
            return e
    raise AssertionError(f"{method} accepted bytes that are not UTF-8")


def no_traceback(svc: Service) -> None:
    log = svc.log_path.read_text(errors="replace")
    assert "Traceback" not in log and "DecodeError" not in log, log[-2000:]


@pytest.mark.parametrize(("number", "name"), [(1, "scenario_toml"), (2, "policy"),
                                              (3, "target_address"), (4, "run_id"),
                                              (5, "labels_json")])
def test_start_with_a_field_that_is_not_utf8(pair: tuple[Service, Service], number: int,
                                             name: str) -> None:
    source, _ = pair
    e = raw_call(source.address, "/migbed.v1.Control/Start", field(number, BAD[:24]))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
    assert e.details().startswith(f"{name}: not valid UTF-8"), e.details()
    no_traceback(source)
    assert sessions(source.address) == []


@pytest.mark.parametrize("method", ["Watch", "Cancel"])
def test_other_control_methods(pair: tuple[Service, Service], method: str) -> None:
    source, target = pair
    for svc in (source, target):
        e = raw_call(svc.address, f"/migbed.v1.Control/{method}", field(1, b"r\xff"))
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
        assert e.details().startswith("run_id: not valid UTF-8"), e.details()
        no_traceback(svc)


def test_a_migration_stream_with_a_bad_setup(pair: tuple[Service, Service]) -> None:
    _, target = pair
    setup = field(2, b"sid\xe2\x28")  # Setup.session_id = 2: a broken 3-byte sequence
    e = raw_call(target.address, "/migbed.v1.Migration/Migrate", field(1, setup), stream=True)
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
    assert e.details().startswith("setup.session_id: not valid UTF-8"), e.details()
    no_traceback(target)
    assert sessions(target.address) == []


def test_the_services_still_migrate(pair: tuple[Service, Service], tmp_path: Path) -> None:
    from faultlab import scenario_toml, start_run

    from migbed.experiments.controller import SourceControl

    source, target = pair
    ctl = SourceControl(source.address)
    try:
        rec = start_run(ctl, scenario_toml("after-undecodable"), "legacy", target.address,
                        "after-undecodable").result(120)
    finally:
        ctl.close()
    assert rec.outcome == "completed" and rec.verified, rec.error
