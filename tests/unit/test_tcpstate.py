"""The kernel's view of a connection (migbed/runtime/tcpstate.py): a peer that does not read
is told apart from one that does, on real loopback sockets, and the parsers on their own."""

from __future__ import annotations

import socket
import struct
import time

from migbed.runtime.tcpstate import (
    _SND_WND,
    find_connection,
    parse_grpc_peer,
    parse_tcp_info,
    peer_window,
)


def test_grpc_peer_strings() -> None:
    assert parse_grpc_peer("ipv4:127.0.0.1:5000") == ("127.0.0.1", 5000)
    assert parse_grpc_peer("ipv6:[::1]:443") == ("::1", 443)
    assert parse_grpc_peer("ipv6:[::ffff:127.0.0.1]:80") == ("127.0.0.1", 80)
    assert parse_grpc_peer("unix:/tmp/x") is None
    assert parse_grpc_peer("ipv4:nonsense:1") is None


def test_proc_net_tcp_lines() -> None:
    table = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
        "timeout inode\n"
        "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 111 1\n"
        "   1: 0100007F:1F90 0100007F:D431 01 000011E9:00000000 04:00000004 00000000 0 0 222 1\n")
    assert find_connection(table, ("127.0.0.1", 0xD431)) == (0x11E9, "222")
    assert find_connection(table, ("127.0.0.1", 1)) is None
    v6 = ("  sl  local_address remote_address st tx_queue rx_queue tr tm->when retrnsmt uid "
          "timeout inode\n   0: 0000000000000000FFFF00000100007F:9D8B "
          "0000000000000000FFFF00000100007F:AFBC 01 00000A0E:00000000 01:00000012 00000000 "
          "0 0 333 1\n")
    assert find_connection(v6, ("127.0.0.1", 0xAFBC)) == (0xA0E, "333")


def test_tcp_info_fields() -> None:
    raw = bytearray(240)
    struct.pack_into("=I", raw, _SND_WND, 0)
    struct.pack_into("=I", raw, 56, 120)
    assert parse_tcp_info(bytes(raw)) == (0, 120)
    assert parse_tcp_info(bytes(200)) is None  # a kernel before 5.4


def _pair(rcvbuf: int | None) -> tuple[socket.socket, socket.socket, socket.socket]:
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.socket()
    if rcvbuf:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    client.connect(listener.getsockname())
    server, _ = listener.accept()
    return listener, server, client


def test_a_peer_that_does_not_read_is_seen_so() -> None:
    listener, server, client = _pair(rcvbuf=1024)
    try:
        server.setblocking(False)
        try:
            while True:
                server.send(b"x" * 4096)
        except BlockingIOError:
            pass  # everything the peer has room for, and our send buffer, are full
        time.sleep(0.3)  # the zero window is acknowledged
        view = peer_window(f"ipv4:127.0.0.1:{client.getsockname()[1]}")
        assert view is not None and view.peer_not_reading, view
        assert view.window == 0 and view.unacked_bytes > 0
    finally:
        for s in (client, server, listener):
            s.close()


def test_a_peer_that_reads_is_not() -> None:
    listener, server, client = _pair(rcvbuf=None)
    try:
        server.sendall(b"y" * 1000)
        assert client.recv(2000)
        view = peer_window(f"ipv4:127.0.0.1:{client.getsockname()[1]}")
        assert view is not None and not view.peer_not_reading, view
        assert view.window > 0
    finally:
        for s in (client, server, listener):
            s.close()
