"""Scale: one large guest, and many guests at once, with each side's peak memory.

    .venv/bin/python bench/scale.py [--big 4GiB] [--many 8] [--small 256MiB]

1. One guest of --big RAM migrates between a fresh source and target service; it must
   end verified (the target's digest of what it resumed equals the source's).
2. --many guests of --small RAM migrate at once between another fresh pair of services
   (one source, one target: --many concurrent streams), all verified.

Peak memory per side is the kernel's VmHWM (/proc/PID/status, the resident high-water
mark) of that side's service process, read after the runs; goal: at most 1.25 x the guest
RAM that side holds (one big guest, or all the small ones together). The Python runtime,
gRPC and numpy themselves (~100 MiB) count against that headroom.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import sys
import tempfile
import time
from pathlib import Path

from _common import (
    GiB,
    MiB,
    Proc,
    header,
    migrate,
    scenario_toml,
    stack,
    table,
    vm_hwm,
)

from migbed.core.units import parse_size
from migbed.measure.record import RunRecord


def _gib(n: float) -> str:
    return f"{n / GiB:.2f} GiB"


def run_big(ram: int) -> tuple[list[str], RunRecord, dict[str, int], float]:
    toml = scenario_toml("scale-big", f"guest.ram-size={ram // MiB}MiB")
    with tempfile.TemporaryDirectory(prefix="migbed-scale-") as tmp, \
            stack(Path(tmp)) as (source, target):
        base = {"source": vm_hwm(source.pid), "target": vm_hwm(target.pid)}
        t0 = time.monotonic()
        rec = migrate(source, target.address, toml, "legacy")
        wall = time.monotonic() - t0
        peak = {"source": vm_hwm(source.pid), "target": vm_hwm(target.pid)}
    print(f"   idle services: source {base['source'] / MiB:.0f} MiB, target "
          f"{base['target'] / MiB:.0f} MiB", flush=True)
    return [f"{ram / GiB:g} GiB x 1"], rec, peak, wall


def run_many(n: int, ram: int) -> tuple[list[RunRecord], dict[str, int], float]:
    toml = scenario_toml("scale-many", f"guest.ram-size={ram // MiB}MiB")
    with tempfile.TemporaryDirectory(prefix="migbed-scale-") as tmp, \
            stack(Path(tmp)) as (source, target):
        t0 = time.monotonic()
        with cf.ThreadPoolExecutor(n) as pool:
            futures = [pool.submit(_one, source, target, toml) for _ in range(n)]
            recs = [f.result() for f in futures]
        wall = time.monotonic() - t0
        peak = {"source": vm_hwm(source.pid), "target": vm_hwm(target.pid)}
    return recs, peak, wall


def _one(source: Proc, target: Proc, toml: str) -> RunRecord:
    return migrate(source, target.address, toml, "legacy")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--big", default="4GiB")
    p.add_argument("--many", type=int, default=8)
    p.add_argument("--small", default="256MiB")
    args = p.parse_args(argv)
    big, small = parse_size(args.big), parse_size(args.small)
    header(f"scale: one {args.big} guest; {args.many} x {args.small} guests at once")
    rows = [["case", "outcome", "verified", "wall s", "side", "guest RAM", "VmHWM",
             "VmHWM / RAM", "goal <= 1.25"]]

    _, rec, peak, wall = run_big(big)
    print(f"   big: {rec.outcome}, verified {rec.verified}, {wall:.1f} s "
          f"(total {rec.total_time_ms / 1e3:.1f} s, downtime {rec.guest_downtime_ms:.0f} ms)"
          + (f": {rec.error}" if rec.error else ""), flush=True)
    for side in ("source", "target"):
        ratio = peak[side] / big
        rows.append([f"{args.big} x 1", rec.outcome, str(rec.verified), f"{wall:.1f}", side,
                     _gib(big), _gib(peak[side]), f"{ratio:.3f}",
                     "yes" if ratio <= 1.25 else "NO"])

    recs, peak, wall = run_many(args.many, small)
    ok = sum(r.outcome == "completed" and r.verified for r in recs)
    total = small * args.many
    for r in recs:
        if r.outcome != "completed" or not r.verified:
            print(f"   ! {r.run_id}: {r.outcome}: {r.error}")
    print(f"   many: {ok}/{len(recs)} verified, {wall:.1f} s; guest downtimes "
          f"{', '.join(f'{r.guest_downtime_ms:.0f}' for r in recs)} ms", flush=True)
    for side in ("source", "target"):
        ratio = peak[side] / total
        rows.append([f"{args.small} x {args.many}", f"{ok}/{len(recs)} completed",
                     f"{sum(r.verified for r in recs)}/{len(recs)}", f"{wall:.1f}", side,
                     _gib(total), _gib(peak[side]), f"{ratio:.3f}",
                     "yes" if ratio <= 1.25 else "NO"])
    print()
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
