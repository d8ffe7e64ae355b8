"""Shared by tests/faults, tests/badinput, tests/load and tests/security: a watcher on a
running migration, stage detection and real link cuts, on top of testkit (the Lab of service
processes, kills, sessions, ports and metrics, re-exported here) and the one process harness
(migbed.experiments.localstack).

No mocks: every service is a `migbed serve` process, every call crosses a real socket.
pytest's pythonpath (pyproject.toml) puts tests/ and the repository root on sys.path.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from migbed.core.overrides import dump_toml
from migbed.experiments.controller import SourceControl
from migbed.experiments.localstack import Service, start_service
from migbed.measure.record import ProgressSample, RunRecord
from testkit import netns
from testkit.harness import (
    Lab,
    control_stub,
    idle_cpu,
    kill9,
    lab,
    metric_value,
    metrics_text,
    no_sessions,
    port_is_free,
    port_of,
    sessions,
    stop_cleanly,
    wait_until,
)
from testkit.procstat import cpu_seconds, rss_bytes

__all__ = ["Lab", "Service", "control_stub", "cpu_seconds", "idle_cpu", "kill9", "lab", "metric_value",
           "metrics_text", "no_sessions", "port_is_free", "port_of", "rss_bytes", "sessions",
           "start_service", "stop_cleanly", "wait_until"]

IN_CI = os.environ.get("CI", "").lower() == "true"


# ---------------------------------------------------------------- scenarios


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
    data: dict[str, Any] = {"name": name, "guest": g, "device": devs, "migration": m}
    if link:
        data["link"] = link
    return dump_toml(data)


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
        code = ("import sys; sys.path[:0] = sys.argv[1:3]; from testkit.harness import sessions; "
                "print(','.join(sessions(sys.argv[3], 2.0)))")
        tests = Path(__file__).resolve().parent
        out = subprocess.run([*self.wrapper, sys.executable, "-c", code,
                              str(tests.parent), str(tests), address],
                             capture_output=True, text=True, timeout=30)
        if out.returncode:
            return None
        return [x for x in out.stdout.strip().split(",") if x]
