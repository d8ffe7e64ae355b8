"""Speed of `migbed simulate`: wall time and peak RSS of a datacenter-scale drain.

    .venv/bin/python bench/datacenter_speed.py [wave-10k | FILE] [--profile]

Goal (issue 25): 10 000 hosts x 20 guests simulated in at most 60 s, memory bounded. Prints
per policy the migrations, the sharing solves, the model runs (bandwidth classes), and for
the whole run the wall time, CPU time and peak RSS (ru_maxrss), with the load average.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import resource
import time

from _common import header, table

from migbed.datacenter.report import summarise
from migbed.datacenter.simulator import simulate_datacenter
from migbed.datacenter.spec import resolve_datacenter


def _cpu() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("datacenter", nargs="?", default="wave-10k")
    ap.add_argument("--profile", action="store_true", help="print the 25 costliest functions (with --serial)")
    ap.add_argument("--serial", action="store_true", help="the policies one after another in this process")
    args = ap.parse_args(argv)
    spec = resolve_datacenter(args.datacenter)
    t = spec.topology
    header(f"datacenter speed: {spec.name}, {t.racks} racks x {t.hosts_per_rack} hosts x "
           f"{spec.guests_per_host} guests, drain {spec.drain.mode}, policies {', '.join(spec.policies)}")
    wall, cpu = time.perf_counter(), _cpu()
    prof = cProfile.Profile() if args.profile else None
    if prof:
        prof.enable()
    results = simulate_datacenter(spec, parallel=not args.serial)
    if prof:
        prof.disable()
    wall, cpu = time.perf_counter() - wall, _cpu() - cpu
    rows = [["policy", "migrations", "drain (simulated)", "sharing solves", "model runs", "peak in flight"]]
    for r in results:
        s = summarise(spec, r)
        rows.append([r.policy, str(r.migrations), f"{r.drain_time_s / 3600:.2f} h", str(r.solves),
                     str(r.model_runs), str(s["peak_in_flight"])])
    print(table(rows))
    # The policies run in processes of their own: the peak is the largest of them and this one.
    peak_mib = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024
    migrations = sum(r.migrations for r in results)
    print(f"\nwall {wall:.1f} s (CPU {cpu:.1f} s, every process) for {migrations} migrations: "
          f"{wall / max(1, migrations) * 1e6:.0f} us each; peak RSS {peak_mib:.0f} MiB; goal: 10 000 hosts x "
          f"20 guests within 60 s")
    if prof:
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
