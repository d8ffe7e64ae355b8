"""Turnaround: wall time of the default `migbed run` (the comparison a user runs first).

    .venv/bin/python bench/turnaround.py [--repeat 1] [-- extra migbed run arguments]

Runs `migbed run --out TMP --no-progress` as a user would (legacy vs switchover-ack,
3 repeats each, the default scenario (cover-letter), two local service processes, the report) and
times it from the outside. The run records say where the time went: the migrations
themselves (QEMU's total-time per run, and the guest boot + warm-up before each) vs the
rest (process start, health checks, the report). Goal: under 2 minutes.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, header, median, table

from migbed.measure.record import load_results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=1, help="times to run the whole command")
    p.add_argument("extra", nargs="*", help="more `migbed run` arguments (after --)")
    args = p.parse_args(argv)
    header("turnaround: wall time of the default `migbed run`")
    cli = [sys.executable, "-m", "migbed.cli.main", "run", "--no-progress",
           *args.extra]
    rows = [["#", "wall s", "runs", "verified", "sum of total-time s", "other s",
             "exit", "goal < 120 s"]]
    walls = []
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="migbed-turnaround-") as tmp:
            out = Path(tmp) / "out"
            t0 = time.monotonic()
            proc = subprocess.run([*cli, "--out", str(out)], cwd=ROOT, capture_output=True,
                                  text=True, check=False)
            wall = time.monotonic() - t0
            walls.append(wall)
            recs = load_results(str(out / "results.json")) if (out / "results.json").exists() \
                else []
            busy = sum(r.total_time_ms for r in recs) / 1e3
            rows.append([str(i + 1), f"{wall:.1f}", str(len(recs)),
                         f"{sum(r.verified for r in recs)}/{len(recs)}", f"{busy:.1f}",
                         f"{wall - busy:.1f}", str(proc.returncode),
                         "yes" if wall < 120 else "NO"])
            print(f"   #{i + 1}: {wall:.1f} s, exit {proc.returncode}", flush=True)
            if proc.returncode:
                print(proc.stdout[-2000:], proc.stderr[-2000:], sep="\n")
            else:
                print("\n".join("   " + line for line in proc.stdout.splitlines()
                                if line.strip()))
    print()
    print(table(rows))
    print(f"\nmedian wall time {median(walls):.1f} s (goal < 120 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
