"""`migbed simulate DATACENTER`: drain a simulated datacenter under each policy.

  migbed simulate --list                 the built-in datacenters
  migbed simulate rack-4to1              a built-in one
  migbed simulate my-dc.toml --out DIR   a datacenter file (docs/datacenter.md: its keys)
  migbed simulate rack-4to1 --set limits.per-source=5   one key changed

Writes summary.json, migrations.csv, series.csv, cdf.png, gantt.png and utilisation.png
into --out (default results/simulate-<name>-<UTC time>) and prints the summary table.
Simulated time, not measured: the model's prediction of each migration (migbed predict)
under the bandwidth the sharing gives it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from migbed.cli.args import UsageError, progress_wanted, writable_folder
from migbed.core.clock import utc_stamp
from migbed.datacenter.spec import builtin_datacenter_text, builtin_datacenters, parse_datacenter, resolve_datacenter


def cmd_simulate(args: argparse.Namespace) -> int:
    if args.list:
        for name in builtin_datacenters():
            spec = parse_datacenter(builtin_datacenter_text(name), name)
            t = spec.topology
            print(f"{name:20s} {t.racks} racks x {t.hosts_per_rack} hosts x {spec.guests_per_host} guests, "
                  f"drain {spec.drain.mode}, policies {', '.join(spec.policies)}")
        return 0
    if not args.datacenter:
        raise UsageError("give a datacenter file or a built-in name (migbed simulate --list)")
    spec = resolve_datacenter(args.datacenter, args.overrides or ())
    out = writable_folder(Path(args.out or Path("results") / f"simulate-{spec.name}-{utc_stamp()}"))
    from migbed.datacenter.report import plot_all, summarise, summary_table, write_results
    from migbed.datacenter.simulator import simulate_datacenter

    t = spec.topology
    print(f"migbed: simulating {spec.name}: {t.racks} racks x {t.hosts_per_rack} hosts x "
          f"{spec.guests_per_host} guests, drain {spec.drain.mode}, per-source {spec.limits.per_source}, "
          f"per-cluster {spec.limits.per_cluster}; results in {out}", flush=True)
    started = time.perf_counter()
    with _ProgressBar(spec, not args.no_progress) as bar:
        results = simulate_datacenter(spec, bar)
    took = time.perf_counter() - started
    paths = write_results(spec, results, out, {"wall_time_s": took})
    if not args.no_plots:
        try:
            paths += plot_all(spec, results, out)
        except ImportError as e:  # matplotlib is an optional extra
            print(f"plots skipped: {e}")
    print()
    print(summary_table([summarise(spec, r) for r in results]))
    print(f"\nsimulated in {took:.1f} s of wall time")
    print("  ".join(str(p) for p in paths), flush=True)
    return 0


class _ProgressBar:
    """A tqdm bar over the migrations that ended (every policy), on a terminal only."""

    def __init__(self, spec: Any, wanted: bool) -> None:
        self.bar: Any = None
        self.wanted = progress_wanted(not wanted)
        self.total = 0
        if spec.drain.mode != "rolling":
            from migbed.datacenter.topology import drained_hosts

            self.total = len(drained_hosts(spec.topology, spec.drain)) * spec.guests_per_host * len(spec.policies)
        else:
            self.total = spec.topology.hosts * spec.guests_per_host * len(spec.policies)

    def __enter__(self) -> Any:
        if not self.wanted:
            return None
        from tqdm import tqdm

        self.bar = tqdm(total=self.total, unit="migration", mininterval=0.5)
        return self.bar.update

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("simulate", help="simulate draining racks or hosts of a datacenter, per policy",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("datacenter", nargs="?", help="a datacenter TOML file or a built-in name")
    p.add_argument("--list", action="store_true", help="list the built-in datacenters")
    p.add_argument("--set", dest="overrides", action="append", metavar="SECTION.KEY=VALUE",
                   help="change one key of the file, e.g. limits.per-source=5 or drain.racks=[0,1] (repeatable)")
    p.add_argument("--out", metavar="DIR", help="results folder (default results/simulate-<name>-<UTC time>)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_simulate)
    return p
