"""A real link on one machine: a network namespace joined to this one by a veth pair.

Used where a test or a benchmark needs a link it can shape (tc shapes what a device sends:
``host_if`` is this end) or cut (``cut()`` takes the namespace's end down: a pulled cable,
packets vanish, no RST, no ICMP). The /30 addresses exist only on these two interfaces, so
traffic never leaves them. Everything is removed on exit, even after an error. Needs root
and iproute2.
"""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Sequence
from typing import Self


def _ip(*args: str) -> None:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=False)
    if r.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")


def run_checked(argv: Sequence[str]) -> str:
    r = subprocess.run(list(argv), capture_output=True, text=True, timeout=10, check=False)
    if r.returncode:
        raise RuntimeError(f"{' '.join(argv)}: {r.stderr.strip() or r.stdout.strip()}")
    return r.stdout


class NetnsLink:
    def __init__(self, prefix: str = "mbn", subnet: str = "10.213") -> None:
        """`prefix` names the namespace and interfaces; `subnet` is a /16 whose free /24
        gets the /30 (distinct per user, so tests and benchmarks never collide)."""
        tag = secrets.token_hex(3)
        self.ns = f"{prefix}-{tag}"
        self.host_if, self.ns_if = f"{prefix}{tag}h", f"{prefix}{tag}n"
        used = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True, check=False).stdout
        k = 1
        for _ in range(100):
            k = secrets.randbelow(250) + 1
            if f"{subnet}.{k}." not in used:
                break
        self.host_ip, self.ns_ip = f"{subnet}.{k}.1", f"{subnet}.{k}.2"
        self.wrapper = ["ip", "netns", "exec", self.ns]

    def __enter__(self) -> Self:
        _ip("netns", "add", self.ns)
        try:
            _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
            _ip("link", "set", self.ns_if, "netns", self.ns)
            _ip("addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
            _ip("link", "set", self.host_if, "up")
            _ip("-n", self.ns, "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_if)
            _ip("-n", self.ns, "link", "set", self.ns_if, "up")
            _ip("-n", self.ns, "link", "set", "lo", "up")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def shape(self, argvs: list[list[str]]) -> str:
        """Run tc argv lists (migbed.env.shaping) here; returns the qdisc shown."""
        for argv in argvs:
            run_checked(argv)
        return run_checked(["tc", "qdisc", "show", "dev", self.host_if]).strip()

    def cut(self) -> float:
        _ip("-n", self.ns, "link", "set", self.ns_if, "down")
        return time.monotonic()

    def restore(self) -> float:
        _ip("-n", self.ns, "link", "set", self.ns_if, "up")
        return time.monotonic()

    def __exit__(self, *exc: object) -> None:
        # Deleting the namespace deletes its veth end, and so the pair.
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True, check=False)

    def leftovers(self) -> list[str]:
        out = []
        if self.ns in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout:
            out.append(f"netns {self.ns}")
        if subprocess.run(["ip", "link", "show", self.host_if], capture_output=True, check=False).returncode == 0:
            out.append(f"link {self.host_if}")
        return out
