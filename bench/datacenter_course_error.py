"""The course approximation's error: each migration's course as the simulation re-times it
(migbed/datacenter/course.py: the model's prediction at the bandwidth it started with, its
transfers stretched or shrunk as its share changes) against the model run with exactly the
bandwidth that migration got over time (migbed.model.pipe.WireSchedule).

    .venv/bin/python bench/datacenter_course_error.py [--every 1]

The datacenter (and a variant with the cluster limit binding at 15): 2 racks of 10 hosts
behind 4:1 uplinks, rack 0 drained at P=4 (per-cluster 40), every host running 4
sharing-check guests (192 MiB + a 32 MB VF), 2 of them at 64 MiB, and 2 mlx5-like guests
whose max-bandwidth is raised above the NIC (the reference wire cannot model QEMU's
budgeted bursts on a changing wire): small ones end early, so the others' share grows
mid-course. The reference holds a migration's last rate while it is out of the sharing
(pre-copy waits, destination loads).

Printed per policy, for both ways the simulation updates a course (`course-update`: retime,
the start's course with its transfers re-timed; reclass, also switching to the course of
the bandwidth class the share moves to, from the same share of pre-copy sent): the median
and worst |error| of total time and guest-visible downtime, and for contrast the same for
the model at the bandwidth each migration started with (as if shares never changed).
"""

from __future__ import annotations

import argparse
import statistics

from _common import header, table

from migbed.datacenter.course import CourseCache
from migbed.datacenter.simulator import Simulation
from migbed.datacenter.spec import parse_datacenter

DATACENTER = """name = "course-error"
[topology]
racks = 2
hosts-per-rack = 10
nic = "10Gbit"
oversubscription = 4
[[guests]]
scenario = "sharing-check"
per-host = 4
[[guests]]
scenario = "sharing-check"
per-host = 2
set = ["guest.ram-size=64MiB"]
[[guests]]
scenario = "mlx5-like"
per-host = 2
set = ["migration.max-bandwidth=8GiB/s"]
[drain]
racks = [0]
[limits]
per-source = 4
per-cluster = 40
[simulation]
policies = ["legacy", "switchover-ack"]
"""


# The rack at P=4 (starts in rounds), and the same with the cluster limit binding at 15, so
# migrations start one by one as others end and the shares move all the time.
VARIANTS = {"rack, P=4": DATACENTER,
            "rack, P=4, C=15": DATACENTER.replace("per-cluster = 40", "per-cluster = 15")}


def errors(pairs: list[tuple[float, float]]) -> tuple[float, float, float]:
    """(median, worst) of |simulated / reference - 1|, and the worst |simulated - reference| in s."""
    rel = [abs(s / r - 1) for s, r in pairs if r > 0]
    return statistics.median(rel), max(rel), max(abs(s - r) for s, r in pairs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--every", type=int, default=1, help="follow every n-th migration")
    args = ap.parse_args(argv)
    header("course approximation vs the model on each migration's own bandwidth over time")
    rows = [["case", "policy", "figure", *(f"{m}: {c}" for m in (*MODES, "start only")
                                           for c in ("median", "worst", "worst ms"))]]
    for case, text in VARIANTS.items():
        rows += case_rows(case, text, args.every)
    print(table(rows))
    return 0


MODES = ("retime", "reclass")


def case_rows(case: str, text: str, every: int) -> list[list[str]]:
    """Per policy and figure: the error of each course update, and of the start's course alone."""
    cells: dict[tuple[str, str], list[str]] = {}
    for mode in MODES:
        spec = parse_datacenter(text.replace("[simulation]", f'[simulation]\ncourse-update = "{mode}"'))
        for policy in spec.policies:
            cache = CourseCache([m.scenario for m in spec.mix], spec.bandwidth_step)
            sim = Simulation(spec, policy, cache, trace_every=every)
            sim.run()
            pairs: dict[str, list[tuple[float, float]]] = {"total time": [], "guest downtime": [],
                                                           "total time (start)": [], "guest downtime (start)": []}
            for tr in sim.traces:
                ref = cache.on_schedule(tr.kind, policy, [(t - tr.t0, r) for t, r in tr.rates])
                pairs["total time"].append((tr.total_time, ref.total_time_s))
                pairs["guest downtime"].append((tr.guest_downtime, ref.guest_downtime_s))
                first = cache.course(tr.kind, policy, tr.rates[0][1]).model if tr.rates else tr.course.model
                pairs["total time (start)"].append((first.total_time_s, ref.total_time_s))
                pairs["guest downtime (start)"].append((first.guest_downtime_s, ref.guest_downtime_s))
            for figure in ("total time", "guest downtime"):
                row = cells.setdefault((policy, figure), [])
                row += _fmt(errors(pairs[figure]))
                if mode == MODES[-1]:
                    row += _fmt(errors(pairs[f"{figure} (start)"]))
    return [[case, policy, figure, *row] for (policy, figure), row in cells.items()]


def _fmt(e: tuple[float, float, float]) -> list[str]:
    return [f"{e[0]:.1%}", f"{e[1]:.1%}", f"{e[2] * 1e3:.0f}"]


if __name__ == "__main__":
    raise SystemExit(main())
