"""Found by the soak (bench/soak.py --seed 3 --fault-share 0 --no-netns): the source kept
every finished run's guest RAM. Its run table keeps the last 200 finished runs (for Watch
and Cancel after the end), and each entry held the whole Migration, guest RAM included: the
idle source grew by about one guest per run (126 MiB -> 1276 MiB after 30 runs of 8-64 MiB
guests). A finished run needs only its record and samples."""

from __future__ import annotations

import time

import pytest
from faultlab import scenario_toml, start_run

from migbed.experiments.controller import SourceControl
from testkit.harness import Lab, sessions
from testkit.procstat import rss_bytes

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

MiB = 1 << 20
RUNS = 6


def test_source_frees_a_finished_runs_guest(lab: Lab) -> None:
    target, source = lab.start("target"), lab.start("source")
    ctl = SourceControl(source.address)
    toml = scenario_toml("leak-check", guest={"ram-size": "64MiB"},
                         migration={"max-bandwidth": "1GiB/s"})
    after: list[int] = []
    for i in range(RUNS):
        rec = start_run(ctl, toml, "legacy", target.address, f"leak-{i}").result(60)
        assert rec.outcome == "completed" and rec.verified, f"{rec.outcome}: {rec.error}"
        assert sessions(source.address) == []
        time.sleep(0.3)
        after.append(rss_bytes(source.process.pid))
    ctl.close()
    grown = after[-1] - after[0]
    # Holding the guests would add 5 x 64 MiB = 320 MiB; allocator noise stays well under 128.
    assert grown < 128 * MiB, (f"the idle source grew by {grown / MiB:.0f} MiB over {RUNS - 1} "
                               f"finished 64 MiB runs: {[round(r / MiB) for r in after]} MiB")
