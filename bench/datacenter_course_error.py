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

Printed per policy: the median and worst |error| of total time and guest-visible downtime,
and for contrast the same for the model at the bandwidth each migration started with, not
re-timed (what the simulation would say if shares never changed).
"""

from __future__ import annotations

import argparse
import statistics

from _common import header, table

from migbed.datacenter.course import CourseCache
from migbed.datacenter.simulator import Simulation
from migbed.datacenter.spec import DatacenterSpec, parse_datacenter

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
    rows = [["case", "policy", "migrations", "figure", "re-timed course: median", "worst", "worst ms",
             "not re-timed: median", "worst", "worst ms", "rates per migration (median)"]]
    for case, text in VARIANTS.items():
        rows += case_rows(case, parse_datacenter(text), args.every)
    print(table(rows))
    return 0


def case_rows(case: str, spec: DatacenterSpec, every: int) -> list[list[str]]:
    rows = []
    for policy in spec.policies:
        cache = CourseCache([m.scenario for m in spec.mix], spec.bandwidth_step)
        sim = Simulation(spec, policy, cache, trace_every=every)
        sim.run()
        total, guest, fixed_total, fixed_guest, changes = [], [], [], [], []
        for tr in sim.traces:
            ref = cache.on_schedule(tr.kind, policy, [(t - tr.t0, r) for t, r in tr.rates])
            start = tr.course.model
            total.append((tr.total_time, ref.total_time_s))
            guest.append((tr.guest_downtime, ref.guest_downtime_s))
            fixed_total.append((start.total_time_s, ref.total_time_s))
            fixed_guest.append((start.guest_downtime_s, ref.guest_downtime_s))
            changes.append(len(tr.rates))
        for name, ours, fixed in (("total time", total, fixed_total), ("guest downtime", guest, fixed_guest)):
            (m, w, wa), (fm, fw, fwa) = errors(ours), errors(fixed)
            rows.append([case, policy, str(len(sim.traces)), name, f"{m:.1%}", f"{w:.1%}", f"{wa * 1e3:.0f}",
                         f"{fm:.1%}", f"{fw:.1%}", f"{fwa * 1e3:.0f}", f"{statistics.median(changes):.0f}"])
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
