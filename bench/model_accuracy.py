"""Model accuracy: the analytical model's guest-visible downtime against measured runs, cell by
cell, across a built-in sweep (migbed/sweeps/); median absolute error per policy.

    .venv/bin/python bench/model_accuracy.py [--sweep setup-vs-bandwidth] [--repeat 1]
    .venv/bin/python bench/model_accuracy.py --from results/sweep-...   (re-score a sweep)

Goal (issue 16): per policy, median |predicted - measured| within 10 % of the measured value
or 20 ms, whichever is larger.

Inputs of the model beside each cell's scenario: the wire rate, measured in the same run
before the sweep (migbed.experiments.sweep.measure_wire_rate: the best of three RAM-only migrations of
256 MiB between the same two local processes whose RAM all goes in the final copy, with no
rate limit: downtime bytes / downtime), the pre-copy rate, measured likewise
(migbed.experiments.sweep.measure_precopy_rate: the best of three RAM-only migrations of 256
MiB with no dirtying and no rate limit whose RAM all goes in pre-copy: pre-copy bytes /
(decision - pre-copy start); the engine's pre-copy is slower than its final copy), and
ModelParams' defaults (stream buffer 8 MiB,
resume 2 ms, one dirty sync per 100 ms window while the policy waits). The measured value of a cell is
the median over its repeats of guest_downtime_ms (completed, verified runs only).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from _common import header, table

from migbed.experiments.sweep import (
    load_sweep,
    measure_precopy_rate,
    measure_wire_rate,
    predict_cells,
    read_runs,
    read_spec,
    run_sweep,
    services,
    write_spec,
)
from migbed.model import ModelParams
from migbed.report.regime import GOAL_MS, GOAL_SHARE, accuracy, cell_views


def score(spec_dir: Path, wire_rate: float, precopy_rate: float | None) -> list[list[str]]:
    """Per-cell and per-policy tables of predicted vs measured guest downtime."""
    spec, _ = read_spec(spec_dir)
    cells = spec.cells()
    params = ModelParams(wire_rate=wire_rate, precopy_rate=precopy_rate, shaped=False if spec.local else None)
    views = cell_views(spec, predict_cells(spec, cells, params), read_runs(spec_dir))
    per_cell = [["cell", "policy", "regime", "measured ms", "predicted ms", "error ms"]]
    for policy in spec.policies:
        for v in views:
            m, p = v.value(policy, "guest")
            if m is not None and p is not None:
                label = ", ".join(f"{k.rsplit('.', 1)[-1]}={x}" for k, x in v.values.items())
                per_cell.append([label, policy, v.regime, f"{m:.0f}", f"{p:.0f}", f"{p - m:+.0f}"])
    print(table(per_cell))
    print()
    rows = [["policy", "cells", "median |error| ms", "median |error| %", "within goal", "goal met",
             "worst cell (pred/meas ms)"]]
    for policy in spec.policies:
        a = accuracy(views, policy)
        rows.append([policy, str(a.cells), f"{a.median_abs_ms:.0f}", f"{a.median_abs_share:.0%}",
                     f"{a.within_goal}/{a.cells}", "yes" if a.meets_goal else "no",
                     f"{a.worst_label} ({a.worst_predicted_ms:.0f}/{a.worst_measured_ms:.0f})"])
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sweep", default="setup-vs-bandwidth", help="a built-in sweep or a sweep file")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--from", dest="from_dir", help="score an existing sweep folder (no runs)")
    ap.add_argument("--wire-rate", type=float, help="bytes/s instead of measuring it")
    ap.add_argument("--precopy-rate", type=float, help="pre-copy bytes/s instead of measuring it")
    ap.add_argument("--out", help="sweep folder to write (default: a temporary one)")
    ap.add_argument("--policy", action="append", help="repeatable; default: the sweep's own "
                    "(legacy and switchover-ack), e.g. add --policy time-aware")
    args = ap.parse_args(argv)
    header(f"model accuracy: predicted vs measured guest downtime ({args.from_dir or args.sweep})")
    if args.from_dir:
        out = Path(args.from_dir)
        saved = read_spec(out)[1]
        wire = args.wire_rate or float(saved.get("wire_rate", ModelParams().wire_rate))
        # folders saved before the pre-copy rate was measured: the wire rate applies
        precopy = args.precopy_rate or float(saved.get("precopy_rate") or wire)
        print(f"   wire rate {wire / 1e6:.0f} MB/s, pre-copy rate {precopy / 1e6:.0f} MB/s "
              f"({'given' if args.wire_rate else 'from the sweep'})")
    else:
        tmp = tempfile.TemporaryDirectory(prefix="migbed-accuracy-")
        out = Path(args.out or tmp.name) / "sweep"
        spec = replace(load_sweep(args.sweep), repeat=args.repeat)
        if args.policy:
            spec = replace(spec, policies=list(dict.fromkeys(args.policy)))
        with services(out) as (source, target):
            wire = args.wire_rate or measure_wire_rate(source, target)
            print(f"   wire rate {wire / 1e6:.0f} MB/s (measured: RAM-only, all in the final copy)", flush=True)
            precopy = args.precopy_rate or measure_precopy_rate(source, target)
            print(f"   pre-copy rate {precopy / 1e6:.0f} MB/s (measured: RAM-only, all in pre-copy)", flush=True)
            write_spec(out, spec, {"wire_rate": wire, "precopy_rate": precopy, "predict_only": False})
            run_sweep(spec, out, source, target, progress=True)
    print(table(score(out, wire, precopy)))
    print(f"\ngoal: median |error| <= max({GOAL_MS:.0f} ms, {GOAL_SHARE:.0%} of measured) per policy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
