"""A real multifd migration against raw TCP with the same connections, measured in one run.

    .venv/bin/python bench/multifd_speed.py [--ram 2GiB] [--channels 2] [--repeat 3]

Issue 24's undilated-speed goals, both on real migrations (a real source and target service,
`migbed serve`, over loopback), each side of every ratio measured in this run:

1. Bulk stage. The `multifd-speed` comparison: an idle RAM-only guest of --ram, multifd with
   --channels channels, max-bandwidth far above the machine, downtime-limit 20 ms (so the
   threshold is a few tens of MB and the bulk stage is nearly the whole of RAM: with QEMU's
   300 ms the switch comes once half of a 2 GiB guest has gone, and the "bulk stage" is one
   or two 100 ms windows). Its rate: RAM bytes sent in pre-copy / (decision - pre-copy start),
   from the source's own counters and events (RunRecord.bulk_stage_rate). Raw TCP: two fresh
   processes, --channels connections, each sendall()s its share of a prefaulted buffer of the
   same size and the receiver recv_into()s (MSG_WAITALL) a prefaulted buffer, one thread per
   connection; timed from the first byte to the receiver's reply after the last. Goal: bulk
   stage >= 0.8 of raw TCP. Also printed: CPU seconds per GiB of both service processes over
   the bulk stage (from /proc, between the first and last pre-copy progress samples), beside
   raw TCP's.
2. Final copy. The `final-copy` comparison with multifd (--channels channels): a 320 MiB guest
   writing a 64 MiB working set. downtime_ms (stop -> the target's Shut, return path on)
   against raw TCP moving that run's downtime_bytes over --channels connections between two
   fresh processes, plus the one-byte reply (median of --tcp-samples). Goal: within
   1.5 x raw TCP + 5 ms, against the same connections as the channels; raw TCP over one
   connection is printed beside it (bench/final_copy.py's reference). A third reference moves
   the same bytes over the same connections as 4 KiB pages scattered over the scenario's
   working set, one iovec entry per page on both sides (sendmsg / recvmsg_into), which is how
   a final copy's dirty pages lie and how migbed's channels and QEMU's multifd (one iovec per
   page) move them: the kernel's cost of that layout, apart from migbed's own.

Runs alternate with their raw TCP references. The machine is shared: each line prints the load
average; figures taken under load are provisional. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from _common import GiB, MiB, free_port, header, load_average, median, migrate, require_ok, scenario_toml, stack, table

from migbed.core.scenario import parse_scenario
from migbed.core.units import parse_size
from migbed.experiments.localstack import Service
from migbed.measure.record import ProgressSample

CLK_TCK = os.sysconf("SC_CLK_TCK")
FINAL_GOAL_RATIO, FINAL_GOAL_SLACK_MS = 1.5, 5.0
BULK_GOAL = 0.8


# ---------------------------------------------------------------- raw TCP, N connections


PAGE = 4096
IOV_MAX = 1024


def scattered_pages(nbytes: int, spread_pages: int) -> np.ndarray:
    """The page indices of a final copy's layout: nbytes of 4 KiB pages drawn (seeded) from
    the first spread_pages pages, ascending, as a guest's dirty hot set is."""
    n = nbytes // PAGE
    rng = np.random.default_rng(24)
    return np.sort(rng.choice(max(n, spread_pages), n, replace=False))


def _parts(view: memoryview, nbytes: int, conns: int, pages: np.ndarray | None) -> list[list[memoryview]]:
    """Each connection's buffers: a contiguous share of `view`, or (pages) one 4 KiB buffer
    per page of its share of the pages, as migbed's channels and QEMU's multifd send them."""
    if pages is None:
        step = -(-nbytes // conns)
        return [[view[i * step:min(nbytes, (i + 1) * step)]] for i in range(conns)]
    return [[view[p * PAGE:(p + 1) * PAGE] for p in share.tolist()] for share in np.array_split(pages, conns)]


def _ram(nbytes: int, pages: np.ndarray | None, fill: int) -> np.ndarray:
    size = nbytes if pages is None else (int(pages[-1]) + 1) * PAGE
    buf = np.empty(size, dtype=np.uint8)
    buf.fill(fill)  # touched: resident before the clock starts (np.zeros maps lazily)
    return buf


def _send_all(sock: socket.socket, bufs: list[memoryview]) -> None:
    for i in range(0, len(bufs), IOV_MAX):
        batch = bufs[i:i + IOV_MAX]
        sent, want = sock.sendmsg(batch), sum(b.nbytes for b in batch)
        if sent != want:  # a blocking sendmsg writes everything; anything else is a bug here
            raise RuntimeError(f"raw TCP: short sendmsg ({sent} of {want})")


def _recv_all(sock: socket.socket, bufs: list[memoryview]) -> None:
    for i in range(0, len(bufs), IOV_MAX):
        batch = bufs[i:i + IOV_MAX]
        got, want = sock.recvmsg_into(batch, 0, socket.MSG_WAITALL)[0], sum(b.nbytes for b in batch)
        if got != want:
            raise SystemExit(f"raw TCP: sender closed early ({got} of {want})")


def _receive(port: int, nbytes: int, conns: int, spread_pages: int) -> None:
    """The receiver process: one thread per connection, MSG_WAITALL; spread_pages > 0: into
    scattered pages (scattered_pages), else a contiguous buffer."""
    pages = scattered_pages(nbytes, spread_pages) if spread_pages else None
    buf = _ram(nbytes, pages, 0)
    parts = _parts(buf.data, nbytes, conns, pages)
    with socket.create_server(("127.0.0.1", port)) as srv:
        print("ready", flush=True)
        socks = [srv.accept()[0] for _ in range(conns)]
    cpu0 = _cpu_s()
    ts = [threading.Thread(target=_recv_all, args=(socks[i], parts[i])) for i in range(conns)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    socks[0].sendall(b"k")
    print(f"cpu {_cpu_s() - cpu0:.4f}", flush=True)
    for s in socks:
        s.close()


def _cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def raw_tcp(nbytes: int, conns: int, spread_pages: int = 0) -> tuple[float, float]:
    """(seconds, CPU s of both processes) for `conns` TCP connections between two fresh
    processes to move nbytes (split evenly), plus a one-byte reply after the last byte.
    spread_pages > 0: as 4 KiB pages scattered over that many (one iovec entry each, both
    sides), the layout of a final copy's dirty pages; else one contiguous buffer."""
    port = free_port()
    rcv = subprocess.Popen([sys.executable, __file__, "--receive", str(port), str(nbytes), str(conns),
                            str(spread_pages)], stdout=subprocess.PIPE, text=True)
    try:
        assert rcv.stdout is not None
        if rcv.stdout.readline().strip() != "ready":
            raise RuntimeError("raw TCP receiver did not start")
        pages = scattered_pages(nbytes, spread_pages) if spread_pages else None
        payload = _ram(nbytes, pages, 0x5A)
        parts = _parts(payload.data, nbytes, conns, pages)
        socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(conns)]
        ts = [threading.Thread(target=_send_all, args=(socks[i], parts[i])) for i in range(conns)]
        cpu0, t0 = _cpu_s(), time.perf_counter()
        for t in ts:
            t.start()
        if socks[0].recv(1) != b"k":
            raise RuntimeError("raw TCP receiver did not confirm")
        seconds = time.perf_counter() - t0
        for t in ts:
            t.join()
        cpu = _cpu_s() - cpu0
        rx_cpu = float(rcv.stdout.readline().split()[1])
        for s in socks:
            s.close()
        rcv.wait(30)
        return seconds, cpu + rx_cpu
    finally:
        if rcv.poll() is None:
            rcv.kill()
            rcv.wait()


# ---------------------------------------------------------------- CPU of the services


def process_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class BulkCpu:
    """CPU of both services between the first and the last pre-copy progress sample, and the
    RAM bytes sent meanwhile (the samples' own counter)."""

    def __init__(self, pids: tuple[int, int]) -> None:
        self.pids = pids
        self.points: list[tuple[float, int]] = []

    def on_sample(self, s: ProgressSample) -> None:
        if s.phase == "precopy" and s.ram_remaining_bytes > 0:
            self.points.append((sum(process_cpu_s(p) for p in self.pids), s.ram_transferred_bytes))

    def cpu_per_gib(self) -> float:
        if len(self.points) < 2:
            return float("nan")
        (c0, b0), (c1, b1) = self.points[0], self.points[-1]
        return (c1 - c0) / ((b1 - b0) / GiB) if b1 > b0 else float("nan")


# ---------------------------------------------------------------- the two goals


def bulk_stage(source: Service, target: Service, args: argparse.Namespace, rows: list[list[str]]) -> list[float]:
    toml = scenario_toml("multifd-speed", f"guest.ram-size={args.ram}",
                         f"migration.multifd-channels={args.channels}")
    ratios = []
    for i in range(1, args.repeat + 1):
        order = ("tcp", "migbed") if i % 2 else ("migbed", "tcp")
        got: dict[str, tuple[float, float]] = {}
        for what in order:
            if what == "tcp":
                secs, cpu = raw_tcp(args.ram_bytes, args.channels)
                got["tcp"] = (args.ram_bytes / secs, cpu / (args.ram_bytes / GiB))
            else:
                probe = BulkCpu((source.pid, target.pid))
                rec = require_ok(migrate(source, target.address, toml, "legacy", probe.on_sample))
                rate = rec.bulk_stage_rate()
                if rate is None:
                    raise RuntimeError(f"run {rec.run_id} has no bulk stage")
                got["migbed"] = (rate, probe.cpu_per_gib())
        ratio = got["migbed"][0] / got["tcp"][0]
        ratios.append(ratio)
        rows.append([str(i), f"{got['tcp'][0] / MiB:.0f}", f"{got['tcp'][1]:.2f}",
                     f"{got['migbed'][0] / MiB:.0f}", f"{got['migbed'][1]:.2f}", f"{ratio:.2f}",
                     load_average()])
        print(f"  bulk #{i}: raw TCP x{args.channels} {got['tcp'][0] / MiB:.0f} MiB/s, migbed "
              f"multifd x{args.channels} {got['migbed'][0] / MiB:.0f} MiB/s: {ratio:.2f}", flush=True)
    return ratios


def raw_ms(nbytes: int, conns: int, samples: int, spread_pages: int = 0) -> float:
    """The median of `samples` raw TCP transfers of nbytes (raw_tcp), in ms."""
    return median([raw_tcp(nbytes, conns, spread_pages)[0] * 1e3 for _ in range(samples)])


def final_copy(source: Service, target: Service, args: argparse.Namespace,
               rows: list[list[str]]) -> list[tuple[float, float]]:
    """Per run: downtime / the goal against contiguous raw TCP, and against the same pages."""
    toml = scenario_toml("final-copy", "migration.multifd=true",
                         f"migration.multifd-channels={args.channels}")
    spread = parse_scenario(toml).guest.working_set // PAGE  # where its dirty pages lie
    excess = []
    for i in range(1, args.repeat + 1):
        rec = require_ok(migrate(source, target.address, toml, "legacy"))
        n, k = rec.downtime_bytes, args.tcp_samples
        tcp_ms, same_ms, one_ms = raw_ms(n, args.channels, k), raw_ms(n, args.channels, k, spread), raw_ms(n, 1, k)
        goal_ms = FINAL_GOAL_RATIO * tcp_ms + FINAL_GOAL_SLACK_MS
        same_goal_ms = FINAL_GOAL_RATIO * same_ms + FINAL_GOAL_SLACK_MS
        excess.append((rec.downtime_ms / goal_ms, rec.downtime_ms / same_goal_ms))
        rows.append([str(i), f"{n / MiB:.1f}", f"{tcp_ms:.1f}", f"{same_ms:.1f}", f"{one_ms:.1f}",
                     f"{rec.downtime_ms:.1f}", f"{rec.stop_copy_ms:.1f}", f"{rec.downtime_ms / tcp_ms:.2f}",
                     f"{goal_ms:.1f}", "yes" if rec.downtime_ms <= goal_ms else "no",
                     f"{rec.downtime_ms / same_ms:.2f}", "yes" if rec.downtime_ms <= same_goal_ms else "no",
                     load_average()])
        print(f"  final #{i}: {n / MiB:.1f} MiB, downtime {rec.downtime_ms:.1f} ms, raw TCP x{args.channels} "
              f"{tcp_ms:.1f} ms contiguous (goal <= {goal_ms:.1f} ms), {same_ms:.1f} ms as scattered pages "
              f"(<= {same_goal_ms:.1f} ms)", flush=True)
    return excess


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) == 6 and sys.argv[1] == "--receive":
        _receive(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
        return 0
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ram", default="2GiB", help="guest RAM of the bulk-stage runs (2GiB)")
    p.add_argument("--channels", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--tcp-samples", type=int, default=3, help="raw TCP transfers per final copy")
    p.add_argument("--only", choices=("bulk", "final"), help="run one of the two goals")
    args = p.parse_args(argv)
    args.ram_bytes = parse_size(args.ram)
    header(f"multifd speed: a real migration vs raw TCP with {args.channels} connections "
           f"({args.repeat} repeats)")
    bulk_rows = [["#", "raw TCP MiB/s", "CPU s/GiB", "bulk stage MiB/s", "CPU s/GiB", "ratio",
                  "load avg"]]
    final_rows = [["#", "downtime MiB", f"raw TCP x{args.channels} ms", f"same pages x{args.channels} ms",
                   "raw TCP x1 ms", "downtime ms", "stop-copy ms", "ratio", "goal ms", "met",
                   "ratio (same pages)", "met (same pages)", "load avg"]]
    bulk: list[float] = []
    final: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory(prefix="migbed-speed-") as tmp, \
            stack(Path(tmp)) as (source, target):
        if args.only != "final":
            bulk = bulk_stage(source, target, args, bulk_rows)
        if args.only != "bulk":
            final = final_copy(source, target, args, final_rows)
    if bulk:
        print(f"\n1. bulk stage ({args.ram} idle guest), multifd x{args.channels} vs raw TCP "
              f"x{args.channels} (CPU: both processes, per GiB moved)\n")
        print(table(bulk_rows))
        print(f"\nbulk stage / raw TCP: median {median(bulk):.2f} [{min(bulk):.2f}-{max(bulk):.2f}] "
              f"(goal >= {BULK_GOAL})")
    if final:
        print(f"\n2. final copy (final-copy comparison, multifd x{args.channels}) vs raw TCP "
              f"x{args.channels} for the same bytes\n")
        print(table(final_rows))
        for j, what in enumerate(("raw TCP (contiguous)", "raw TCP moving the same scattered pages")):
            ratios = [x[j] for x in final]
            print(f"\nfinal copy within {FINAL_GOAL_RATIO} x {what} + {FINAL_GOAL_SLACK_MS:g} ms: "
                  f"{sum(x <= 1.0 for x in ratios)}/{len(ratios)} runs; downtime / goal median "
                  f"{median(ratios):.2f}")
    print(f"\nload average at the end: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
