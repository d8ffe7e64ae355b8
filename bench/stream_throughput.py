"""Migration stream throughput vs raw TCP, two processes on one host, measured in one run.

    .venv/bin/python bench/stream_throughput.py [--ram 1GiB] [--repeat 3] [--profile DIR]

migbed: a real target and a real source service (`migbed serve`), a RAM-only guest with no
dirtying and max-bandwidth far above the machine, migrated over loopback. Its throughput is
the bulk stage: RAM bytes sent in pre-copy / (decision - pre-copy start), as the source's own
events and counters record them (the timeline's 100 ms windows give the same figure).

raw TCP: migbed.env.goodput's receiver and sender, two processes on loopback,
payload counted at the receiver after its warm-up.

grpc.aio alone (bench/_grpc_ceiling.py): pre-encoded 1 MiB RAM messages streamed as raw
bytes (no protobuf on either side) to a server that only counts them, two processes,
migbed's channel options: the ceiling of the transport migbed is built on.

The two are run back to back, alternating which goes first, --repeat times; the ratio of
medians is the figure. With --profile DIR the services run under cProfile (main thread;
this slows them) and the top functions by own time are printed.
"""

from __future__ import annotations

import argparse
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import (
    ROOT,
    GiB,
    MiB,
    free_port,
    header,
    median,
    migrate,
    require_ok,
    scenario_toml,
    stack,
    table,
)

from migbed.core.units import parse_size
from migbed.measure.record import RunRecord
from testkit.goodput import measure_goodput


def raw_tcp(seconds: float) -> float:
    """Payload bytes/s of one TCP connection between two fresh processes on loopback."""
    return measure_goodput("127.0.0.1", seconds, 0.3) / 8


def grpc_ceiling(mib: int) -> float:
    """Bytes/s of grpc.aio alone streaming pre-built 1 MiB messages between two processes."""
    port = free_port()
    script = str(ROOT / "bench" / "_grpc_ceiling.py")
    srv = subprocess.Popen([sys.executable, script, "server", str(port)],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert srv.stdout is not None
        srv.stdout.readline()  # "ready"
        out = subprocess.run([sys.executable, script, "client", str(port), str(mib)],
                             capture_output=True, text=True, timeout=300, check=True)
        return float(out.stdout.strip())
    finally:
        srv.terminate()
        srv.wait(10)


def stream_rate(rec: RunRecord) -> tuple[float, float]:
    """(bulk-stage bytes/s from counters and events, median of the timeline's windows)."""
    rate = rec.bulk_stage_rate()
    if rate is None:
        raise RuntimeError(f"run {rec.run_id} has no bulk stage ({rec.outcome}: {rec.error})")
    return rate, median(rec.bulk_stage_windows())


def print_profile(path: Path, n: int = 18) -> None:
    st = pstats.Stats(str(path))
    total = st.total_tt  # type: ignore[attr-defined]
    rows = sorted(st.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:n]  # type: ignore[attr-defined]
    print(f"\n-- {path.name}: top {n} by own time (of {total:.2f} s profiled, main thread)")
    body = [["function", "calls", "own s", "own %", "cum s"]]
    for (file, line, fn), (_cc, nc, tt, ct, _callers) in rows:
        where = f"{Path(file).name}:{line}({fn})" if line else fn
        body.append([where[:70], str(nc), f"{tt:.3f}", f"{100 * tt / total:.1f}", f"{ct:.3f}"])
    print(table(body))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ram", default="1GiB", help="guest RAM to migrate (1GiB)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--tcp-seconds", type=float, default=3.0)
    p.add_argument("--profile", type=Path, help="profile the services into this folder")
    args = p.parse_args(argv)
    ram = parse_size(args.ram)
    header(f"stream throughput: migbed migration stream vs raw TCP ({ram / GiB:g} GiB guest, "
           f"{args.repeat} repeats)")
    toml = scenario_toml("stream-throughput", f"guest.ram-size={args.ram}")
    tcp: list[float] = []
    grpc_only: list[float] = []
    mig: list[float] = []
    win: list[float] = []
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="migbed-stream-") as tmp, \
            stack(Path(tmp), profile_dir=args.profile) as (source, target):
        for i in range(args.repeat):
            order = ("tcp", "grpc", "migbed") if i % 2 == 0 else ("migbed", "grpc", "tcp")
            for what in order:
                if what == "grpc":
                    grpc_only.append(grpc_ceiling(ram // MiB))
                    print(f"  #{i + 1} grpc.aio alone {grpc_only[-1] / MiB:6.0f} MiB/s", flush=True)
                elif what == "tcp":
                    tcp.append(raw_tcp(args.tcp_seconds))
                    print(f"  #{i + 1} raw TCP      {tcp[-1] / MiB:8.0f} MiB/s", flush=True)
                else:
                    t0 = time.monotonic()
                    rec = require_ok(migrate(source, target.address, toml, "legacy"))
                    rate, window = stream_rate(rec)
                    mig.append(rate)
                    win.append(window)
                    print(f"  #{i + 1} migbed stream {rate / MiB:7.0f} MiB/s (windows median "
                          f"{window / MiB:.0f} MiB/s; run {time.monotonic() - t0:.1f} s)",
                          flush=True)
    ratio = median(mig) / median(tcp)
    print()
    print(table([
        ["measure", "median MiB/s", "min", "max"],
        ["raw TCP (goodput, 2 processes)", f"{median(tcp) / MiB:.0f}", f"{min(tcp) / MiB:.0f}",
         f"{max(tcp) / MiB:.0f}"],
        ["grpc.aio alone (raw 1 MiB messages)", f"{median(grpc_only) / MiB:.0f}",
         f"{min(grpc_only) / MiB:.0f}", f"{max(grpc_only) / MiB:.0f}"],
        ["migbed stream (bulk stage)", f"{median(mig) / MiB:.0f}", f"{min(mig) / MiB:.0f}",
         f"{max(mig) / MiB:.0f}"],
        ["migbed stream (100 ms windows)", f"{median(win) / MiB:.0f}", f"{min(win) / MiB:.0f}",
         f"{max(win) / MiB:.0f}"],
    ]))
    print(f"\nratio migbed / raw TCP = {ratio:.2f} (goal >= 0.5); grpc.aio alone / raw TCP = "
          f"{median(grpc_only) / median(tcp):.2f}; migbed / grpc.aio alone = "
          f"{median(mig) / median(grpc_only):.2f}")
    if args.profile:
        for name in ("source.prof", "target.prof"):
            path = args.profile / name
            if path.exists():
                print_profile(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
