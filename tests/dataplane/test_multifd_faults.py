"""Faults and bad input on multifd channels: a clear error on the right side within the
timeout, nothing leaked (the no_leaks fixture counts threads and fds), and the listener
still serves a good migration afterwards."""

from __future__ import annotations

import asyncio
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from faultlab import NetnsLink, require_root
from multifd_lab import (
    PAGE,
    control_packet,
    dial,
    good_transfer,
    hello,
    page_packet,
    peer_closed,
    wait_until,
)

from migbed.dataplane import packet as pk
from migbed.dataplane._io import shutdown_quietly
from migbed.dataplane.receiver import MultifdListener
from migbed.dataplane.sender import MultifdError, MultifdSender, new_token
from migbed.dataplane.tls import client_context, server_context

TIMEOUT = 1.0  # the heartbeat / silence timeout of these tests


def _pump(sender: MultifdSender, pages: int, stop: threading.Event) -> threading.Thread:
    """Submit RAM round after round from a thread until stopped or the sender fails."""
    def run() -> None:
        while not stop.is_set():
            try:
                sender.submit(np.arange(pages))
            except MultifdError:
                return
    t = threading.Thread(target=run, name="test-pump")
    t.start()
    return t


@pytest.mark.parametrize("side", ["source", "target"])
def test_channel_dropped_mid_transfer_fails_both_sides(
        listener: MultifdListener, ram64: np.ndarray, side: str) -> None:
    dst = np.zeros_like(ram64)
    token = new_token()
    session = listener.register(token, dst, 2, PAGE, silence_timeout_s=TIMEOUT)
    sender = MultifdSender("127.0.0.1", listener.port, token, 2, ram64,
                           heartbeat_timeout_s=TIMEOUT)
    stop = threading.Event()
    sender.connect(2.0)
    pump = _pump(sender, ram64.shape[0], stop)
    try:
        wait_until(lambda: session.pages_received > 4000, 5.0)  # mid-transfer
        victim = sender._channels[1].sock if side == "source" else session._conns[1].sock
        shutdown_quietly(victim)
        t_target = wait_until(lambda: session.error is not None, TIMEOUT + 0.5)
        t_source = wait_until(lambda: sender.error is not None, TIMEOUT + 0.5)
        assert "channel 1" in str(session.error)
        assert "dropped" in str(session.error) or "connection lost" in str(session.error)
        assert "multifd channel" in str(sender.error)
        assert max(t_target, t_source) <= TIMEOUT + 0.5

        async def waits() -> None:
            with pytest.raises(MultifdError):
                await session.wait_sync(1, 1.0)
            with pytest.raises(MultifdError):
                await sender.sync(1)

        asyncio.run(waits())
    finally:
        stop.set()
        pump.join(5.0)
        sender.close(abort=True, grace_s=0.5)
        listener.unregister(token)
    assert not pump.is_alive()


def test_idle_channel_lost_is_seen_by_the_sender_through_keepalives(
        listener: MultifdListener, ram64: np.ndarray) -> None:
    src = ram64[:64]
    token = new_token()
    session = listener.register(token, np.zeros_like(src), 2, PAGE, silence_timeout_s=TIMEOUT)
    with MultifdSender("127.0.0.1", listener.port, token, 2, src,
                       heartbeat_timeout_s=TIMEOUT, keepalive_s=0.1) as sender:
        sender.connect(2.0)
        wait_until(lambda: len(session._conns) == 2, 2.0)
        time.sleep(3 * 0.1)  # idle: only keep-alives flow, and the target stays content
        assert session.error is None and sender.error is None
        shutdown_quietly(session._conns[0].sock)
        took = wait_until(lambda: sender.error is not None, TIMEOUT)
        assert took < TIMEOUT
    listener.unregister(token)


def test_a_target_that_stops_reading_fails_the_sender_within_the_heartbeat(
        no_leaks: None, ram64: np.ndarray) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        sender = MultifdSender("127.0.0.1", server.getsockname()[1], new_token(), 1, ram64,
                               heartbeat_timeout_s=0.5)
        sender.connect(2.0)
        conn = server.accept()[0]  # accepted, never read
        _fails_when_never_read(sender, ram64.shape[0], conn)


def _fails_when_never_read(sender: MultifdSender, pages: int, conn: socket.socket) -> None:
    """Pump pages to a target that never reads `conn`: the sender fails after its 0.5 s
    heartbeat and still closes promptly."""
    stop = threading.Event()
    pump = _pump(sender, pages, stop)
    try:
        wait_until(lambda: sender.error is not None, 3.0)
        assert "the target took nothing for 0.5 s" in str(sender.error)
    finally:
        stop.set()
        pump.join(5.0)
        t0 = time.monotonic()
        sender.close(grace_s=0.5)
        assert time.monotonic() - t0 < 2.0
        conn.close()


# ---------------------------------------------------------------- bad input on the port


def _refused(listener: MultifdListener, n_before: int, says: str) -> str:
    wait_until(lambda: len(listener.refusals) > n_before, 2.0)
    line = listener.refusals[-1]
    assert says in line, line
    return line


@pytest.mark.parametrize(("payload", "says"), [
    (b"GET / HTTP/1.1\r\nHost: target\r\n\r\n" + b"x" * 20, "magic 0x20544547 is not multifd's"),
    (b"\x00" * 40, "magic 0x00000000 is not multifd's"),
    (pk.HELLO_STRUCT.pack(pk.MAGIC, 1, 0, bytes(16), 0, 1, PAGE, 16), "version 1 is not supported"),
    (b"MGMF", "closed before its hello"),
    (hello(bytes(16)), "unknown session token"),
], ids=["http", "zeros", "version", "short", "unknown-token"])
def test_bad_hello_is_refused_and_the_listener_serves_on(
        listener: MultifdListener, ram64: np.ndarray, payload: bytes, says: str) -> None:
    n = len(listener.refusals)
    s = dial(listener)
    s.sendall(payload)
    if says == "closed before its hello":
        s.shutdown(socket.SHUT_WR)
    assert peer_closed(s)  # the target closed this connection
    s.close()
    _refused(listener, n, says)
    good_transfer(listener, ram64[:2048])


def test_a_connection_that_never_sends_is_dropped(listener: MultifdListener,
                                                  ram64: np.ndarray) -> None:
    n = len(listener.refusals)
    s = dial(listener)
    t0 = time.monotonic()
    assert peer_closed(s, 3.0)
    assert time.monotonic() - t0 < listener.hello_timeout_s + 1.0
    s.close()
    _refused(listener, n, "no hello within 0.5 s")
    good_transfer(listener, ram64[:2048])


@pytest.mark.parametrize(("kw", "says"), [
    ({"page_size": 8192}, "page_size 8192, this session's is 4096"),
    ({"ram_pages": 17}, "ram_pages 17, this session's guest has 16"),
    ({"channels": 3, "channel": 0}, "channels 3, this session expects 2"),
])
def test_hello_that_does_not_fit_the_session(listener: MultifdListener, ram64: np.ndarray,
                                              kw: dict[str, int], says: str) -> None:
    token = new_token()
    session = listener.register(token, np.zeros((16, PAGE), np.uint8), 2, PAGE, TIMEOUT)
    n = len(listener.refusals)
    s = dial(listener)
    s.sendall(hello(token, **{"channels": 2, **kw}))
    assert peer_closed(s)
    s.close()
    _refused(listener, n, says)
    assert session.error is None  # a stranger's bad hello does not fail the migration
    listener.unregister(token)
    good_transfer(listener, ram64[:2048])


def test_duplicate_channel_is_refused(listener: MultifdListener) -> None:
    token = new_token()
    listener.register(token, np.zeros((16, PAGE), np.uint8), 2, PAGE, TIMEOUT)
    first, second = dial(listener), dial(listener)
    first.sendall(hello(token, channel=0, channels=2))
    wait_until(lambda: 0 in listener._sessions[token]._conns, 2.0)
    n = len(listener.refusals)
    second.sendall(hello(token, channel=0, channels=2))
    assert peer_closed(second)
    _refused(listener, n, "channel 0 is already connected")
    first.close()
    second.close()
    listener.unregister(token)


@pytest.mark.parametrize(("packets", "says"), [
    ([page_packet(0, 0, [3, 16])], "page index 16 is past the end of RAM (allowed 0..15)"),
    ([page_packet(0, 0, [5, 4])], "strictly increasing"),
    ([b"\xde\xad\xbe\xef" * (pk.Layout(PAGE, 16).block // 4)], "magic 0xefbeadde is not multifd's"),
    ([page_packet(0, 0, [1]), page_packet(0, 5, [2])], "seq 5, expected 1"),
    ([page_packet(0, 0, [1], generation=3)], "generation 3 on a page packet"),
    ([page_packet(1, 0, [1])], "channel 1 on channel 0's connection"),
    ([page_packet(0, 0, [1])], "dropped (connection closed) before the final sync"),
    ([], "silent for 1 s"),
    ([pk.encode_burst(pk.Layout(PAGE, 16), pk.Header(0, 0, 0, 0, 0), [np.array([1]), np.array([2])])[
        :pk.Layout(PAGE, 16).block] + pk.encode_burst(pk.Layout(PAGE, 16), pk.Header(0, 0, 5, 0, 0),
                                                      [np.array([2])])], "seq 5, expected 1"),
    ([pk.encode_burst(pk.Layout(PAGE, 16), pk.Header(0, 0, 0, 0, 0), [np.array([5]), np.array([4])])],
     "strictly increasing"),
], ids=["past-end", "unsorted", "garbage", "seq-gap", "generation", "wrong-channel", "dropped",
        "silent", "burst-seq", "burst-order"])
def test_bad_packets_fail_the_session_and_the_listener_serves_on(
        listener: MultifdListener, ram64: np.ndarray, packets: list[bytes], says: str) -> None:
    token = new_token()
    dst = np.zeros((16, PAGE), np.uint8)
    session = listener.register(token, dst, 1, PAGE, TIMEOUT)
    s = dial(listener)
    s.sendall(hello(token))
    for p in packets:
        s.sendall(p)
    if "dropped" in says:
        s.close()
    took = wait_until(lambda: session.error is not None, TIMEOUT + 1.0)
    assert says in str(session.error)
    assert took <= TIMEOUT + 0.5
    if "dropped" not in says:
        assert peer_closed(s)  # the target hung up on the bad channel
        s.close()

    async def waits() -> None:
        with pytest.raises(MultifdError, match="channel 0"):
            await session.wait_sync(1, 1.0)

    asyncio.run(waits())
    listener.unregister(token)
    good_transfer(listener, ram64[:2048])


def test_a_channel_that_never_connects_times_the_sync_out(listener: MultifdListener,
                                                          ram64: np.ndarray) -> None:
    token = new_token()
    src = ram64[:16]
    session = listener.register(token, np.zeros_like(src), 2, PAGE, TIMEOUT)
    s = dial(listener)
    s.sendall(hello(token, channel=0, channels=2))
    s.sendall(control_packet(pk.FLAG_SYNC, 0, 0, 1))

    async def waits() -> None:
        with pytest.raises(TimeoutError, match="channel 0: at sync 1, channel 1: not connected"):
            await session.wait_sync(1, 0.3)

    asyncio.run(waits())
    s.close()
    listener.unregister(token)


def test_register_refuses_bad_arguments(listener: MultifdListener) -> None:
    ram = np.zeros((16, PAGE), np.uint8)
    with pytest.raises(ValueError, match="token must be 16 bytes"):
        listener.register(b"short", ram, 1, PAGE, 1.0)
    with pytest.raises(ValueError, match="page_size 8192 but memory rows are 4096 bytes"):
        listener.register(new_token(), ram, 1, 8192, 1.0)
    with pytest.raises(ValueError, match=r"channels 0 is not in \[1, 64\]"):
        listener.register(new_token(), ram, 0, PAGE, 1.0)
    token = new_token()
    listener.register(token, ram, 1, PAGE, 1.0)
    with pytest.raises(ValueError, match="already registered"):
        listener.register(token, ram, 1, PAGE, 1.0)
    listener.unregister(token)
    with pytest.raises(ValueError, match="pages: index outside RAM"):
        MultifdSender("127.0.0.1", 1, new_token(), 1, ram)._bursts(np.array([16]))


# ---------------------------------------------------------------- the same over TLS


def test_tls_silent_channel_and_silent_handshake(tls_listener: MultifdListener,
                                                 tls_dirs: tuple[Path, Path],
                                                 ram64: np.ndarray) -> None:
    """TLS needs its own timeouts (the ssl module retries a kernel-timed-out read): a
    connection that never starts its handshake is dropped, and a channel that goes quiet
    after its hello fails the session, each within its timeout."""
    n = len(tls_listener.refusals)
    mute = dial(tls_listener)
    assert peer_closed(mute, 3.0)
    mute.close()
    _refused(tls_listener, n, "no hello within 0.5 s")

    token = new_token()
    session = tls_listener.register(token, np.zeros((16, PAGE), np.uint8), 1, PAGE, TIMEOUT)
    ctx = client_context(tls_dirs[0])
    raw = dial(tls_listener)
    s = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    s.sendall(hello(token))
    took = wait_until(lambda: session.error is not None, TIMEOUT + 1.0)
    assert "silent for 1 s" in str(session.error) and took <= TIMEOUT + 0.5
    s.close()
    tls_listener.unregister(token)
    good_transfer(tls_listener, ram64[:1024], channels=2, ssl_context=ctx)


def test_tls_target_that_stops_reading_fails_the_sender(no_leaks: None, tls_dirs: tuple[Path, Path],
                                                        ram64: np.ndarray) -> None:
    sctx = server_context(tls_dirs[0])
    with socket.create_server(("127.0.0.1", 0)) as server:
        sender = MultifdSender("127.0.0.1", server.getsockname()[1], new_token(), 1, ram64,
                               ssl_context=client_context(tls_dirs[0]), heartbeat_timeout_s=0.5)
        result: list[socket.socket] = []
        acceptor = threading.Thread(  # the handshake needs the server side to answer
            target=lambda: result.append(sctx.wrap_socket(server.accept()[0], server_side=True)))
        acceptor.start()
        sender.connect(2.0)
        acceptor.join()
        _fails_when_never_read(sender, ram64.shape[0], result[0])


# ---------------------------------------------------------------- a pulled cable


def _line(proc: subprocess.Popen[str], timeout_s: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
    return proc.stdout.readline().strip() if ready else ""


def test_a_pulled_cable_under_an_idle_channel_fails_both_sides(no_leaks: None,
                                                               ram64: np.ndarray) -> None:
    """The target in a network namespace; the link goes down with no RST and no FIN. The
    idle sender's keep-alives go unacknowledged (TCP_USER_TIMEOUT) and the target hears
    nothing: each side reports the channel within its timeout."""
    require_root("a cut link (network namespace)")
    src = ram64[:64]
    token = new_token()
    with NetnsLink() as link, subprocess.Popen(
            [*link.wrapper, sys.executable, str(Path(__file__).with_name("multifd_lab.py")),
             link.ns_ip, token.hex(), str(src.shape[0]), "1", str(TIMEOUT)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as target:
        port = int(_line(target, 10.0).split()[1])
        sender = MultifdSender(link.ns_ip, port, token, 1, src, heartbeat_timeout_s=TIMEOUT,
                               keepalive_s=0.1)
        try:
            sender.connect(5.0)
            asyncio.run(sender.submit_async(np.arange(src.shape[0])))
            asyncio.run(sender.sync(1))
            link.cut()
            took = wait_until(lambda: sender.error is not None, TIMEOUT + 1.0)
            assert "multifd channel 0: the target took nothing for 1 s" in str(sender.error)
            line = _line(target, TIMEOUT + 1.0 - took)
            assert line.startswith("error channel 0 silent for 1 s"), line
        finally:
            sender.close(grace_s=0.2)
            assert target.stdin is not None
            target.stdin.close()
            target.wait(10)
