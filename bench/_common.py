"""Shared plumbing of the benchmarks: services as real processes, runs, memory, tables.

Benchmarks measure; they assert nothing. Every figure they print comes from the run that
prints it, and every ratio compares two things measured back to back in that same run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from migbed.env import netns  # noqa: E402
from migbed.experiments.controller import SourceControl  # noqa: E402
from migbed.measure.record import RunRecord  # noqa: E402
from migbed.wire.channel import check_health  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds: services stopped, namespaces removed


signal.signal(signal.SIGTERM, _exit_on_sigterm)


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def header(title: str) -> None:
    now = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    print(f"== {title}")
    print(f"   {now}; {os.cpu_count()} cores; load average {load_average()}", flush=True)


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def table(rows: list[list[str]]) -> str:
    """Left-aligned first column, right-aligned others, a rule under the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for n, row in enumerate(rows):
        out.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                             for i, (c, w) in enumerate(zip(row, widths, strict=True))))
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------- services as processes


@dataclass
class Proc:
    role: str
    address: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = 20.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_service(role: str, log_dir: Path, profile_to: Path | None = None,
                  prefix: Sequence[str] = (), host: str = "127.0.0.1",
                  timeout: float = 30.0) -> Proc:
    """`migbed serve ROLE` as its own process; with profile_to, under cProfile (main thread).

    prefix wraps the command (``ip netns exec NS``); host is then an address in there."""
    try:
        port = free_port(host)
    except OSError:  # host lives in another network namespace, where every port is free
        port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{role}-{port}.log"
    py: list[str] = [*prefix, sys.executable]
    if profile_to is not None:
        py += ["-m", "cProfile", "-o", str(profile_to)]
        py += [str(ROOT / "migbed" / "cli" / "main.py")]
    else:
        py += ["-m", "migbed.cli.main"]
    cmd = [*py, "serve", role, "--listen", f"{host}:{port}"]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1",
                                     "PYTHONPATH": str(ROOT)})
    p = Proc(role, f"{host}:{port}", proc, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{role} exited with {proc.returncode}:\n"
                               + log_path.read_text()[-2000:])
        if check_health(p.address, timeout=0.5):
            return p
        time.sleep(0.1)
    p.stop()
    raise RuntimeError(f"{role} not healthy within {timeout:g}s; see {log_path}")


@contextlib.contextmanager
def stack(log_dir: Path | None = None, profile_dir: Path | None = None,
          target_prefix: Sequence[str] = (), target_host: str = "127.0.0.1",
          ) -> Iterator[tuple[Proc, Proc]]:
    """A target and a source process; both stopped (SIGTERM, then SIGKILL) however we leave."""
    tmp = None
    if log_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="migbed-bench-")
        log_dir = Path(tmp.name)
    procs: list[Proc] = []
    try:
        procs.append(start_service("target", log_dir,
                                   profile_dir / "target.prof" if profile_dir else None,
                                   prefix=target_prefix, host=target_host))
        procs.append(start_service("source", log_dir,
                                   profile_dir / "source.prof" if profile_dir else None))
        yield procs[1], procs[0]
    finally:
        for p in reversed(procs):
            p.stop()
        if tmp is not None:
            tmp.cleanup()


_RUNS = [0]


def migrate(source: Proc, target_address: str, scenario_toml: str, policy: str,
            on_sample: Callable[..., None] | None = None) -> RunRecord:
    """One migration through the source's Control API; returns its run record."""
    _RUNS[0] += 1
    run_id = f"bench-{os.getpid()}-{_RUNS[0]}-{policy}"
    ctl = SourceControl(source.address)
    try:
        ctl.start(scenario_toml, policy, target_address, run_id)
        return ctl.watch(run_id, on_sample)
    finally:
        ctl.close()


def event_ms(rec: RunRecord, name: str) -> float:
    t = rec.event_time(name)
    if t is None:
        raise RuntimeError(f"run {rec.run_id} has no {name!r} event ({rec.outcome}: {rec.error})")
    return t


def require_ok(rec: RunRecord) -> RunRecord:
    if rec.outcome != "completed" or not rec.verified:
        raise RuntimeError(f"run {rec.run_id}: {rec.outcome}, verified={rec.verified}: {rec.error}")
    return rec


# ---------------------------------------------------------------- memory


def vm_hwm(pid: int) -> int:
    """Peak resident set (VmHWM) of a process, in bytes."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM for {pid}")


def vm_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


class PeakSampler:
    """Polls a set of pids' VmRSS (for reporting alongside the kernel's VmHWM)."""

    def __init__(self, pids: Sequence[int], period_s: float = 0.05) -> None:
        self.pids = list(pids)
        self.peak = dict.fromkeys(self.pids, 0)
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self.period = period_s

    def _run(self) -> None:
        while not self._stop.is_set():
            for p in self.pids:
                with contextlib.suppress(OSError, RuntimeError):
                    self.peak[p] = max(self.peak[p], vm_rss(p))
            self._stop.wait(self.period)

    def __enter__(self) -> PeakSampler:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


def reset_hwm(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs). True if done."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


# ---------------------------------------------------------------- a real link to shape


class NetnsLink(netns.NetnsLink):
    """The benchmarks' link: this end (``host_if``) is where tc shapes egress; 10.214.x.0/30."""

    def __init__(self) -> None:
        super().__init__(prefix="mbb", subnet="10.214")


def can_make_namespaces() -> str:
    """'' when this process may create network namespaces and run tc; else why not."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, tc)"
    for tool in (["ip", "netns", "list"], ["tc", "-V"]):
        try:
            subprocess.run(tool, capture_output=True, check=True, timeout=10)
        except (OSError, subprocess.SubprocessError) as e:
            return f"{tool[0]} unavailable: {e}"
    return ""
