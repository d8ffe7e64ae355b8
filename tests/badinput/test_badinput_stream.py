"""Bad input on the migration stream, the target's Control API and the raw gRPC port.

One real target process serves the whole module. Every bad stream must end with a clear
gRPC status whose message names the field, without disturbing the target: after all of
them (and garbage bytes on its port) it still lists no session and runs a good migration.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from faultlab import (
    Lab,
    control_stub,
    no_sessions,
    scenario_toml,
    sessions,
    start_run,
    stop_cleanly,
    surviving_target,
    wait_until,
)

from migbed.dataplane import packet as pk
from migbed.dataplane.sender import MultifdSender
from migbed.experiments.controller import SourceControl
from migbed.experiments.localstack import Service
from migbed.wire import migration_pb2 as pb
from migbed.wire import migration_pb2_grpc as pbg
from migbed.wire.channel import CHUNK_BYTES, MAX_MESSAGE_BYTES, check_health

pytestmark = pytest.mark.timeout(300)

PAGE = 4096
RAM = 16 << 20
DEV_INITIAL, DEV_STOP = 4 << 20, 1 << 20
Code = grpc.StatusCode


def setup(session_id: str = "", **over: Any) -> pb.SourceMessage:
    s = pb.Setup(protocol_version=pb.PROTOCOL_VERSION_1,
                 session_id=session_id or f"bad-{os.urandom(4).hex()}",
                 guest=pb.GuestShape(ram_bytes=RAM, page_size=PAGE),
                 devices=[pb.DeviceShape(name="vf0", initial_bytes=DEV_INITIAL,
                                         stop_copy_size=DEV_STOP, block_size=65536,
                                         load_rate_bytes_per_s=1e9)],
                 switchover_ack=True, guest_seed=1, vcpu_tick_s=0.001,
                 heartbeat_timeout_s=5.0, scenario="bad-input", policy="legacy")
    for k, v in over.items():
        if k == "guest":
            s.guest.CopyFrom(v)
        elif k == "devices":
            del s.devices[:]
            s.devices.extend(v)
        else:
            setattr(s, k, v)
    return pb.SourceMessage(setup=s)


def ram(pages: Sequence[int], data: bytes | None = None) -> pb.SourceMessage:
    return pb.SourceMessage(ram=pb.RamPages(pages=list(pages), data=(
        data if data is not None else bytes(len(pages) * PAGE))))


def dev(seq: int, offset: int = 0, n: int = 65536, kind: int = pb.IMAGE_KIND_INITIAL,
        device: int = 0, image_bytes: int = DEV_INITIAL) -> pb.SourceMessage:
    d = pb.DeviceData(device=device, seq=seq, offset=offset, data=b"\1" * n,
                      image_bytes=image_bytes)
    d.kind = kind  # type: ignore[assignment]  # any number, also ones the enum lacks
    return pb.SourceMessage(device_data=d)


STOP = pb.SourceMessage(stop_copy=pb.StopCopy(source_stop_ns=1))


def exchange(address: str, msgs: Sequence[pb.SourceMessage], hold: float = 10.0,
             timeout: float = 20.0) -> tuple[grpc.RpcError | None, list[pb.TargetMessage]]:
    """Send `msgs` on one Migrate stream, keep it open (up to `hold` s), collect the replies;
    returns the status that ended it (None: the target ended it with OK)."""
    done = threading.Event()

    def requests() -> Iterator[pb.SourceMessage]:
        yield from msgs
        done.wait(hold)

    got: list[pb.TargetMessage] = []
    opts = [("grpc.max_send_message_length", 64 << 20),
            ("grpc.max_receive_message_length", 64 << 20)]
    with grpc.insecure_channel(address, options=opts) as ch:
        try:
            for r in pbg.MigrationStub(ch).Migrate(requests(), timeout=timeout):
                got.append(r)
        except grpc.RpcError as e:
            return e, got
        finally:
            done.set()
    return None, got


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    # The target must survive everything below: nothing left over, a good migration runs.
    with surviving_target(tmp_path_factory.mktemp("badstream"), "after-bad-input",
                          ["--max-sessions", "3"]) as svc:
        yield svc


def refused(target: Service, msgs: Sequence[pb.SourceMessage], code: grpc.StatusCode,
            *words: str) -> str:
    err, _ = exchange(target.address, msgs)
    assert err is not None, "the target accepted it"
    assert err.code() == code, f"{err.code()}: {err.details()}"
    details = str(err.details())
    for w in words:
        assert w in details, details
    wait_until(lambda: no_sessions(target.address), 10, "the session to be freed")
    return details


# ---------------------------------------------------------------- setup


@pytest.mark.parametrize("version", [0, 2, 99])
def test_wrong_protocol_version(target: Service, version: int) -> None:
    d = refused(target, [setup(protocol_version=version)], Code.FAILED_PRECONDITION,
                "setup.protocol_version", str(version))
    assert "speaks 1" in d


@pytest.mark.parametrize(("over", "field"), [
    ({"session_id": "x" * 129}, "setup.session_id"),
    ({"guest": pb.GuestShape(ram_bytes=RAM, page_size=1000)}, "setup.guest.page_size"),
    ({"guest": pb.GuestShape(ram_bytes=RAM + 1, page_size=PAGE)}, "setup.guest.ram_bytes"),
    ({"guest": pb.GuestShape(ram_bytes=1 << 50, page_size=PAGE)}, "setup.guest.ram_bytes"),
    ({"guest": pb.GuestShape(ram_bytes=0, page_size=PAGE)}, "setup.guest.ram_bytes"),
    ({"devices": [pb.DeviceShape(name=f"d{i}", initial_bytes=65536, load_rate_bytes_per_s=1e9)
                  for i in range(17)]}, "setup.devices"),
    ({"devices": [pb.DeviceShape(name="d", initial_bytes=1 << 40, load_rate_bytes_per_s=1e9)]},
     "setup.devices[0]"),
    ({"devices": [pb.DeviceShape(name="d", initial_bytes=65536)]},
     "setup.devices[0].load_rate_bytes_per_s"),
    ({"devices": [pb.DeviceShape(name="d", initial_bytes=65536, load_rate_bytes_per_s=1e9,
                                 load_setup_time_s=-1)]}, "setup.devices[0]"),
    ({"vcpu_tick_s": 0.0}, "setup.vcpu_tick_s"),
    ({"heartbeat_timeout_s": 0.01}, "setup.heartbeat_timeout_s"),
    ({"heartbeat_timeout_s": float("nan")}, "setup.heartbeat_timeout_s"),
])
def test_bad_setup_field(target: Service, over: dict[str, Any], field: str) -> None:
    refused(target, [setup(**over)], Code.INVALID_ARGUMENT, field)


def test_empty_session_id(target: Service) -> None:
    msg = setup()
    msg.setup.session_id = ""
    refused(target, [msg], Code.INVALID_ARGUMENT, "setup.session_id")


def test_no_setup_first_is_an_unknown_session(target: Service) -> None:
    """Data for a session that was never set up on this stream."""
    refused(target, [ram([0])], Code.FAILED_PRECONDITION, "first message must be setup", "ram")


def test_a_second_setup_on_one_stream(target: Service) -> None:
    refused(target, [setup(), setup()], Code.FAILED_PRECONDITION, "second setup")


def test_same_session_into_a_busy_target(target: Service) -> None:
    """A second migration with a session id already migrating here: ALREADY_EXISTS; the first
    session is not disturbed."""
    sid = f"busy-{os.urandom(3).hex()}"
    done = threading.Event()
    first_err: list[grpc.RpcError | None] = []

    def first() -> None:
        first_err.append(exchange(target.address, [setup(sid)], hold=30)[0])
        done.set()

    t = threading.Thread(target=first, daemon=True)
    t.start()
    wait_until(lambda: sessions(target.address) == [sid], 10, "the first session")
    err, _ = exchange(target.address, [setup(sid)])
    assert err is not None and err.code() == Code.ALREADY_EXISTS, err
    assert sid in str(err.details()) and "already migrating" in str(err.details())
    assert sessions(target.address) == [sid]  # the first one lives on
    ch, stub = control_stub(target.address)
    with ch:  # the operator frees it
        assert stub.Cancel(pb.CancelRequest(run_id=sid, reason="test"), timeout=5).cancelled
    done.wait(20)
    err = first_err[0] if first_err else None
    assert err is not None and err.code() == Code.ABORTED, err
    assert "cancelled on the target: test" in str(err.details())
    wait_until(lambda: no_sessions(target.address), 10, "the session to be freed")


def test_more_sessions_than_allowed(target: Service) -> None:
    """--max-sessions 3: the fourth is RESOURCE_EXHAUSTED, the three others go on."""
    sids = [f"many-{i}-{os.urandom(2).hex()}" for i in range(3)]
    threads = [threading.Thread(target=exchange, args=(target.address, [setup(s)], 30),
                                daemon=True) for s in sids]
    for th in threads:
        th.start()
    try:
        wait_until(lambda: sorted(sessions(target.address)) == sorted(sids), 15, "3 sessions")
        err, _ = exchange(target.address, [setup()])
        assert err is not None and err.code() == Code.RESOURCE_EXHAUSTED, err
        assert "at most 3" in str(err.details())
        assert sorted(sessions(target.address)) == sorted(sids)
    finally:
        ch, stub = control_stub(target.address)
        with ch:
            for s in sids:
                with contextlib.suppress(grpc.RpcError):
                    stub.Cancel(pb.CancelRequest(run_id=s), timeout=5)
    for th in threads:
        th.join(30)
    wait_until(lambda: no_sessions(target.address), 10, "the sessions to be freed")


# ---------------------------------------------------------------- the data


def test_empty_message_body(target: Service) -> None:
    refused(target, [setup(), pb.SourceMessage()], Code.INVALID_ARGUMENT, "empty or unknown")


def test_chunks_out_of_order(target: Service) -> None:
    refused(target, [setup(), dev(0), dev(2, offset=2 * 65536)], Code.DATA_LOSS,
            "device_data.seq = 2", "expected 1", "out of order")


def test_chunk_duplicated(target: Service) -> None:
    refused(target, [setup(), dev(0), dev(1, offset=65536), dev(1, offset=65536)],
            Code.DATA_LOSS, "device_data.seq = 1", "duplicated")


def test_unknown_device(target: Service) -> None:
    refused(target, [setup(), dev(0, device=5)], Code.INVALID_ARGUMENT,
            "device_data.device = 5", "1 device(s)")


def test_unknown_device_in_marker(target: Service) -> None:
    refused(target, [setup(), pb.SourceMessage(init_data_sent=pb.InitDataSent(device=3))],
            Code.INVALID_ARGUMENT, "init_data_sent.device = 3")


def test_unknown_image_kind(target: Service) -> None:
    refused(target, [setup(), dev(0, kind=7)], Code.INVALID_ARGUMENT, "device_data.kind = 7")


def test_device_data_beyond_the_device(target: Service) -> None:
    refused(target, [setup(), dev(0, offset=DEV_INITIAL + DEV_STOP - 10)], Code.OUT_OF_RANGE,
            "device_data", "beyond device vf0")


def test_oversized_device_chunk(target: Service) -> None:
    """Larger than a chunk, within the message limit: refused by the session, by field."""
    refused(target, [setup(), dev(0, n=CHUNK_BYTES + 1)], Code.INVALID_ARGUMENT,
            "device_data.data", str(CHUNK_BYTES + 1))


def test_oversized_message(target: Service) -> None:
    """Beyond the message limit: gRPC itself refuses it before any code of ours runs."""
    big = dev(0, n=MAX_MESSAGE_BYTES + 1)
    refused(target, [setup(), big], Code.RESOURCE_EXHAUSTED, "larger than max")


def test_truncated_ram_data(target: Service) -> None:
    refused(target, [setup(), ram([0, 1], bytes(PAGE + 100))], Code.INVALID_ARGUMENT,
            "ram.data", "truncated")


def test_ram_page_beyond_the_guest(target: Service) -> None:
    refused(target, [setup(), ram([RAM // PAGE])], Code.OUT_OF_RANGE, "ram.pages",
            str(RAM // PAGE))


@pytest.mark.parametrize(("pages", "what"), [([5, 3], "page 3 at index 1 is out of order"),
                                           ([3, 3], "page 3 at index 1 is repeated"),
                                           ([0, 1, 2, 7, 6], "page 6 at index 4 is out of order")])
def test_ram_pages_out_of_order_or_repeated(target: Service, pages: list[int], what: str) -> None:
    """The proto says "page indices, in order": as a multifd packet, strictly increasing."""
    refused(target, [setup(), ram(pages)], Code.INVALID_ARGUMENT, "ram.pages", what)


def test_too_many_ram_pages(target: Service) -> None:
    refused(target, [setup(), ram([])], Code.INVALID_ARGUMENT, "ram.pages: 0 pages")


def test_marker_with_chunks_missing(target: Service) -> None:
    refused(target, [setup(), dev(0), pb.SourceMessage(init_data_sent=pb.InitDataSent(
        device=0, seq=5))], Code.DATA_LOSS, "init_data_sent.seq = 5", "chunks missing")


def test_final_data_before_stop_copy(target: Service) -> None:
    refused(target, [setup(), dev(0, kind=pb.IMAGE_KIND_FINAL)], Code.FAILED_PRECONDITION,
            "final", "before stop_copy")


def test_initial_data_after_marker(target: Service) -> None:
    small = pb.DeviceShape(name="vf0", initial_bytes=65536, stop_copy_size=DEV_STOP,
                           block_size=65536, load_rate_bytes_per_s=1e9)
    refused(target, [setup(devices=[small]), dev(0, image_bytes=65536), marker(1),
                     dev(1, offset=65536, image_bytes=65536)], Code.FAILED_PRECONDITION,
            "initial data", "after INIT_DATA_SENT")


# ---------------------------------------------------------------- image lengths (mlx5's header)

MIDDLE, FINAL = pb.IMAGE_KIND_MIDDLE, pb.IMAGE_KIND_FINAL
MULTIFD = pb.DEVICE_STATE_TRANSFER_MULTIFD


def marker(seq: int) -> pb.SourceMessage:
    return pb.SourceMessage(init_data_sent=pb.InitDataSent(device=0, seq=seq))


@pytest.mark.parametrize(("msgs", "code", "words"), [
    ([dev(0, image_bytes=0)], Code.INVALID_ARGUMENT,
     ["device_data.image_bytes = 0", "required"]),
    ([dev(0, image_bytes=DEV_INITIAL - 1)], Code.OUT_OF_RANGE,
     [f"device_data.image_bytes = {DEV_INITIAL - 1}", f"exactly {DEV_INITIAL}", "initial_bytes"]),
    ([dev(0, kind=MIDDLE, image_bytes=DEV_INITIAL + 1)], Code.OUT_OF_RANGE,
     ["MIDDLE image of device vf0", f"allowed 1 to {DEV_INITIAL}"]),
    ([STOP, dev(0, kind=FINAL, offset=DEV_INITIAL, image_bytes=DEV_INITIAL + DEV_STOP + 1)],
     Code.OUT_OF_RANGE, ["device_data.image_bytes", f"1 to {DEV_INITIAL + DEV_STOP}"]),
    ([dev(0, kind=MIDDLE, image_bytes=100)], Code.OUT_OF_RANGE,
     ["device_data.data: 65536 bytes, more than the image's image_bytes = 100"]),
    ([dev(0, kind=MIDDLE, image_bytes=3 * 65536), ram([0]),
      dev(1, kind=MIDDLE, offset=65536, image_bytes=2 * 65536)], Code.INVALID_ARGUMENT,
     ["device_data.image_bytes = 131072", "MIDDLE image (65536 of 196608 bytes written)"]),
    ([dev(0, kind=MIDDLE, image_bytes=65546), dev(1, kind=MIDDLE, offset=65536,
                                                  image_bytes=65546)],
     Code.OUT_OF_RANGE, ["device_data.data: 65536 bytes beyond the end of the MIDDLE image"]),
    ([dev(0), STOP, dev(1, kind=FINAL, offset=DEV_INITIAL, image_bytes=DEV_STOP)],
     Code.FAILED_PRECONDITION, ["device_data.kind = FINAL while the device's INITIAL image "
                                f"(65536 of {DEV_INITIAL} bytes written) is open"]),
    ([dev(0), marker(1)], Code.DATA_LOSS, ["init_data_sent for device 0", "INITIAL image"]),
    ([dev(0, kind=MIDDLE, image_bytes=2 * 65536), STOP,
      pb.SourceMessage(complete=pb.Complete(device_next_seq=[1]))], Code.DATA_LOSS,
     ["complete: device vf0's MIDDLE image", "never reached its image_bytes"]),
], ids=["missing", "initial-length", "middle-too-long", "final-too-long", "chunk-too-long",
        "length-changes", "beyond-the-image", "kind-while-open", "marker-inside-initial",
        "complete-inside-an-image"])
def test_bad_image_length(target: Service, msgs: list[pb.SourceMessage],
                          code: grpc.StatusCode, words: list[str]) -> None:
    refused(target, [setup(), *msgs], code, *words)


def test_main_stream_device_data_after_the_stop_with_multifd_device_state(
        target: Service) -> None:
    """With MULTIFD device state the data stream goes on on the multifd channels after the
    stop: more of it on the main stream would be a second writer of the same image."""
    refused(target, [setup(device_state_transfer=MULTIFD, multifd_channels=1), STOP,
                     dev(0, kind=MIDDLE, image_bytes=65536)],
            Code.FAILED_PRECONDITION, "device_data.kind = MIDDLE on the main stream")


def test_complete_before_stop_copy(target: Service) -> None:
    refused(target, [setup(), pb.SourceMessage(complete=pb.Complete())],
            Code.FAILED_PRECONDITION, "complete before stop_copy")


def test_truncated_stream_complete_counts_disagree(target: Service) -> None:
    """The stream lost chunks at the end: Complete's counts say so."""
    refused(target, [setup(), dev(0), STOP, pb.SourceMessage(complete=pb.Complete(
        device_next_seq=[3]))], Code.DATA_LOSS, "complete.device_next_seq = [3]", "[1]")


def test_truncated_stream_complete_page_count_disagrees(target: Service) -> None:
    """RAM pages lost in the stream: Complete's page count says so."""
    refused(target, [setup(), STOP, pb.SourceMessage(complete=pb.Complete(ram_pages_sent=5, device_next_seq=[0]))],
            Code.DATA_LOSS, "complete.ram_pages_sent = 5", "received 0")


def test_truncated_stream_closed_before_complete(target: Service) -> None:
    err, _ = exchange(target.address, [setup(), dev(0)], hold=0)
    assert err is not None and err.code() == Code.CANCELLED, err
    assert "closed the stream before completing" in str(err.details())
    wait_until(lambda: no_sessions(target.address), 10, "the session to be freed")


def test_digests_before_resume(target: Service) -> None:
    refused(target, [setup(), pb.SourceMessage(digests=pb.Digests())],
            Code.FAILED_PRECONDITION, "digests before the guest resumed")


def test_source_abort(target: Service) -> None:
    refused(target, [setup(), pb.SourceMessage(abort=pb.Abort(reason="operator said so"))],
            Code.ABORTED, "source aborted", "operator said so")


def test_silent_source(target: Service) -> None:
    """A source that opens a session and then says nothing: freed after its heartbeat."""
    t = time.monotonic()
    refused(target, [setup(heartbeat_timeout_s=0.5)], Code.DEADLINE_EXCEEDED,
            "sent nothing for 0.5s", "heartbeat_timeout_s")
    assert time.monotonic() - t < 5


# ---------------------------------------------------------------- the target's Control API


def test_target_control_bad_calls(target: Service) -> None:
    ch, stub = control_stub(target.address)
    with ch:
        with pytest.raises(grpc.RpcError) as e:
            stub.Cancel(pb.CancelRequest(run_id="nobody"), timeout=5)
        assert e.value.code() == Code.NOT_FOUND and "nobody" in str(e.value.details())
        with pytest.raises(grpc.RpcError) as e:
            stub.Start(pb.StartRequest(run_id="x"), timeout=5)
        assert e.value.code() == Code.FAILED_PRECONDITION
        assert "this is a target" in str(e.value.details())
        with pytest.raises(grpc.RpcError) as e:
            list(stub.Watch(pb.WatchRequest(run_id="x"), timeout=5))
        assert e.value.code() == Code.FAILED_PRECONDITION
        assert stub.Status(pb.StatusRequest(), timeout=5).role == "target"


# ---------------------------------------------------------------- garbage on the port


GARBAGE = {
    "random bytes": os.urandom(4096),
    "HTTP/1.1 request": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "TLS ClientHello on a plaintext port": bytes.fromhex("16030100a5010000a10303") + b"\0" * 160,
    "HTTP/2 preface then junk": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + os.urandom(2048),
    "HTTP/2 preface then a truncated frame": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    + bytes.fromhex("00ffff0400000000"),
    "nothing (connect, then close)": b"",
}


@pytest.mark.parametrize("what", list(GARBAGE))
def test_garbage_bytes_on_the_grpc_port(target: Service, what: str) -> None:
    host, _, port = target.address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        if GARBAGE[what]:
            s.sendall(GARBAGE[what])
        s.settimeout(5)
        try:
            while s.recv(65536):  # the server answers (GOAWAY) or closes; never hangs
                pass
        except (TimeoutError, ConnectionResetError):
            pass
    assert check_health(target.address)
    assert no_sessions(target.address)


def test_a_silent_connection_does_not_block_others(target: Service, tmp_path: Path) -> None:
    """Open sockets that send nothing (or half a preface) while a real migration runs."""
    host, _, port = target.address.rpartition(":")
    idle = [socket.create_connection((host, int(port)), timeout=5) for _ in range(4)]
    idle[0].sendall(b"PRI * HTTP/2.0\r\n")
    try:
        lb = Lab(tmp_path)
        try:
            source = lb.start("source")
            ctl = SourceControl(source.address)
            rec = start_run(ctl, scenario_toml("beside-idle-sockets"), "legacy",
                            target.address).result(60)
            ctl.close()
            assert rec.outcome == "completed" and rec.verified, rec.error
            stop_cleanly(source)
        finally:
            lb.close()
    finally:
        for s in idle:
            s.close()


# ---------------------------------------------------------------- multifd device state (QEMU 10)


def device_state(target: Service, packets: Sequence[tuple[pk.DeviceState, bytes]],
                 then: Sequence[pb.SourceMessage] = (STOP,), hold: float = 10.0,
                 **over: Any) -> grpc.RpcError | None:
    """A session with one multifd channel: setup, `then` on the main stream, then
    `packets` on the channel; the status that ended the main stream."""
    accepted: queue.Queue[pb.SetupAccepted] = queue.Queue()
    done = threading.Event()
    over = {"multifd_channels": 1, "device_state_transfer": MULTIFD, **over}

    def requests() -> Iterator[pb.SourceMessage]:
        yield setup(**over)
        acc = accepted.get(timeout=10)
        ram = np.zeros((RAM // PAGE, PAGE), np.uint8)
        with MultifdSender("127.0.0.1", acc.multifd_port, bytes(acc.multifd_token), 1, ram,
                           heartbeat_timeout_s=5.0) as sender:
            sender.connect(5.0)
            yield from then
            for ds, data in packets:
                asyncio.run(sender.submit_device_state(ds, data))
            done.wait(hold)

    with grpc.insecure_channel(target.address) as ch:
        try:
            for r in pbg.MigrationStub(ch).Migrate(requests(), timeout=20):
                if r.WhichOneof("body") == "setup_accepted":
                    accepted.put(r.setup_accepted)
        except grpc.RpcError as e:
            return e
        finally:
            done.set()
    return None


def final(idx: int, offset: int, data: bytes, image: int = DEV_STOP, last: bool = False,
          device: int = 0, kind: int = pk.DS_KIND_FINAL) -> tuple[pk.DeviceState, bytes]:
    return pk.DeviceState(device, kind, idx, offset, image, last), data


def test_device_state_for_a_main_stream_session_fails_it(target: Service) -> None:
    err = device_state(target, [final(0, DEV_INITIAL, b"xy", last=True)],
                       device_state_transfer=pb.DEVICE_STATE_TRANSFER_MAIN)
    assert err is not None and err.code() == Code.UNAVAILABLE, err
    assert "this session has 0 device(s) with multifd device state" in str(err.details())
    wait_until(lambda: no_sessions(target.address), 10, "the session to be freed")


def test_multifd_device_state_needs_multifd_channels(target: Service) -> None:
    refused(target, [setup(device_state_transfer=MULTIFD)], Code.FAILED_PRECONDITION,
            "setup.device_state_transfer = MULTIFD needs setup.multifd_channels > 0")


@pytest.mark.parametrize(("packets", "code", "words"), [
    ([final(0, DEV_INITIAL, b"x", device=4)], Code.UNAVAILABLE, "device 4, this session has 1"),
    ([final(0, DEV_INITIAL, b"xy"), final(0, DEV_INITIAL + 2, b"xy")], Code.UNAVAILABLE,
     "device 0 packet 0 arrived twice"),
    ([final(0, DEV_INITIAL + DEV_STOP - 1, b"xy")], Code.OUT_OF_RANGE, "beyond device vf0"),
    ([final(0, DEV_INITIAL, b"xy", image=0)], Code.UNAVAILABLE, "image_bytes 0: required"),
    ([final(0, 0, b"xy", image=DEV_INITIAL - 1, kind=pk.DS_KIND_INITIAL)], Code.OUT_OF_RANGE,
     f"image_bytes = {DEV_INITIAL - 1} for a INITIAL image of device vf0: allowed exactly"),
], ids=["device", "twice", "range", "image-bytes", "initial-length"])
def test_bad_device_state(target: Service, packets: list[tuple[pk.DeviceState, bytes]],
                          code: grpc.StatusCode, words: str) -> None:
    err = device_state(target, packets)
    assert err is not None and err.code() == code, err
    assert words in str(err.details()), err.details()
    wait_until(lambda: no_sessions(target.address), 10, "the session to be freed")


def test_complete_waits_for_device_state_that_never_comes(target: Service) -> None:
    """device_state_transfer = MULTIFD, but no device state: Complete fails after the
    heartbeat timeout, naming the device, instead of waiting for ever."""
    t0 = time.monotonic()
    err = device_state(target, [], then=[STOP, pb.SourceMessage(complete=pb.Complete(
        device_next_seq=[0]))], heartbeat_timeout_s=1.0)
    assert err is not None and err.code() == Code.DEADLINE_EXCEEDED, err
    assert "multifd device_state for device 0 (vf0)" in str(err.details())
    assert time.monotonic() - t0 < 8


@pytest.mark.parametrize(("second", "code", "words"), [
    (final(1, DEV_INITIAL + 2, b"xy", image=DEV_STOP - 1), Code.INVALID_ARGUMENT,
     "image_bytes = 1048575: the FINAL image (2 of 1048576 bytes written)"),
    (final(1, 0, b"", last=True), Code.DATA_LOSS,
     "multifd device_state.last: device vf0's FINAL image (2 of 1048576 bytes written) never "
     "reached its image_bytes"),
], ids=["length-changes", "last-inside-an-image"])
def test_bad_image_length_in_multifd_device_state(
        target: Service, second: tuple[pk.DeviceState, bytes], code: grpc.StatusCode,
        words: str) -> None:
    err = device_state(target, [final(0, DEV_INITIAL, b"xy"), second])
    assert err is not None and err.code() == code, err
    assert words in str(err.details()), err.details()
    wait_until(lambda: no_sessions(target.address), 10, "the session to be freed")


def test_a_handled_refusal_logs_one_warning_and_no_traceback(target: Service) -> None:
    """Issue 23, item 5: bad device state on the multifd channels ends its session; the main
    stream's reader then finds its call aborted. That aftermath is not a second error: the
    target logs the refusal as WARNING (once per session) and no ERROR, no traceback. (The
    reader sees the abort only when it is waiting at that moment, so the test makes several.)"""
    before = target.log_path.read_text(errors="replace")
    sessions_made = 6
    for _ in range(sessions_made):
        err = device_state(target, [final(0, DEV_INITIAL + DEV_STOP - 1, b"xy")], hold=2.0)
        assert err is not None and err.code() == Code.OUT_OF_RANGE, err
        wait_until(lambda: no_sessions(target.address), 10, "the session to be freed")
    time.sleep(0.5)  # the readers' aftermath, if any, is logged by now
    new = target.log_path.read_text(errors="replace")[len(before):]
    assert "Traceback" not in new and " ERROR " not in new, new
    assert new.count("migration refused: OUT_OF_RANGE") == sessions_made, new


class DeafProxy:
    """A TCP relay between a gRPC client and the target that, once told, stops reading what
    the target sends: a source that does not drain the return path, at the socket level.
    Its receive buffer is tiny, so the target's bytes fill the TCP window at once."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.deaf = threading.Event()
        self.closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        client, _ = self.listener.accept()
        upstream = socket.socket()
        upstream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)  # before connect
        upstream.connect(self.target)
        threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
        threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, return_path: bool) -> None:
        with contextlib.suppress(OSError):
            while not self.closed.is_set():
                if return_path and self.deaf.is_set():
                    time.sleep(0.05)  # read nothing more: the target's window closes
                    continue
                data = src.recv(65536)
                if not data:
                    return
                dst.sendall(data)

    def close(self) -> None:
        self.closed.set()
        self.listener.close()


def test_a_source_that_does_not_read_the_return_path_is_named_so(target: Service) -> None:
    """Issue 23, item 7: a source that stops reading the target's messages cannot send either
    (the HTTP/2 credit it needs waits behind them), though it believes it is sending. The
    target's error says so, instead of only "the source sent nothing"."""
    proxy = DeafProxy(target.address)
    sid = f"deaf-{os.urandom(3).hex()}"
    before = target.log_path.read_text(errors="replace")

    def requests() -> Iterator[pb.SourceMessage]:
        yield setup(sid, heartbeat_timeout_s=2.0)
        time.sleep(0.5)
        proxy.deaf.set()
        for i in range(100_000):  # keeps "sending" (blocks once the credit is gone)
            yield pb.SourceMessage(ping=pb.Ping(seq=i + 1, source_send_ns=1))
            first = (i * 16) % (RAM // PAGE - 16)
            yield ram(range(first, first + 16))

    try:
        with grpc.insecure_channel(proxy.address) as ch:
            call = pbg.MigrationStub(ch).Migrate(requests(), timeout=30)
            wait_until(lambda: "does not read the return path" in
                       target.log_path.read_text(errors="replace")[len(before):], 20,
                       "the target's diagnosis")
            call.cancel()
    finally:
        proxy.close()
    new = target.log_path.read_text(errors="replace")[len(before):]
    assert "DEADLINE_EXCEEDED: the source sent nothing for 2s" in new, new
    assert "TCP receive window is full" in new, new
    wait_until(lambda: no_sessions(target.address), 10, "the session to be freed")
