"""Source and target as local processes: THE process harness.

`migbed run` starts its two services with it; bench/ (bench/_common.py) and the tests
(testkit/, tests/faultlab.py) start theirs with it too, so there is one way a service process
is started (free ports, a log file, an optional wrapper such as `ip netns exec NS`, mutual TLS,
cProfile), health-checked (gRPC health: SERVING) and stopped (SIGTERM, then SIGKILL).
Real processes, real gRPC between them: the same code path as containers or lab hosts.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from migbed.wire.channel import check_health
from migbed.wire.tls import TlsDir


class HarnessError(RuntimeError):
    """A service process that would not start or become healthy; names its log."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host.strip("[]"), 0))
        return int(s.getsockname()[1])


@dataclass
class Service:
    role: str
    address: str
    metrics_address: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, and SIGKILL after `timeout` s; always reaped. A frozen service (SIGSTOP:
        the orchestrator declared it lost) is continued so that it acts on the SIGTERM."""
        if self.process.poll() is None:
            self.process.terminate()
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGCONT)
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


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def service_command(role: str, listen: str, metrics_listen: str, wrapper: Sequence[str] = (),
                    profile_to: Path | None = None, extra_args: Sequence[str] = ()) -> list[str]:
    """The argv of `migbed serve ROLE`; under cProfile (main thread) with `profile_to`."""
    py = [*wrapper, sys.executable]
    if profile_to is not None:
        py += ["-m", "cProfile", "-o", str(profile_to), "-m", "migbed"]
    else:
        py += ["-m", "migbed"]
    return [*py, "serve", role, "--listen", listen, "--metrics-listen", metrics_listen, *extra_args]


def start_service(role: str, log_dir: Path, host: str = "127.0.0.1",
                  extra_args: Sequence[str] | None = None, timeout: float = 30.0,
                  wrapper: Sequence[str] | None = None,
                  tls_dir: str | os.PathLike[str] | None = None,
                  profile_to: Path | None = None, listen: str | None = None,
                  metrics_listen: str | None = None, bound: bool = False,
                  orphan_records: Path | None = None) -> Service:
    """Start `migbed serve ROLE` on HOST and wait until it is SERVING.

    `listen` and `metrics_listen` (HOST:PORT) replace the free ports picked on HOST, for a
    test of exactly which addresses a service binds.

    `bound`: the service belongs to this process (an orchestrator's own services): it stops
    when this process dies, however it dies (`--exit-with-parent`, runtime/parent.py), a
    source appending the records of the runs it then cancels to `orphan_records`; and it
    runs in its own session, so a terminal's ^C reaches only the orchestrator, which
    cancels the runs and records them before it stops its services.

    `wrapper` prefixes the command (ip netns exec NS; HOST is then an address in there); with
    `tls_dir` it serves mutual TLS (and is health-checked as the lab's client)."""
    creds = None
    extra = list(extra_args or [])
    if tls_dir:
        creds = TlsDir(tls_dir).channel_credentials("client")
        extra += ["--tls-dir", str(tls_dir)]
    if bound:
        extra += ["--exit-with-parent", str(os.getpid())]
        if orphan_records is not None and role == "source":
            extra += ["--orphan-records", str(orphan_records.resolve())]
    address = listen or _hostport(host, _any_free_port(host))
    metrics = metrics_listen or _hostport(host, _any_free_port(host))
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{role}.log"
    cmd = service_command(role, address, metrics, wrapper or (), profile_to, extra)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                                start_new_session=bound)
    svc = Service(role, address, metrics, proc, log_path)
    try:
        _wait_serving(svc, timeout, creds)
    except BaseException:
        svc.stop()
        raise
    return svc


def _wait_serving(svc: Service, timeout: float, creds: grpc.ChannelCredentials | None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if svc.process.poll() is not None:
            tail = svc.log_path.read_text(errors="replace")[-2000:]
            raise HarnessError(f"{svc.role} exited with {svc.process.returncode}; see {svc.log_path}:\n{tail}")
        if check_health(svc.address, timeout=0.5, credentials=creds):
            return
        time.sleep(0.1)
    raise HarnessError(f"{svc.role} not healthy within {timeout:g}s; see {svc.log_path}")


@contextlib.contextmanager
def local_stack(log_dir: Path, extra_args: Sequence[str] | None = None,
                tls_dir: str | os.PathLike[str] | None = None,
                target_wrapper: Sequence[str] | None = None, target_host: str = "127.0.0.1",
                profile_dir: Path | None = None, bound: bool = False,
                orphan_records: Path | None = None) -> Iterator[tuple[Service, Service]]:
    """(source, target), both stopped however the block is left. The target may live in a
    network namespace (`target_wrapper`, `target_host`); `profile_dir` gets each one's cProfile;
    `bound` and `orphan_records`: see start_service (an orchestrator's own services)."""
    target = start_service("target", log_dir, host=target_host, extra_args=extra_args,
                           wrapper=target_wrapper, tls_dir=tls_dir,
                           profile_to=profile_dir / "target.prof" if profile_dir else None,
                           bound=bound)
    try:
        source = start_service("source", log_dir, extra_args=extra_args, tls_dir=tls_dir,
                               profile_to=profile_dir / "source.prof" if profile_dir else None,
                               bound=bound, orphan_records=orphan_records)
        try:
            yield source, target
        finally:
            source.stop()
    finally:
        target.stop()
