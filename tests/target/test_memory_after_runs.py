"""The target gives its memory back: after 16 concurrent tiny migrations (each verified),
the idle target's RSS is back near where it started (issue: it stayed at ~710 MB from 58)."""

from __future__ import annotations

import time

import pytest
from faultlab import Lab, no_sessions, rss_bytes, scenario_toml, start_run, stop_cleanly, wait_until

from migbed.experiments.controller import SourceControl

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
MiB = 1 << 20
RUNS = 16
SLACK = 64 * MiB  # allocator and gRPC caches that stay; guests are 16 MiB each


def test_rss_back_near_baseline_after_runs(lab: Lab) -> None:
    target = lab.start("target")
    source = lab.start("source")
    time.sleep(0.5)
    base = rss_bytes(target.process.pid)
    ctl = SourceControl(source.address)
    runs = [start_run(ctl, scenario_toml(f"mem{i}", guest={"seed": 200 + i},
                                         migration={"heartbeat-timeout": "5s"}),
                      "switchover-ack", target.address) for i in range(RUNS)]
    records = [w.result(240) for w in runs]
    ctl.close()
    bad = [(r.run_id, r.outcome, r.error) for r in records
           if not (r.outcome == "completed" and r.verified)]
    assert not bad, bad
    busy = rss_bytes(target.process.pid)
    wait_until(lambda: no_sessions(target.address), 20, "every session to end")
    try:
        wait_until(lambda: rss_bytes(target.process.pid) < base + SLACK, 10,
                   "the target's memory to come back")
    finally:
        print(f"target RSS: {base / MiB:.0f} MiB at start, {busy / MiB:.0f} MiB as the "
              f"{RUNS} runs ended, {rss_bytes(target.process.pid) / MiB:.0f} MiB after")
    stop_cleanly(source)
    stop_cleanly(target)
