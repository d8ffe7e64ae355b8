"""Services bind only the addresses they are told: every listening socket of the process is
read from /proc and compared with --listen and --metrics-listen."""

from __future__ import annotations

import ipaddress
import os
import socket
import time
from pathlib import Path

import pytest
from faultlab import Lab, stop_cleanly

from migbed.experiments.localstack import Service, free_port, start_service

pytestmark = pytest.mark.timeout(120)


def _hex_addr(text: str, v6: bool) -> str:
    if not v6:
        return str(ipaddress.IPv4Address(int.from_bytes(bytes.fromhex(text), "little")))
    raw = bytes.fromhex(text)  # four little-endian 32-bit words
    a6 = ipaddress.IPv6Address(b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))
    # gRPC binds an IPv4 address on a dual-stack socket: ::ffff:127.0.0.2 is 127.0.0.2.
    return str(a6.ipv4_mapped or a6)


def listening(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket of `pid` in LISTEN state."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            link = os.readlink(fd)
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    out = set()
    for table, v6 in (("tcp", False), ("tcp6", True)):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            f = line.split()
            local, state, inode = f[1], f[3], f[9]
            if state == "0A" and inode in inodes:  # 0A = LISTEN
                addr, port = local.split(":")
                out.add((_hex_addr(addr, v6), int(port, 16)))
    return out


def start(lab: Lab, role: str, listen: str, metrics: str, *extra: str) -> Service:
    svc = start_service(role, lab.log_dir, extra_args=extra, listen=listen, metrics_listen=metrics)
    lab.services.append(svc)
    return svc


def refused(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.mark.parametrize("role", ["source", "target"])
def test_binds_only_the_given_addresses(lab: Lab, role: str) -> None:
    # 127.0.0.2 and .3 are loopback too (all of 127/8 is), so a wildcard bind would answer
    # on 127.0.0.1 as well: that is what this test would catch.
    port, mport = free_port("127.0.0.2"), free_port("127.0.0.3")
    # A target also listens for multifd channels (--multifd-listen)
    mfport = free_port("127.0.0.2")
    extra = ["--multifd-listen", f"127.0.0.2:{mfport}"] if role == "target" else []
    svc = start(lab, role, f"127.0.0.2:{port}", f"127.0.0.3:{mport}", *extra)
    want = {("127.0.0.2", port), ("127.0.0.3", mport)}
    assert listening(svc.process.pid) == want | ({("127.0.0.2", mfport)} if extra else set())
    assert refused("127.0.0.1", port) and refused("127.0.0.1", mport)
    assert refused("127.0.0.3", port) and refused("127.0.0.2", mport)
    stop_cleanly(svc)


def test_binds_ipv6_loopback_only(lab: Lab) -> None:
    if not socket.has_ipv6 or not Path("/proc/net/tcp6").exists():
        pytest.skip("no IPv6 on this machine")
    try:
        with socket.socket(socket.AF_INET6) as s6:
            s6.bind(("::1", 0))
            port = int(s6.getsockname()[1])
    except OSError:
        pytest.skip("no ::1 on this machine")
    mport = free_port("127.0.0.1")
    svc = start(lab, "target", f"[::1]:{port}", f"127.0.0.1:{mport}")  # multifd: [::1]:any
    time.sleep(0.1)
    bound = listening(svc.process.pid)
    assert {("::1", port), ("127.0.0.1", mport)} < bound, bound
    [(mf_host, _)] = bound - {("::1", port), ("127.0.0.1", mport)}
    assert mf_host == "::1", bound
    assert refused("127.0.0.1", port)
    stop_cleanly(svc)
