"""The simulation's sharing rule against real concurrent migrations on one tbf-shaped link.

    .venv/bin/python bench/datacenter_sharing.py [--rate 1Gbit] [--policy switchover-ack]

Needs root (a network namespace, tc). The target service runs in a namespace behind a veth
pair whose host end tbf shapes (migbed.env.shaping's argv, as bench/shaped_accuracy.py);
the source runs here. Every case starts its migrations at once (the sharing-check scenario,
migbed/scenarios/sharing-check.toml: 192 MiB, a VF of 32 MB, max-bandwidth far above the
link) and compares each migration's total time with `migbed simulate` of the same: one
source host whose NIC is the shaped rate, the same guests, all in flight.

Cases: 1, 2 and 4 equal guests (the link split 1, 2 and 4 ways), and 1 + 1 and 2 + 2 of
unequal size (64 MiB beside 192 MiB): when the small ones end, the big ones' share grows
mid-course, which is where the course re-timed on a changed share (migbed/datacenter/
course.py) can err. Goal (issue 25): each migration's total time within 10 %.
The migrations' QEMU clocks do not start together (the guests boot in one source process,
competing for its CPU; a small guest boots sooner): each run's start is measured (the
record's return on this runner's clock, less its verification and total time) and given to
the simulation as that guest's start ("began": s after the first).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import NetnsLink, Proc, RunRecord, can_make_namespaces, header, migrate, require_ok, stack, table

from migbed.core.scenario import resolve_scenario
from migbed.core.units import parse_bit_rate
from migbed.datacenter.course import CourseCache
from migbed.datacenter.simulator import Simulation
from migbed.datacenter.spec import parse_datacenter
from migbed.env.shaping import LinkShape, clear_commands, shaping_commands

GOAL = 0.10
SHARING_CHECK = "sharing-check"
SMALL = "guest.ram-size=64MiB"
CASES = {  # name -> guests: (count, overrides)
    "1 alone": [(1, "")],
    "2 at once": [(2, "")],
    "4 at once": [(4, "")],
    "1 + 1 small": [(1, ""), (1, SMALL)],
    "2 + 2 small": [(2, ""), (2, SMALL)],
}


def run_case(source: Proc, target_address: str, guests: list[tuple[int, str]],
             policy: str) -> list[tuple[str, float, float]]:
    """Every guest of the case started at once: (kind, total time s, QEMU clock start s on
    this runner's clock, estimated as the record's return minus its verification and total)."""
    tomls = [(over, resolve_scenario(SHARING_CHECK, [over] if over else []).source_text)
             for n, over in guests for _ in range(n)]
    t0 = time.monotonic()

    def one(toml: str) -> tuple[float, RunRecord]:
        rec = require_ok(migrate(source, target_address, toml, policy))
        return time.monotonic() - t0, rec

    with concurrent.futures.ThreadPoolExecutor(len(tomls)) as pool:
        done = list(pool.map(one, [t for _, t in tomls]))
    out = []
    for (over, _), (end, rec) in zip(tomls, done, strict=True):
        total = rec.total_time_ms / 1e3
        start = end - rec.verification_ms / 1e3 - total
        out.append((over or "192MiB", total, start))
    return out


def simulated(guests: list[tuple[int, str]], rate: str, policy: str, starts: list[float]) -> list[float]:
    """The simulation's total time of each guest, in the order of `guests`; each begins at its
    measured start (s after the first)."""
    n = sum(c for c, _ in guests)
    mix = "\n".join(f'[[guests]]\nscenario = "{SHARING_CHECK}"\nper-host = {c}\n' + (f'set = ["{o}"]\n' if o else "")
                    for c, o in guests)
    spec = parse_datacenter(f"""name = "sharing"
[topology]
racks = 1
hosts-per-rack = {n + 1}
nic = "{rate}"
oversubscription = 1
{mix}
[drain]
hosts = [0]
[limits]
per-source = {n}
per-cluster = {n}
[simulation]
policies = ["{policy}"]
""")
    first = min(starts)
    sim = Simulation(spec, policy, CourseCache([m.scenario for m in spec.mix], spec.bandwidth_step),
                     start_delays=[s - first for s in starts])
    res = sim.run()
    # the n-th guest of the plan began at the n-th run's start; results come in the order
    # migrations ended: match them by when each began (end - total time: its QEMU clock zero)
    by_start = sorted(range(res.migrations), key=lambda i: (res.end[i] - res.total_time[i], i))
    order = sorted(range(len(starts)), key=lambda i: (starts[i] - first, i))
    totals = [0.0] * len(starts)
    for run, i in zip(order, by_start, strict=True):
        totals[run] = res.total_time[i]
    return totals


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", default="1Gbit")
    ap.add_argument("--policy", action="append", help="default: switchover-ack and legacy")
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated case names")
    args = ap.parse_args(argv)
    why = can_make_namespaces()
    if why:
        print(f"datacenter_sharing: {why}", file=sys.stderr)
        return 2
    policies = args.policy or ["switchover-ack", "legacy"]
    header(f"sharing rule vs real concurrent migrations on one tbf link at {args.rate}")
    rows = [["case", "policy", "guest", "began s", "measured total s", "simulated s", "sim / measured",
             f"within {GOAL:.0%}"]]
    worst = 0.0
    with NetnsLink() as link, tempfile.TemporaryDirectory(prefix="migbed-dc-share-") as tmp, \
            stack(Path(tmp), target_prefix=link.wrapper, target_host=link.ns_ip) as (source, target):
        shape = LinkShape(rate_bps=round(parse_bit_rate(args.rate)))
        print(f"   {link.shape(shaping_commands(link.host_if, shape, netem_available=False))}", flush=True)
        for name in args.cases.split(","):
            guests = CASES[name]
            for policy in policies:
                runs = run_case(source, target.address, guests, policy)
                sim = simulated(guests, args.rate, policy, [s for _, _, s in runs])
                first = min(s for _, _, s in runs)
                for (kind, total, start), simulated_total in zip(runs, sim, strict=True):
                    ratio = simulated_total / total
                    worst = max(worst, abs(ratio - 1))
                    rows.append([name, policy, kind, f"{start - first:.2f}", f"{total:.2f}", f"{simulated_total:.2f}",
                                 f"{ratio:.3f}", "yes" if abs(ratio - 1) <= GOAL else "NO"])
                print(f"   {name} ({policy}): measured {', '.join(f'{t:.2f}' for _, t, _ in runs)} s; "
                      f"simulated {', '.join(f'{v:.2f}' for v in sim)} s", flush=True)
        for cmd in clear_commands(link.host_if):
            subprocess.run(cmd, capture_output=True, check=False)
    print()
    print(table(rows))
    print(f"\nworst |sim / measured - 1|: {worst:.1%} (goal {GOAL:.0%})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
