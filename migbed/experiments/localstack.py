"""Source and target as two local processes on loopback: what `migbed run` uses by default.

Real processes, real gRPC between them: the same code path as containers or lab hosts,
only the addresses differ. Ports are picked free; readiness is the gRPC health check.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from migbed.wire.channel import check_health
from migbed.wire.tls import TlsDir


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class Service:
    role: str
    address: str
    metrics_address: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _any_free_port(host: str) -> int:
    try:
        return free_port(host)
    except OSError:  # host is in another network namespace: a fresh one has every port free
        return free_port()


def start_service(role: str, log_dir: Path, host: str = "127.0.0.1",
                  extra_args: list[str] | None = None, timeout: float = 30.0,
                  wrapper: list[str] | None = None,
                  tls_dir: str | os.PathLike[str] | None = None) -> Service:
    """Start `migbed serve ROLE` on HOST; `wrapper` prefixes the command (ip netns exec NS);
    with `tls_dir` it serves mutual TLS (and is health-checked as the lab's client)."""
    creds = None
    if tls_dir:
        creds = TlsDir(tls_dir).channel_credentials("client")
        extra_args = [*(extra_args or []), "--tls-dir", str(tls_dir)]
    port, mport = _any_free_port(host), _any_free_port(host)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{role}.log"
    cmd = [*(wrapper or []), sys.executable, "-m", "migbed.cli.main", "serve", role,
           "--listen", f"{host}:{port}", "--metrics-listen", f"{host}:{mport}", *(extra_args or [])]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    svc = Service(role, f"{host}:{port}", f"{host}:{mport}", proc, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{role} exited with {proc.returncode}; see {log_path}:\n"
                               + log_path.read_text()[-2000:])
        if check_health(svc.address, timeout=0.5, credentials=creds):
            return svc
        time.sleep(0.1)
    svc.stop()
    raise RuntimeError(f"{role} not healthy within {timeout:g}s; see {log_path}")


@contextlib.contextmanager
def local_stack(log_dir: Path, extra_args: list[str] | None = None,
                tls_dir: str | os.PathLike[str] | None = None) -> Iterator[tuple[Service, Service]]:
    target = start_service("target", log_dir, extra_args=extra_args, tls_dir=tls_dir)
    try:
        source = start_service("source", log_dir, extra_args=extra_args, tls_dir=tls_dir)
        try:
            yield source, target
        finally:
            source.stop()
    finally:
        target.stop()
