"""Shared by tests/faults, tests/badinput, tests/load and tests/security: real service
processes on loopback (or in a network namespace), a watcher on a running migration, stage
detection, real kills and real link cuts, and the end-of-test checks that nothing leaked.

No mocks: every service is a `migbed serve` process, every call crosses a real socket.
Imported through the conftest.py of each of those folders (they put tests/ on sys.path).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from migbed.env import netns
from migbed.experiments.controller import SourceControl
from migbed.experiments.localstack import Service, start_service
from migbed.measure.record import ProgressSample, RunRecord
from migbed.wire import migration_pb2 as pb
from migbed.wire import migration_pb2_grpc as pbg

IN_CI = os.environ.get("CI", "").lower() == "true"


# ---------------------------------------------------------------- scenarios


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def scenario_toml(name: str, guest: dict[str, Any] | None = None,
                  devices: list[dict[str, Any]] | None = None,
                  migration: dict[str, Any] | None = None,
                  link: dict[str, Any] | None = None) -> str:
    """A scenario file; defaults give a tiny, quick, verified migration."""
    g = {"ram-size": "16MiB", "dirty-rate": "4MiB/s", "working-set": "4MiB", **(guest or {})}
    devs = devices if devices is not None else [{
        "name": "vf0", "initial-bytes": "4MB", "stop-copy-size": "1MB",
        "load-setup-time": "200ms", "load-rate": "1GB/s"}]
    m = {"warmup": "100ms", "heartbeat-timeout": "1s", "max-time": "60s", **(migration or {})}
    lines = [f"name = {_toml_value(name)}", "", "[guest]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in g.items()]
    for d in devs:
        lines += ["", "[[device]]", *(f"{k} = {_toml_value(v)}" for k, v in d.items())]
    lines += ["", "[migration]", *(f"{k} = {_toml_value(v)}" for k, v in m.items())]
    if link:
        lines += ["", "[link]", *(f"{k} = {_toml_value(v)}" for k, v in link.items())]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- waiting


def wait_until(pred: Callable[[], Any], timeout: float, what: str, every: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(every)


# ---------------------------------------------------------------- services


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
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


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

    def start(self, role: str, host: str = "127.0.0.1", extra_args: list[str] | None = None,
              wrapper: list[str] | None = None, tls_dir: Path | None = None) -> Service:
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


def cpu_seconds(pid: int) -> float:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


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


# ---------------------------------------------------------------- one migration, watched


@dataclass
class Watched:
    """A migration started through Control.Start and followed with Control.Watch."""

    control: SourceControl
    run_id: str
    started: float
    samples: list[ProgressSample] = field(default_factory=list)
    record: RunRecord | None = None
    error: BaseException | None = None
    ended: float = 0.0
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _thread: threading.Thread | None = None

    def _follow(self) -> None:
        def on_sample(s: ProgressSample) -> None:
            with self._cond:
                self.samples.append(s)
                self._cond.notify_all()
        try:
            rec = self.control.watch(self.run_id, on_sample, timeout=600)
        except BaseException as e:
            with self._cond:
                self.error = e
        else:
            with self._cond:
                self.record = rec
        with self._cond:
            self.ended = time.monotonic()
            self._cond.notify_all()

    def wait_sample(self, pred: Callable[[ProgressSample], bool], timeout: float,
                    what: str) -> ProgressSample:
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for s in self.samples[seen:]:
                    if pred(s):
                        return s
                seen = len(self.samples)
                if self.record is not None or self.error is not None:
                    rec = self.record
                    raise AssertionError(f"the run ended before {what}: "
                                         f"{rec.outcome + ' ' + rec.error if rec else self.error}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
                self._cond.wait(min(left, 0.1))

    def result(self, timeout: float) -> RunRecord:
        with self._cond:
            self._cond.wait_for(lambda: self.ended > 0, timeout)
        if self.error is not None:
            raise AssertionError(f"watching {self.run_id} failed: {self.error}")
        if self.record is None:
            last = self.samples[-1] if self.samples else None
            where = (f"last sample at {last.t_ms:.0f} ms, phase {last.phase}, "
                     f"ack {last.ack_received}" if last else "no progress sample at all")
            raise AssertionError(f"no record for {self.run_id} within {timeout:g}s ({where}; "
                                 f"source sessions {sessions(self.control.address)})")
        return self.record


def start_run(control: SourceControl, toml: str, policy: str, target: str,
              run_id: str = "") -> Watched:
    run_id = run_id or f"t-{secrets.token_hex(4)}"
    control.start(toml, policy, target, run_id)
    w = Watched(control, run_id, time.monotonic())
    w._thread = threading.Thread(target=w._follow, name=f"watch-{run_id}", daemon=True)
    w._thread.start()
    return w


def wait_stopped(source: Service, scenario: str, policy: str, timeout: float) -> float:
    """Wait until the source stopped the guest (its 'stop' event, read off /metrics)."""
    def stopped() -> bool:
        v = metric_value(metrics_text(source), "migbed_source_last_stop_timestamp_seconds",
                         scenario=scenario, policy=policy)
        return bool(v)
    wait_until(stopped, timeout, f"{scenario}/{policy} to reach stop-copy", every=0.01)
    return time.monotonic()


# ---------------------------------------------------------------- stages, as samples show them


def in_bulk_precopy(ram_bytes: int) -> Callable[[ProgressSample], bool]:
    """Pre-copy's first pass: some RAM sent, most still to go."""
    return lambda s: (s.phase == "precopy" and s.ram_transferred_bytes > 0
                      and s.ram_remaining_bytes > ram_bytes // 2)


def waiting_for_ack(s: ProgressSample) -> bool:
    """All initial data sent, pending fits the threshold, no ACK: the source holds the switch."""
    return (s.phase == "precopy" and not s.ack_received and bool(s.devices)
            and all(d.initial_bytes == 0 for d in s.devices)
            and s.pending_bytes < s.threshold_bytes)


# ---------------------------------------------------------------- a link to cut


def require_root(feature: str) -> None:
    if os.geteuid() == 0 and subprocess.run(["ip", "netns", "list"],
                                            capture_output=True).returncode == 0:
        return
    if IN_CI:
        pytest.fail(f"{feature} needs root and iproute2 in CI", pytrace=False)
    pytest.skip(f"{feature} needs root and iproute2")


class NetnsLink(netns.NetnsLink):
    """A network namespace for the target, joined to this one by a veth pair: a real link
    (10.213.x.0/30) that cut() takes down like a pulled cable and restore() brings back."""

    def __init__(self) -> None:
        super().__init__(prefix="mbf", subnet="10.213")

    def sessions_inside(self, address: str) -> list[str] | None:
        """A service's sessions, asked from inside the namespace (works while the link is
        cut); None when it does not answer."""
        code = ("import sys; sys.path.insert(0, sys.argv[1]); from faultlab import sessions; "
                "print(','.join(sessions(sys.argv[2], 2.0)))")
        out = subprocess.run([*self.wrapper, sys.executable, "-c", code,
                              str(Path(__file__).parent), address],
                             capture_output=True, text=True, timeout=30)
        if out.returncode:
            return None
        return [x for x in out.stdout.strip().split(",") if x]


@contextlib.contextmanager
def lab(log_dir: Path) -> Iterator[Lab]:
    lb = Lab(log_dir)
    try:
        yield lb
    finally:
        lb.close()
