"""A short randomized fault soak (bench/soak.py is the long one): seeded migrations against
real source and target processes, the target in its own network namespace, a nemesis that
kills, freezes, cuts the link or cancels at random moments, and the checker after every run.

The seed is random unless MIGBED_SOAK_SEED is set; it is printed first and in the failure,
with the command that replays it. Needs root and iproute2 (the link cuts): fails, never
skips, without them.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

import pytest
from soaklib import Soak, SoakConfig

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

DURATION_S = 45.0  # no new run after this; a run in flight and its checks finish


def test_short_soak_keeps_every_promise(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("the soak needs root (a network namespace for the target's link)", pytrace=False)
    if subprocess.run(["ip", "netns", "list"], capture_output=True).returncode != 0:
        pytest.fail("the soak needs iproute2 (`ip netns`)", pytrace=False)
    seed = int(os.environ.get("MIGBED_SOAK_SEED") or secrets.randbelow(10**9))
    command = f"sudo .venv/bin/python bench/soak.py --seed {seed} --duration {DURATION_S:g} --fault-share 0.8"
    cfg = SoakConfig(seed=seed, duration_s=DURATION_S, max_runs=60, fault_share=0.8,
                     log_dir=tmp_path / "logs", command=command)
    summary = Soak(cfg).run()
    print(summary.text())
    assert summary.violations == [], summary.text()
    # The nemesis really struck (else the checks above prove nothing about faults).
    assert summary.runs >= 5 and sum(summary.faults.values()) >= 3, summary.text()
