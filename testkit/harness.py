"""What tests and benchmarks add to the process harness (migbed.experiments.localstack):
a Lab of service processes that `close()` always ends, SIGTERM/kill checks, sessions, ports,
/metrics, waiting. No mocks: every service is a `migbed serve` process on a real socket.
"""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc

from migbed.core.address import HostPort
from migbed.experiments.localstack import Service, start_service
from migbed.wire import migration_pb2 as pb
from migbed.wire import migration_pb2_grpc as pbg
from testkit.procstat import cpu_seconds


def wait_until(pred: Callable[[], Any], timeout: float, what: str, every: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(every)


def control_stub(address: str, credentials: grpc.ChannelCredentials | None = None
                 ) -> tuple[grpc.Channel, pbg.ControlStub]:
    ch = (grpc.secure_channel(address, credentials) if credentials is not None
          else grpc.insecure_channel(address))
    return ch, pbg.ControlStub(ch)


def sessions(address: str, timeout: float = 5.0,
             credentials: grpc.ChannelCredentials | None = None) -> list[str]:
    """The sessions a service reports (target: streams in progress; source: runs)."""
    ch, stub = control_stub(address, credentials)
    with ch:
        return list(stub.Status(pb.StatusRequest(), timeout=timeout).sessions)


def no_sessions(address: str) -> bool:
    """True once the service answers and lists no session (False while unreachable)."""
    try:
        return sessions(address, timeout=2.0) == []
    except grpc.RpcError:
        return False


def port_of(address: str) -> tuple[str, int]:
    hp = HostPort.parse(address)
    return hp.host, hp.port


def port_is_free(address: str) -> bool:
    host, port = port_of(address)
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        # Connections in TIME_WAIT are no leak: only a listener (or a bound socket) is.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def metrics_text(svc: Service) -> str:
    with urllib.request.urlopen(f"http://{svc.metrics_address}/metrics", timeout=5) as r:
        return str(r.read().decode())


def metric_value(text: str, name: str, **labels: str) -> float | None:
    """The value of the first sample of `name` whose labels include `labels`."""
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}(\{{[^}}]*\}})?\s+(\S+)$", line)
        if not m:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            return float(m.group(2))
    return None


class Lab:
    """The service processes of one test; `close()` ends every one of them, whatever happened."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.services: list[Service] = []

    def start(self, role: str, host: str = "127.0.0.1", extra_args: Sequence[str] | None = None,
              wrapper: Sequence[str] | None = None, tls_dir: Path | None = None) -> Service:
        svc = start_service(role, self.log_dir, host=host, extra_args=extra_args, wrapper=wrapper,
                            tls_dir=tls_dir)
        self.services.append(svc)
        return svc

    def logs(self) -> str:
        out = []
        for p in sorted(self.log_dir.glob("*.log")):
            out.append(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}")
        return "\n".join(out)

    def close(self) -> None:
        for svc in self.services:
            if svc.process.poll() is None:
                svc.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                svc.process.wait(10)


@contextlib.contextmanager
def lab(log_dir: Path) -> Iterator[Lab]:
    lb = Lab(log_dir)
    try:
        yield lb
    finally:
        lb.close()


def stop_cleanly(svc: Service, timeout: float = 15.0) -> None:
    """SIGTERM; the service must exit by itself (no hang), with status 0, freeing its ports."""
    assert svc.process.poll() is None, f"{svc.role} died early ({svc.process.returncode})"
    svc.process.send_signal(signal.SIGTERM)
    try:
        rc = svc.process.wait(timeout)
    except subprocess.TimeoutExpired:
        svc.process.kill()
        svc.process.wait()
        raise AssertionError(f"{svc.role} did not exit within {timeout:g}s of SIGTERM") from None
    assert rc == 0, f"{svc.role} exited with {rc}"
    if not svc.address.startswith("10."):  # a namespace's ports are checked by deleting it
        wait_until(lambda: port_is_free(svc.address), 5, f"{svc.address} to be free")


def idle_cpu(svc: Service, seconds: float = 0.75, samples: int = 2) -> float:
    """CPU share a service uses while nothing migrates (the least of a few samples: a
    garbage collection is no leak). A guest left running (a resumed guest's vCPU thread that
    nobody stopped) ticks every millisecond and shows in every sample."""
    least = float("inf")
    for _ in range(samples):
        before = cpu_seconds(svc.process.pid)
        time.sleep(seconds)
        least = min(least, (cpu_seconds(svc.process.pid) - before) / seconds)
    return least


def kill9(svc: Service) -> float:
    """kill -9, reaped at once; returns the time it happened (monotonic)."""
    svc.process.send_signal(signal.SIGKILL)
    svc.process.wait(10)
    return time.monotonic()
