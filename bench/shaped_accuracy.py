"""Shaped-link accuracy: TCP goodput over tc tbf vs the configured rate x 1448/1514, and a
migration's own bandwidth measurement over the same link.

    .venv/bin/python bench/shaped_accuracy.py [--rates 100Mbit,1Gbit,5Gbit] [--repeat 3]

Needs root (a network namespace with a veth pair, made and removed by this script).
The receiver (goodput receiver, then the target service) runs in the namespace; the
sender (goodput sender, then the source service) in this one; tbf shapes this end's
egress, with the argv migbed.env.shaping builds (burst rate x 5 ms, >= 64 KiB).

1. goodput: migbed.env.goodput, payload counted at the receiver after a 1 s
   warm-up, --repeat times per rate; expected = rate x 1448/1514 (TCP payload per
   Ethernet frame at MTU 1500 with timestamps). Goal: within 3 %.
2. migration: a RAM-only guest (no dirtying, max-bandwidth far above the link) migrated
   over the shaped link; the source's bandwidth is what its timeline (the run record's
   100 ms samples) says for the bulk stage, the first second left out (socket and HTTP/2
   buffers fill faster than the link drains them): the slope of its transferred bytes
   ("steady"), and the median of its windows. Compared with the same expected goodput,
   and with the goodput measured at that rate.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import (
    MiB,
    NetnsLink,
    Proc,
    can_make_namespaces,
    event_ms,
    header,
    median,
    migrate,
    require_ok,
    scenario_toml,
    stack,
    table,
)

from migbed.core.units import parse_bit_rate
from migbed.env.shaping import LinkShape, clear_commands, shaping_commands
from migbed.measure.record import RunRecord
from testkit.goodput import measure_goodput

SKIP_S = 1.0  # left out of the migration's windows (buffers filling)
MIN_GUEST_MIB = 160


def goodput(link: NetnsLink, seconds: float, warmup: float) -> float:
    """Payload bits/s from here to the namespace, counted by the receiver."""
    return measure_goodput(link.ns_ip, seconds, warmup, link.wrapper)


def migration_bandwidth(rec: RunRecord) -> tuple[float, float, float, int]:
    """Bit/s the source measured in the bulk stage, from its timeline, after SKIP_S:
    (steady rate = transferred-bytes slope between the first and last sample, median of
    the 100 ms windows, the bulk stage as a whole incl. the buffer fill, samples used)."""
    start = event_ms(rec, "precopy")
    bulk = [s for s in rec.timeline
            if s.phase == "precopy" and s.ram_remaining_bytes > 0
            and s.t_ms - start >= SKIP_S * 1e3 and s.bandwidth_bytes_per_s > 0]
    if len(bulk) < 2:
        raise RuntimeError(f"bulk stage too short ({len(bulk)} samples after {SKIP_S} s)")
    a, b = bulk[0], bulk[-1]
    steady = (b.ram_transferred_bytes - a.ram_transferred_bytes) * 8 / ((b.t_ms - a.t_ms) / 1e3)
    windows = median([s.bandwidth_bytes_per_s * 8 for s in bulk])
    whole = rec.precopy_bytes * 8 / ((event_ms(rec, "decision") - start) / 1e3)
    return steady, windows, whole, len(bulk)


def fmt_rate(bps: float) -> str:
    return f"{bps / 1e9:.3f} Gbit/s" if bps >= 1e9 else f"{bps / 1e6:.2f} Mbit/s"


GOODPUT_HEAD = ["rate", "expected goodput", "measured (median)", "min", "max", "error", "within 3 %"]
MIGRATION_HEAD = ["rate", "expected goodput", "source, steady", "error", "vs measured goodput",
                  "windows median", "bulk stage whole", "samples", "guest"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rates", default="100Mbit,1Gbit,5Gbit", help="tbf rates for goodput")
    p.add_argument("--migrate-rates", default="100Mbit,1Gbit,5Gbit",
                   help="rates for the migration part ('' to skip)")
    p.add_argument("--repeat", type=int, default=3, help="goodput runs per rate")
    p.add_argument("--burst-ms", type=float, default=0.0,
                   help="tbf burst as ms at the rate (default: shaping.py's, rate x 5 ms)")
    p.add_argument("--seconds", type=float, default=5.0, help="goodput run length")
    p.add_argument("--migrate-seconds", type=float, default=5.0,
                   help="bulk stage length aimed at (guest RAM = rate x this, "
                        "160 MiB..1 GiB)")
    return p


def link_shape(rate: float, burst_ms: float) -> LinkShape:
    """tbf at `rate`; burst_ms 0 leaves the burst to shaping.py."""
    burst = round(rate / 8 * burst_ms / 1e3) if burst_ms else None
    return LinkShape(rate_bps=round(rate), burst_bytes=burst)


def goodput_rows(link: NetnsLink, args: argparse.Namespace,
                 rates: list[float]) -> tuple[list[list[str]], dict[float, float]]:
    """The unshaped veth's ceiling, then --repeat goodput runs at each tbf rate: the table's
    rows and the median goodput per rate."""
    # The veth's own ceiling right now (CPU-bound on this machine): no rate above it
    # can be reached, shaped or not.
    ceiling = [goodput(link, args.seconds, warmup=1.0) for _ in range(args.repeat)]
    rows = [["unshaped veth", "-", fmt_rate(median(ceiling)),
             fmt_rate(min(ceiling)), fmt_rate(max(ceiling)), "-", "-"]]
    print(f"   unshaped: {', '.join(fmt_rate(r) for r in ceiling)}", flush=True)
    measured_at: dict[float, float] = {}
    for rate in rates:
        shape = link_shape(rate, args.burst_ms)
        qdisc = link.shape(shaping_commands(link.host_if, shape, netem_available=False))
        print(f"   {qdisc}", flush=True)
        expected = shape.expected_goodput_bps()
        runs = [goodput(link, args.seconds, warmup=1.0) for _ in range(args.repeat)]
        m = median(runs)
        measured_at[rate] = m
        err = m / expected - 1
        rows.append([fmt_rate(rate), fmt_rate(expected), fmt_rate(m),
                     fmt_rate(min(runs)), fmt_rate(max(runs)), f"{err * 100:+.2f} %",
                     "yes" if abs(err) <= 0.03 else "NO"])
        print(f"   goodput at {fmt_rate(rate)}: {', '.join(fmt_rate(r) for r in runs)}",
              flush=True)
    return rows, measured_at


def migration_row(source: Proc, target: Proc, link: NetnsLink, args: argparse.Namespace,
                  rate: float, measured_goodput: float | None) -> list[str]:
    """One migration over the link shaped at `rate`: the source's bandwidth against the
    expected goodput and against the goodput measured at that rate (None: not measured)."""
    shape = link_shape(rate, args.burst_ms)
    link.shape(shaping_commands(link.host_if, shape, netem_available=False))
    expected = shape.expected_goodput_bps()
    # At least ~10x what sockets and the 8 MiB HTTP/2 window buffer (~14 MB),
    # or changes in how full they are move the slope (at 100 Mbit: 14 s).
    ram_mib = int(min(1024, max(MIN_GUEST_MIB, rate / 8 * args.migrate_seconds / MiB)))
    toml = scenario_toml("shaped-accuracy", f"guest.ram-size={ram_mib}MiB")
    rec = require_ok(migrate(source, target.address, toml, "legacy"))
    steady, win, whole, n = migration_bandwidth(rec)
    print(f"   migration at {fmt_rate(rate)}: steady {fmt_rate(steady)}, windows "
          f"median {fmt_rate(win)}, whole bulk stage {fmt_rate(whole)}",
          flush=True)
    return [fmt_rate(rate), fmt_rate(expected), fmt_rate(steady),
            f"{(steady / expected - 1) * 100:+.2f} %",
            f"{(steady / measured_goodput - 1) * 100:+.2f} %" if measured_goodput else "-",
            fmt_rate(win), fmt_rate(whole), str(n), f"{ram_mib} MiB"]


def migration_rows(link: NetnsLink, args: argparse.Namespace, rates: list[float],
                   measured_at: dict[float, float]) -> list[list[str]]:
    """A source here and a target in the namespace, one migration per rate."""
    with tempfile.TemporaryDirectory(prefix="migbed-shaped-") as tmp, \
            stack(Path(tmp), target_prefix=link.wrapper,
                  target_host=link.ns_ip) as (source, target):
        return [migration_row(source, target, link, args, rate, measured_at.get(rate))
                for rate in rates]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    why = can_make_namespaces()
    if why:
        print(f"shaped_accuracy: {why}", file=sys.stderr)
        return 2
    rates = [parse_bit_rate(r) for r in args.rates.split(",") if r]
    mrates = [parse_bit_rate(r) for r in args.migrate_rates.split(",") if r]
    header("shaped accuracy: tbf goodput and migration bandwidth vs rate x 1448/1514")
    with NetnsLink() as link:
        print(f"   link: {link.host_if} ({link.host_ip}) -> netns {link.ns} ({link.ns_ip})")
        good_rows, measured_at = goodput_rows(link, args, rates)
        mig_rows = migration_rows(link, args, mrates, measured_at) if mrates else []
        for cmd in clear_commands(link.host_if):
            subprocess.run(cmd, capture_output=True, check=False)
    print("\ngoodput over tbf (receiver's count after a 1 s warm-up)")
    print(table([GOODPUT_HEAD, *good_rows]))
    if mrates:
        print("\nmigration over the shaped link (the source's own 100 ms bandwidth windows)")
        print(table([MIGRATION_HEAD, *mig_rows]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
