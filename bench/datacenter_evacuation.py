"""The simulation against a real evacuation, in one go: `migbed simulate` of the README's
measured evacuation (8 x mlx5-like off one source host onto 2 targets, P=2, C=5, both
policies) beside the real `migbed evacuate` of the same, on the same local services.

    .venv/bin/python bench/datacenter_evacuation.py [--scenario mlx5-like] [--guests 8]
        [--per-source 2] [--targets 2]

Goal (issue 25): the simulated drain time and per-guest guest-visible downtime median within
10 % of the measured ones, per policy.

What the simulation is given (inputs, all measured here before the evacuation):
- the wire: the local services' stream rate (migbed.experiments.sweep.measure_wire_rate:
  the best of three RAM-only migrations, all of it in the final copy), as every host's NIC;
- the per-migration time outside QEMU's total time that migbed's emulation spends and a
  datacenter would not (booting the emulated guest and its warm-up, the target's
  allocation, the verification of every byte): from calibration rounds of P guests at P
  in flight per policy (3 by default; they also warm every target's allocator, as the
  README's second order did), the median over their guests of (runner's end - start) -
  total time, split into before (everything but total time and verification) and after
  (the verification): one round alone is at the mercy of a load spike;
- the planner, limits and order: the same as the evacuation's.
What it predicts: every migration's course (the model at the bandwidth the sharing gives
it), the queueing, the drain time, each guest's downtime.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from _common import header, table

from migbed.core.scenario import resolve_scenario
from migbed.datacenter.report import summarise
from migbed.datacenter.simulator import simulate_datacenter
from migbed.datacenter.spec import parse_datacenter
from migbed.experiments.sweep import measure_wire_rate
from migbed.fleet.evacuation import EvacuationResult
from migbed.fleet.planner import Limits
from migbed.fleet.run import guests_from_scenario, local_hosts, run_policies

GOAL = 0.10


def overheads(results: list[EvacuationResult], strict: bool = True) -> tuple[float, float]:
    """(before, after) in s: the median over the guests of the runner's start-to-end minus
    QEMU's total time, the verification counted after (strict: every guest completed)."""
    before, after = [], []
    for res in results:
        for g, rec in zip(res.guests, res.records, strict=True):
            if g.outcome != "completed":
                if strict:
                    raise RuntimeError(f"calibration guest {g.guest}: {g.outcome}: {g.error}")
                continue
            span = (g.end_ms - g.start_ms - g.total_time_ms) / 1e3
            after.append(rec.verification_ms / 1e3)
            before.append(span - rec.verification_ms / 1e3)
    return statistics.median(before), statistics.median(after)


def datacenter_text(scenario: str, guests: int, targets: int, limits: Limits, wire: float,
                    before: float, after: float, policies: list[str]) -> str:
    return f"""name = "evacuation-check"
[topology]
racks = 1
hosts-per-rack = {1 + targets}
nic = "{wire / 1e6:.1f}MB/s"
oversubscription = 1
[[guests]]
scenario = "{scenario}"
per-host = {guests}
[drain]
hosts = [0]
[limits]
per-source = {limits.per_source}
per-cluster = {limits.per_cluster}
per-target = {limits.per_target}
[simulation]
policies = {policies!r}
overhead-before = "{before * 1e3:.0f}ms"
overhead-after = "{after * 1e3:.0f}ms"
""".replace("'", '"')


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", default="mlx5-like")
    ap.add_argument("--guests", type=int, default=8)
    ap.add_argument("--per-source", type=int, default=2)
    ap.add_argument("--per-cluster", type=int, default=5)
    ap.add_argument("--targets", type=int, default=2)
    ap.add_argument("--policy", action="append", help="default legacy and switchover-ack")
    ap.add_argument("--calibration-rounds", type=int, default=3,
                    help="rounds of P guests per policy that measure the overhead (median; default 3)")
    args = ap.parse_args(argv)
    policies = args.policy or ["legacy", "switchover-ack"]
    sc = resolve_scenario(args.scenario)
    limits = Limits(args.per_source, args.per_cluster)
    header(f"simulation vs evacuation: {args.guests} x {sc.name}, {args.targets} targets, "
           f"P={limits.per_source}, C={limits.per_cluster}")
    with tempfile.TemporaryDirectory(prefix="migbed-dc-evac-") as tmp, \
            local_hosts(Path(tmp) / "logs", args.targets) as endpoints:
        [source] = endpoints.sources.values()
        wire = measure_wire_rate(source, next(iter(endpoints.targets.values())))
        print(f"   wire (measured): {wire / 1e6:.0f} MB/s", flush=True)
        calibration = [r for _ in range(args.calibration_rounds) for r in run_policies(
            endpoints, guests_from_scenario(sc.name, sc.source_text, limits.per_source), {sc.name: sc.source_text},
            policies, Limits(limits.per_source, limits.per_source), "first-come", False, False)]
        before, after = overheads(calibration)
        print(f"   per-migration overhead (measured, median of {args.calibration_rounds} calibration rounds per "
              f"policy): before {before * 1e3:.0f} ms, after {after * 1e3:.0f} ms", flush=True)
        fleet = guests_from_scenario(sc.name, sc.source_text, args.guests)
        measured = run_policies(endpoints, fleet, {sc.name: sc.source_text}, policies, limits, "first-come",
                                False, False)
    seen_before, seen_after = overheads(measured, strict=False)
    print(f"   the evacuation's own per-migration overhead (not given to the simulation, for comparison): "
          f"before {seen_before * 1e3:.0f} ms, after {seen_after * 1e3:.0f} ms", flush=True)
    spec = parse_datacenter(datacenter_text(args.scenario, args.guests, args.targets, limits, wire, before, after,
                                            policies))
    simulated = {r.policy: summarise(spec, r) for r in simulate_datacenter(spec)}
    rows = [["policy", "figure", "measured", "simulated", "sim / measured", f"within {GOAL:.0%}"]]
    for res in measured:
        done = [g for g in res.guests if g.outcome == "completed" and g.verified]
        sim = simulated[res.policy]
        pairs = [("drain time s", res.drain_time_ms / 1e3, sim["drain_time_s"]),
                 ("guest downtime ms (median)", statistics.median(g.guest_downtime_ms for g in done),
                  sim["guest_downtime_s"]["p50"] * 1e3),
                 ("total time ms (median)", statistics.median(g.total_time_ms for g in done),
                  sim["total_time_s"]["p50"] * 1e3)]
        for name, m, s in pairs:
            rows.append([res.policy, name, f"{m:.1f}" if m < 100 else f"{m:.0f}",
                         f"{s:.1f}" if s < 100 else f"{s:.0f}", f"{s / m:.3f}",
                         "yes" if abs(s / m - 1) <= GOAL else "NO"])
        rows.append([res.policy, "verified", f"{len(done)}/{len(res.guests)}", "-", "-", "-"])
    print()
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
