"""Model accuracy: the analytical model's guest-visible downtime against measured runs, cell by
cell, across a built-in sweep (migbed/sweeps/); median absolute error per policy.

    .venv/bin/python bench/model_accuracy.py [--sweep setup-vs-bandwidth] [--repeat 1]
    .venv/bin/python bench/model_accuracy.py --from results/sweep-...   (re-score a sweep)

Goal (issue 16): per policy, median |predicted - measured| within 10 % of the measured value
or 20 ms, whichever is larger.

Inputs of the model beside each cell's scenario: the wire rate, measured in the same run
before the sweep (an unthrottled RAM-only migration of 256 MiB between the same two local
processes: bytes / bulk-stage time), and ModelParams' defaults (stream buffer 8 MiB, resume
2 ms, one dirty sync per 100 ms while the policy waits). The measured value of a cell is
the median over its repeats of guest_downtime_ms (completed, verified runs only).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from _common import header, table

from migbed.experiments.sweep import (
    load_sweep,
    measure_wire_rate,
    predict_cells,
    read_runs,
    read_spec,
    run_sweep,
    services,
    write_spec,
)
from migbed.model import ModelParams

GOAL_SHARE, GOAL_MS = 0.10, 20.0


def score(spec_dir: Path, wire_rate: float) -> list[list[str]]:
    spec, _ = read_spec(spec_dir)
    cells = spec.cells()
    preds = predict_cells(spec, cells, ModelParams(wire_rate=wire_rate, shaped=False if spec.local else None))
    runs = read_runs(spec_dir)
    rows = [["policy", "cells", "median |error| ms", "median |error| %", "within goal", "worst cell (pred/meas ms)"]]
    per_cell = [["cell", "policy", "regime", "measured ms", "predicted ms", "error ms"]]
    for policy in spec.policies:
        errs: list[tuple[float, float, float, str]] = []
        for c, p in zip(cells, preds, strict=True):
            done = [r.record.guest_downtime_ms for r in runs
                    if r.cell == c.index and r.policy == policy and r.record.verified]
            o = p["prediction"]["outcomes"][policy]
            if not done or o["outcome"] != "completed":
                continue
            measured, predicted = statistics.median(done), o["guest_downtime_s"] * 1e3
            errs.append((abs(predicted - measured), measured, predicted, c.label))
            per_cell.append([c.label, policy, p["prediction"]["regime"], f"{measured:.0f}",
                             f"{predicted:.0f}", f"{predicted - measured:+.0f}"])
        if not errs:
            rows.append([policy, "0", "-", "-", "-", "-"])
            continue
        abs_ms = statistics.median(e[0] for e in errs)
        rel = statistics.median(e[0] / e[1] * 100 for e in errs if e[1] > 0)
        ok = sum(e[0] <= max(GOAL_MS, GOAL_SHARE * e[1]) for e in errs)
        worst = max(errs)
        rows.append([policy, str(len(errs)), f"{abs_ms:.0f}", f"{rel:.0f}", f"{ok}/{len(errs)}",
                     f"{worst[3]} ({worst[2]:.0f}/{worst[1]:.0f})"])
    print(table(per_cell))
    print()
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sweep", default="setup-vs-bandwidth", help="a built-in sweep or a sweep file")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--from", dest="from_dir", help="score an existing sweep folder (no runs)")
    ap.add_argument("--wire-rate", type=float, help="bytes/s instead of measuring it")
    ap.add_argument("--out", help="sweep folder to write (default: a temporary one)")
    args = ap.parse_args(argv)
    header(f"model accuracy: predicted vs measured guest downtime ({args.from_dir or args.sweep})")
    if args.from_dir:
        out = Path(args.from_dir)
        wire = args.wire_rate or float(read_spec(out)[1].get("wire_rate", ModelParams().wire_rate))
        print(f"   wire rate {wire / 1e6:.0f} MB/s ({'given' if args.wire_rate else 'from the sweep'})")
    else:
        tmp = tempfile.TemporaryDirectory(prefix="migbed-accuracy-")
        out = Path(args.out or tmp.name) / "sweep"
        spec = replace(load_sweep(args.sweep), repeat=args.repeat)
        with services(out) as (source, target):
            wire = args.wire_rate or measure_wire_rate(source, target)
            print(f"   wire rate {wire / 1e6:.0f} MB/s (measured: unthrottled RAM-only bulk stage)", flush=True)
            write_spec(out, spec, {"wire_rate": wire, "predict_only": False})
            run_sweep(spec, out, source, target, progress=True)
    print(table(score(out, wire)))
    print(f"\ngoal: median |error| <= max({GOAL_MS:.0f} ms, {GOAL_SHARE:.0%} of measured) per policy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
