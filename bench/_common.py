"""Shared plumbing of the benchmarks: services as real processes, runs, memory, tables.

Benchmarks measure; they assert nothing. Every figure they print comes from the run that
prints it, and every ratio compares two things measured back to back in that same run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from migbed.comparisons import comparison  # noqa: E402
from migbed.experiments.controller import SourceControl  # noqa: E402
from migbed.experiments.localstack import Service, free_port, local_stack  # noqa: E402
from migbed.measure.record import RunRecord  # noqa: E402
from testkit import netns  # noqa: E402
from testkit.procstat import PeakSampler, hwm_bytes, reset_hwm, rss_bytes  # noqa: E402

__all__ = ["GiB", "MiB", "PeakSampler", "Proc", "RunRecord", "free_port", "reset_hwm", "vm_hwm", "vm_rss"]

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


# ---------------------------------------------------------------- services as processes

# The one process harness (migbed.experiments.localstack) starts, health-checks and stops them.
Proc = Service


@contextlib.contextmanager
def stack(log_dir: Path | None = None, profile_dir: Path | None = None,
          target_prefix: Sequence[str] = (), target_host: str = "127.0.0.1",
          ) -> Iterator[tuple[Service, Service]]:
    """A target and a source process; both stopped (SIGTERM, then SIGKILL) however we leave.
    With profile_dir, each runs under cProfile (main thread): source.prof, target.prof."""
    with contextlib.ExitStack() as cleanup:
        if log_dir is None:
            log_dir = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="migbed-bench-")))
        # bound: a benchmark killed outright leaves no service behind (runtime/parent.py)
        yield cleanup.enter_context(local_stack(log_dir, target_wrapper=target_prefix,
                                                target_host=target_host, profile_dir=profile_dir,
                                                bound=True))


# ---------------------------------------------------------------- scenarios, as named data


def scenario_toml(comparison_name: str, *overrides: str) -> str:
    """The TOML of a named comparison's scenario (migbed/comparisons/comparisons.toml) with
    `KEY=VALUE` overrides, validated: benchmarks keep no scenario text of their own."""
    return comparison(comparison_name).resolve(overrides).source_text


def policies_of(comparison_name: str) -> list[str]:
    return list(comparison(comparison_name).policies)


_RUNS = [0]


def migrate(source: Service, target_address: str, scenario_toml: str, policy: str,
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

vm_hwm = hwm_bytes
vm_rss = rss_bytes


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
