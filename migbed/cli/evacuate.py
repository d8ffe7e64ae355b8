"""`migbed evacuate`: drain one source host of K guests under parallel-migration limits.

Locally the hosts are processes on loopback: one source service holding every guest and
`--targets N` target services. Each policy gets its own evacuation, one after another.
"""
# The runner is migbed/fleet/run.py; `migbed deploy --evacuate` takes the same plan flags
# (add_plan_args).

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import Any

from migbed.cli.args import (
    EXIT_FAILED,
    EXIT_OF_RUNS,
    EXIT_RESULTS_ELSEWHERE,
    add_dilation_arg,
    progress_wanted,
    with_dilation,
)
from migbed.core.policy import DEFAULT_POLICIES, policy_names
from migbed.experiments.follow import runs_outcome
from migbed.experiments.interrupt import Interruption
from migbed.experiments.results import ResultsSink
from migbed.fleet.evacuation import EvacuationResult
from migbed.fleet.planner import ORDERS, EvacuationPlan, Limits
from migbed.fleet.run import finish, guests_from_scenario, local_hosts, run_policies


def cmd_evacuate(args: argparse.Namespace) -> int:
    from migbed.core.scenario import DEFAULT_SCENARIO, resolve_scenario

    sc = resolve_scenario(args.scenario)  # the one resolver: a file or a built-in name
    sc, _, _ = with_dilation(sc, args.scenario or DEFAULT_SCENARIO, (), args.time_dilation)
    name, toml = sc.name, sc.source_text
    fleet = guests_from_scenario(name, toml, args.guests)
    limits = Limits(args.per_source, args.per_cluster, args.per_target)
    EvacuationPlan(fleet, [f"target-{i}" for i in range(args.targets)], limits, args.order)  # validate
    out = Path(args.out or Path("results") / ("evacuate-" + dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")))
    out.mkdir(parents=True, exist_ok=True)
    policies = args.policy or list(DEFAULT_POLICIES)
    print(f"migbed: evacuating {args.guests} x {name} to {args.targets} target(s), at most "
          f"{limits.per_source} in flight per source, {limits.per_cluster} in all; results in {out}",
          flush=True)
    journal = ResultsSink(out)  # each record in results.jsonl as its guest ends
    stop = Interruption("migbed evacuate")
    with stop.installed(), local_hosts(out / "logs", args.targets, journal.path) as endpoints:
        results = run_policies(endpoints, fleet, {name: toml}, policies, limits, args.order,
                               args.stop_on_target_loss, progress_wanted(args.no_progress),
                               journal.add, stop)
    finish(results, out)
    return _exit_code(results, stop, journal)


def _exit_code(results: list[EvacuationResult], stop: Interruption, journal: ResultsSink) -> int:
    """As `migbed --help` says: 4 when records went to the fallback, 128+N after stop signal
    N, 3 when a source was lost, 1 unless every guest completed verified, else 0."""
    if journal.saved_elsewhere:
        print(f"migbed: records were not all written where asked; every one is in "
              f"{journal.fallback or journal.path}", file=sys.stderr)
        return EXIT_RESULTS_ELSEWHERE
    if stop.fired:
        print(f"migbed: stopped by {stop.signal_name}: exit {stop.exit_code()}", file=sys.stderr)
        return stop.exit_code()
    code = EXIT_OF_RUNS[runs_outcome([rec for r in results for rec in r.records])]
    return code if code or not any(r.not_started for r in results) else EXIT_FAILED


def _count(lo: int, hi: int, what: str) -> Any:
    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} = {value[:40]!r}: not an integer") from None
        if not lo <= n <= hi:
            raise argparse.ArgumentTypeError(f"{what} = {n}: allowed {lo} .. {hi}")
        return n
    return parse


def add_plan_args(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The plan's flags, the same for `migbed evacuate` and `migbed deploy --evacuate`."""
    p.add_argument("--guests", type=_count(1, 64, "--guests"), default=6, help="guests to evacuate (6)")
    p.add_argument("--per-source", type=_count(1, 64, "--per-source"), default=2,
                   help="in flight per source host (KubeVirt parallelOutboundMigrationsPerNode, 2)")
    p.add_argument("--per-cluster", type=_count(1, 64, "--per-cluster"), default=5,
                   help="in flight in the lab (KubeVirt parallelMigrationsPerCluster, 5)")
    p.add_argument("--per-target", type=_count(0, 64, "--per-target"), default=0,
                   help="in flight into one target host (0 = no limit)")
    p.add_argument("--order", choices=ORDERS, default="first-come")
    p.add_argument("--stop-on-target-loss", action="store_true",
                   help="a lost target stops the plan (default: go on with the other targets)")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("evacuate", help="drain a host of K guests under parallel-migration limits",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", help="TOML file or built-in name (every guest runs it)")
    p.add_argument("--targets", type=_count(1, 8, "--targets"), default=2, help="target hosts (2)")
    p.add_argument("--policy", action="append", choices=policy_names(),
                   help="repeatable; default legacy and switchover-ack")
    add_dilation_arg(p)
    add_plan_args(p)
    p.add_argument("--out", help="results folder (default results/evacuate-<UTC time>)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_evacuate)
    return p
