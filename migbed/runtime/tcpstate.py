"""What the kernel knows of a TCP connection that an application's silence hides.

When the source stops sending on the main stream, the target cannot tell from gRPC alone
whether the source is silent or cannot send. One case it can tell from the kernel: a source
that does not read what the target sends (the return path) lets its TCP receive window
fill, and says so in every acknowledgement (a zero window). Then the target's bytes wait in
its socket, including the HTTP/2 WINDOW_UPDATEs the source needs before it may send more,
so the source's writes block while it believes it is sending. The peer's advertised window
is TCP_INFO's `tcpi_snd_wnd` (Linux 5.4 and later); a cut link or a dead peer leaves the
last window it advertised, which is not zero for a peer that was reading. The connection is
found by gRPC's peer address in /proc/self/net/tcp{,6}, its descriptor by the socket's
inode. Linux only; elsewhere, or on an older kernel, nothing is known (None).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

ESTABLISHED = "01"
# Offsets in struct tcp_info (include/uapi/linux/tcp.h).
_LAST_ACK_RECV = 56  # __u32 tcpi_last_ack_recv (ms)
_NOTSENT_BYTES = 144  # __u32 tcpi_notsent_bytes
_SND_WND = 228  # __u32 tcpi_snd_wnd: the peer's advertised receive window (Linux 5.4)
_TCP_INFO_LEN = 240


@dataclass(frozen=True)
class PeerWindow:
    """The kernel's view of one connection, towards the peer."""

    unacked_bytes: int  # /proc/net/tcp tx_queue: written by us, not yet taken by the peer
    window: int  # the receive window the peer last advertised
    last_ack_ms: int  # since the peer last acknowledged anything

    @property
    def peer_not_reading(self) -> bool:
        """Bytes wait for a peer that advertises no room for them: it does not read."""
        return self.window == 0 and self.unacked_bytes > 0


def _hex_address(text: str) -> tuple[str, int]:
    """/proc/net/tcp{,6}'s "HEXADDR:HEXPORT" (the address in host byte order, 32-bit words)."""
    addr, port = text.split(":")
    raw = bytes.fromhex(addr)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    ip = ipaddress.ip_address(words)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip), int(port, 16)


def parse_grpc_peer(peer: str) -> tuple[str, int] | None:
    """gRPC's context.peer(): "ipv4:127.0.0.1:5000" or "ipv6:[::1]:5000" (None otherwise)."""
    kind, _, rest = peer.partition(":")
    if kind not in ("ipv4", "ipv6") or ":" not in rest:
        return None
    host, _, port = rest.rpartition(":")
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return str(ip), int(port)
    except ValueError:
        return None


def find_connection(text: str, peer: tuple[str, int]) -> tuple[int, str] | None:
    """(tx_queue, socket inode) of the established connection to `peer` in one
    /proc/net/tcp{,6} table."""
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) < 10 or f[3] != ESTABLISHED:
            continue
        try:
            if _hex_address(f[2]) != peer:
                continue
            return int(f[4].split(":")[0], 16), f[9]
        except ValueError:
            continue
    return None


def parse_tcp_info(raw: bytes) -> tuple[int, int] | None:
    """(peer's window, ms since its last ACK) from TCP_INFO; None before Linux 5.4."""
    if len(raw) < _SND_WND + 4:
        return None
    (window,) = struct.unpack_from("=I", raw, _SND_WND)
    (last_ack,) = struct.unpack_from("=I", raw, _LAST_ACK_RECV)
    return window, last_ack


def _descriptor(inode: str) -> int | None:
    target = f"socket:[{inode}]"
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{fd}") == target:
                return int(fd)
    return None


def peer_window(peer: str) -> PeerWindow | None:
    """The connection to the gRPC peer `peer`, as the kernel sees it (None: unknown)."""
    where = parse_grpc_peer(peer)
    if where is None or not hasattr(socket, "TCP_INFO"):
        return None
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            found = find_connection(Path(table).read_text(), where)
        except OSError:
            continue
        if found is None:
            continue
        fd = _descriptor(found[1])
        if fd is None:
            return None
        try:  # a duplicate of gRPC's descriptor: closing it leaves gRPC's open
            with socket.socket(fileno=os.dup(fd)) as s:
                info = parse_tcp_info(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO,
                                                   _TCP_INFO_LEN))
        except OSError:
            return None
        return PeerWindow(found[0], *info) if info is not None else None
    return None
