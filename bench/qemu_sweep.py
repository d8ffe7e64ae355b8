"""Real QEMU beside migbed over a sweep: max-bandwidth x dirty-rate, medians of N runs.

    .venv/bin/python bench/qemu_sweep.py [--repeat 3] [--multifd] [--ram-size 256MiB]
                                         [--out results/qemu-sweep-<time>] [--markdown]

Every cell is one `migbed qemu-compare` (migbed/qemu/compare.py): the same RAM-only guest
(ram-size, working-set 32 MiB, downtime-limit 300 ms) migrated by real QEMU (TCG here) and
by migbed's legacy policy, back to back. max-bandwidth {64 MiB/s, 128 MiB/s, unlimited
(100 GiB/s on both sides)} x dirty-rate {0, 16, 48 MiB/s}. Prints, per cell, the median
QEMU and migbed value of each goal row and whether the goal is met on the medians; writes
every comparison (both records, QEMU's samples) as JSON. --multifd adds `multifd = true`
to the scenario (migbed must know the key; QEMU gets multifd on both sides).
Measures; asserts nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from pathlib import Path

from _common import header, load_average, scenario_toml, table

from migbed.core.scenario import ScenarioError, parse_scenario
from migbed.qemu.compare import MigbedRunError, run_comparison
from migbed.qemu.install import QemuSetupError
from migbed.qemu.table import GOALS
from migbed.qemu.vm import QemuRunError

UNLIMITED = "100GiB/s"  # migbed's largest max-bandwidth; QEMU gets the same number
BANDWIDTHS = ["64MiB/s", "128MiB/s", UNLIMITED]
DIRTY_RATES = ["0MiB/s", "16MiB/s", "48MiB/s"]
SHOWN = [("total-time", "ms"), ("transferred", "MiB"), ("dirty-sync-count", ""),
         ("downtime", "ms"), ("guest stall", "ms")]


def scenario_text(ram: str, bandwidth: str, dirty: str, multifd: bool) -> str:
    """The named comparison's scenario (migbed/comparisons/comparisons.toml) for one cell."""
    overrides = [f"guest.ram-size={ram}", f"guest.dirty-rate={dirty}", f"migration.max-bandwidth={bandwidth}"]
    return scenario_toml("qemu-sweep", *overrides, *(["migration.multifd=true"] if multifd else []))


def _fmt(v: float, unit: str) -> str:
    return f"{v / 2**20:.0f}" if unit == "MiB" else f"{v:.0f}"


def cell_summary(rows_per_run: list[dict[str, dict[str, float | None]]]) -> dict[str, dict[str, object]]:
    """Per goal row: median QEMU and migbed values over the runs, and the goal on the medians."""
    out: dict[str, dict[str, object]] = {}
    for name, _ in SHOWN:
        qs = [float(v) for r in rows_per_run if (v := r[name]["qemu"]) is not None]
        ms = [float(v) for r in rows_per_run if (v := r[name]["migbed"]) is not None]
        if not qs or not ms:
            out[name] = {"qemu": None, "migbed": None, "met": None}
            continue
        q, m = statistics.median(qs), statistics.median(ms)
        out[name] = {"qemu": q, "migbed": m, "met": GOALS[name].check(q, m), "runs": len(qs)}
    return out


def render(cells: list[tuple[str, str, dict[str, dict[str, object]]]], markdown: bool) -> str:
    head = ["max-bandwidth", "dirty-rate", *[f"{n} {u}".strip() + " QEMU/migbed (migbed/QEMU)" for n, u in SHOWN]]
    rows = [head]
    for bw, dirty, summary in cells:
        row = [bw, dirty]
        for name, unit in SHOWN:
            s = summary[name]
            if s["qemu"] is None:
                row.append("-")
                continue
            mark = "ok" if s["met"] else "MISS"
            q, m = float(s["qemu"]), float(s["migbed"])  # type: ignore[arg-type]
            ratio = f" ({m / q:.2f}x)" if q else ""  # migbed / QEMU, same run
            row.append(f"{_fmt(q, unit)} / {_fmt(m, unit)}{ratio} {mark}")
        rows.append(row)
    if not markdown:
        return table(rows)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--multifd", action="store_true")
    p.add_argument("--ram-size", default="256MiB")
    p.add_argument("--accel", choices=["tcg", "kvm", "auto"], default="tcg")
    p.add_argument("--out")
    p.add_argument("--bandwidths", nargs="+", default=BANDWIDTHS, help="max-bandwidth values")
    p.add_argument("--dirty-rates", nargs="+", default=DIRTY_RATES, help="dirty-rate values")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown too")
    args = p.parse_args()
    if not 1 <= args.repeat <= 20:
        print("--repeat: 1 to 20", file=sys.stderr)
        return 2
    out = Path(args.out or f"results/qemu-sweep-{dt.datetime.now():%Y%m%d-%H%M%S}")
    header(f"QEMU beside migbed: {len(args.bandwidths)}x{len(args.dirty_rates)} cells, {args.repeat} run(s) "
           f"each, ram-size {args.ram_size}, multifd {'on' if args.multifd else 'off'}")
    cells, every = [], []
    started = time.monotonic()
    for bw in args.bandwidths:
        bw_label = "unlimited" if bw == UNLIMITED else bw
        for dirty in args.dirty_rates:
            runs = []
            for n in range(args.repeat):
                folder = out / f"{bw.replace('/', 'p')}-{dirty.replace('/', 'p')}-{n}"
                try:
                    sc = parse_scenario(scenario_text(args.ram_size, bw, dirty, args.multifd))
                    cmp = run_comparison(sc, folder, args.accel)
                except (ScenarioError, QemuSetupError, QemuRunError, MigbedRunError) as e:
                    print(f"qemu_sweep: error in {bw_label} x {dirty}: {e}", file=sys.stderr)
                    return 2
                rows = {r.name: {"qemu": r.qemu, "migbed": r.migbed} for r in cmp.rows}
                runs.append(rows)
                every.append({"max-bandwidth": bw_label, "dirty-rate": dirty, "repeat": n,
                              "folder": str(folder), **cmp.to_dict()})
                print(f"   {bw_label:>9} x {dirty:>7} #{n + 1}: " + ", ".join(
                    f"{name} {_fmt(rows[name]['qemu'] or 0, u)}/{_fmt(rows[name]['migbed'] or 0, u)}"
                    for name, u in SHOWN), flush=True)
            cells.append((bw_label, dirty, cell_summary(runs)))
    print(f"\nmedians of {args.repeat} run(s), QEMU / migbed, goal on the medians "
          f"({time.monotonic() - started:.0f} s; load average now {load_average()}):\n")
    print(render(cells, markdown=False))
    if args.markdown:
        print()
        print(render(cells, markdown=True))
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps(
        {"repeat": args.repeat, "multifd": args.multifd, "ram_size": args.ram_size,
         "cells": [{"max-bandwidth": b, "dirty-rate": d, "medians": s} for b, d, s in cells],
         "runs": every}, indent=1))
    print(f"\nJSON: {out / 'sweep.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
