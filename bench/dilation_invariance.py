"""Time dilation's invariance check: the same scenario at K = 1, 2, 4 gives the same results.

    .venv/bin/python bench/dilation_invariance.py [--ks 1,2,4] [--repeat 3]

The check the time-warped emulation literature uses (Gupta et al., NSDI 2006): on scenarios
this host runs faithfully undilated, dilating by K must not change what is measured in
virtual time. Two cases (migbed/comparisons/comparisons.toml):

  dilation-mlx5  mlx5-like on its 10 Gbit link, legacy and switchover-ack
  dilation-ram   a RAM-only 320 MiB guest (16 MiB/s dirtying) on a 1 Gbit link, legacy

Needs root: the target runs in a network namespace behind a veth pair whose egress tc tbf
shapes at the scenario's link rate / K (migbed.core.dilation.shaped_link), as `migbed up`
and `migbed deploy` shape it. Each (case, K) gets a fresh source and target, so their peak
memory (VmHWM) is that K's: the memory goal (a dilated run uses no more than undilated).

Per (case, policy, K): the medians of `--repeat` runs of QEMU-reported downtime, guest-visible
downtime, total time and bytes transferred (RAM + device), each compared with K = 1's:
goal within 5 % or 5 ms. Nothing is asserted; the load average is printed per block.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from _common import (
    MiB,
    NetnsLink,
    can_make_namespaces,
    header,
    load_average,
    median,
    migrate,
    policies_of,
    require_ok,
    scenario_toml,
    stack,
    table,
    vm_hwm,
)

from migbed.core.dilation import shaped_link
from migbed.core.scenario import parse_scenario
from migbed.env.shaping import clear_commands, link_shape, shaping_commands
from migbed.measure.record import RunRecord

CASES = ("dilation-mlx5", "dilation-ram")
FIGURES = (  # (label, record -> value, unit)
    ("downtime", lambda r: r.downtime_ms, "ms"),
    ("guest downtime", lambda r: r.guest_downtime_ms, "ms"),
    ("total time", lambda r: r.total_time_ms, "ms"),
    ("transferred", lambda r: (r.ram_transferred_bytes + r.device_transferred_bytes) / MiB, "MiB"),
)
GOAL_REL, GOAL_ABS_MS = 0.05, 5.0
# Whether the host kept up (not goals): the bulk stage's rate against max-bandwidth, and the
# stop-copy's against the link. Where K = 1 falls short of them and K = 4 does not, the
# undilated run was not faithful on this host at that moment (its own costs showed).
DIAGNOSTICS = (
    ("bulk stage", lambda r: (r.bulk_stage_rate() or 0.0) / MiB, "MiB/s"),
    ("stop-copy", lambda r: r.downtime_bytes / MiB / max(r.stop_copy_ms, 1e-3) * 1e3, "MiB/s"),
)


@dataclass
class Block:
    """One (case, K): its runs per policy, the services' peak memory, the load around it."""

    case: str
    k: float
    runs: dict[str, list[RunRecord]] = field(default_factory=dict)
    hwm_source: int = 0
    hwm_target: int = 0
    load: str = ""


def run_block(link: NetnsLink, case: str, k: float, repeat: int) -> Block:
    toml = scenario_toml(case, f"time-dilation={k!r}")
    sc = parse_scenario(toml, case)
    shape = link_shape(shaped_link(sc))
    assert shape is not None, f"{case} has no [link]"
    link.shape(shaping_commands(link.host_if, shape, netem_available=False))
    block = Block(case, k, {p: [] for p in policies_of(case)}, load=load_average())
    print(f"  {case} K = {k:g}: tbf {shape.rate_bps / 1e9:g} Gbit/s (virtual "
          f"{sc.link.rate / 1e9:g}), load average {block.load}", flush=True)
    with tempfile.TemporaryDirectory(prefix="migbed-dilation-") as tmp, \
            stack(Path(tmp), target_prefix=link.wrapper, target_host=link.ns_ip) as (source, target):
        for i in range(repeat):
            for policy in block.runs:
                rec = require_ok(migrate(source, target.address, toml, policy))
                block.runs[policy].append(rec)
                print(f"    {policy} #{i + 1}: downtime {rec.downtime_ms:.1f} ms, guest "
                      f"{rec.guest_downtime_ms:.1f} ms, total {rec.total_time_ms:.0f} ms "
                      f"(virtual; K = {rec.time_dilation:g})", flush=True)
        block.hwm_source, block.hwm_target = vm_hwm(source.pid), vm_hwm(target.pid)
    block.load += f" .. {load_average()}"
    return block


def within(value: float, ref: float, unit: str) -> bool:
    slack = max(GOAL_REL * abs(ref), GOAL_ABS_MS if unit == "ms" else 0.0)
    return abs(value - ref) <= slack


def compare_rows(blocks: list[Block], ref_k: float = 1.0) -> list[list[str]]:
    rows = [["case", "policy", "K", *(f"{label} {unit}" for label, _, unit in FIGURES),
             "within goal", *(f"{label} {unit}" for label, _, unit in DIAGNOSTICS),
             "VmHWM source MiB", "VmHWM target MiB", "load avg"]]
    base = {(b.case, p): runs for b in blocks if b.k == ref_k for p, runs in b.runs.items()}
    for b in blocks:
        for policy, runs in b.runs.items():
            ref = base.get((b.case, policy))
            cells, ok = [], 0
            for _, get, unit in FIGURES:
                v = median([get(r) for r in runs])
                if ref is None or b.k == ref_k:
                    cells.append(f"{v:.1f}")
                    continue
                r0 = median([get(r) for r in ref])
                ok += within(v, r0, unit)
                cells.append(f"{v:.1f} ({(v - r0) / r0 * 100:+.1f} %)" if r0 else f"{v:.1f}")
            verdict = "-" if ref is None or b.k == ref_k else f"{ok}/{len(FIGURES)}"
            rows.append([b.case, policy, f"{b.k:g}", *cells, verdict,
                         *(f"{median([get(r) for r in runs]):.0f}" for _, get, _ in DIAGNOSTICS),
                         f"{b.hwm_source / MiB:.0f}", f"{b.hwm_target / MiB:.0f}", b.load])
    return rows


def memory_lines(blocks: list[Block]) -> list[str]:
    out = []
    for b in blocks:
        ref = next((x for x in blocks if x.case == b.case and x.k == 1.0), None)
        if ref is None or b.k == 1.0:
            continue
        out.append(f"{b.case} K = {b.k:g}: peak memory vs K = 1: source "
                   f"{b.hwm_source / ref.hwm_source:.3f}, target {b.hwm_target / ref.hwm_target:.3f} "
                   "(goal <= 1, a few MiB of noise aside)")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ks", default="1,2,4", help="dilation factors, the first must be 1 (default 1,2,4)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--reference", type=float, default=1.0,
                   help="the K the others are compared with (default 1, the undilated run; also "
                   "printed against the largest K when they differ)")
    args = p.parse_args(argv)
    ks = [float(x) for x in args.ks.split(",")]
    why = can_make_namespaces()
    if why or ks[0] != 1.0:
        print(f"dilation_invariance: {why or '--ks must start with 1 (the reference)'}", file=sys.stderr)
        return 2
    header(f"time dilation invariance: K = {', '.join(f'{k:g}' for k in ks)}, medians of {args.repeat}")
    blocks: list[Block] = []
    with NetnsLink() as link:
        try:
            for case in args.cases.split(","):
                blocks += [run_block(link, case, k, args.repeat) for k in ks]
        finally:
            for cmd in clear_commands(link.host_if):
                subprocess.run(cmd, capture_output=True, check=False)
    print()
    print(table(compare_rows(blocks, args.reference)))
    if max(ks) != args.reference:  # where the host may not have kept up undilated
        print(f"\nthe same, against K = {max(ks):g} (the most dilated run):")
        print(table(compare_rows(blocks, max(ks))))
    print()
    print("\n".join(memory_lines(blocks)))
    print(f"\ngoal: each figure's median within {GOAL_REL * 100:g} % (or {GOAL_ABS_MS:g} ms) of K = 1's; "
          "bytes within 5 %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
