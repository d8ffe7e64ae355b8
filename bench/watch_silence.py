"""Watch silence: the longest a live source leaves its watcher without any event.

    .venv/bin/python bench/watch_silence.py [--runs 24] [--concurrent 4] [--burn 0]

The orchestrator declares a source lost when nothing (sample, heartbeat, record) comes on the
Watch for `lost_after_s` (migbed/core/watch.py: the run's heartbeat-timeout + 5 s, at least
15 s). This measures how close a live source comes to that bound: `--runs` migrations of a
mix of the named comparisons' scenarios (a 1 GiB guest whose boot prefaults its RAM, the
mlx5-like device, multifd with device state on the channels, the tiny one), `--concurrent`
at a time on one source service (their guests' vCPU threads, boots and streams share its
event loop), with `--burn N` busy processes loading the machine besides. For every run, the
gaps between consecutive Watch events as this process received them: the input is the load,
the result is the distribution of gaps. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import multiprocessing
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import grpc
from _common import header, load_average, scenario_toml, stack, table

from migbed.core.watch import HEARTBEAT_INTERVAL_S, LOST_AFTER_MIN_S, WATCHER_GRACE_S
from migbed.wire import migration_pb2 as pb
from migbed.wire import migration_pb2_grpc as pbg
from migbed.wire.channel import control_channel

# (comparison, overrides): what each run migrates, in turn.
MIX = [("scale-big", ()), ("default", ()), ("multifd-device-state", ()), ("smoke", ())]


@dataclass
class Watched:
    name: str
    gaps: list[float] = field(default_factory=list)  # s between consecutive events
    outcome: str = ""


def _burn(stop: multiprocessing.synchronize.Event) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10_000))


@contextmanager
def burners(n: int) -> Iterator[None]:
    stop = multiprocessing.Event()
    procs = [multiprocessing.Process(target=_burn, args=(stop,), daemon=True) for _ in range(n)]
    for p in procs:
        p.start()
    try:
        yield
    finally:
        stop.set()
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()


def one(source: str, target: str, index: int, out: Watched) -> None:
    name, overrides = MIX[index % len(MIX)]
    run_id = f"silence-{index}"
    channel = control_channel(source)
    stub = pbg.ControlStub(channel)
    try:
        stub.Start(pb.StartRequest(scenario_toml=scenario_toml(name, *overrides), policy="legacy",
                                   target_address=target, run_id=run_id,
                                   watcher_grace_s=WATCHER_GRACE_S), timeout=60)
        last = time.monotonic()
        for ev in stub.Watch(pb.WatchRequest(run_id=run_id)):
            now = time.monotonic()
            out.gaps.append(now - last)
            last = now
            if ev.WhichOneof("body") == "record":
                out.outcome = ev.record.outcome
    except grpc.RpcError as e:
        out.outcome = f"error: {e.code().name}"
    finally:
        channel.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=24)
    p.add_argument("--concurrent", type=int, default=4)
    p.add_argument("--burn", type=int, default=0, help="busy processes beside (load)")
    args = p.parse_args(argv)
    header(f"watch silence: {args.runs} runs, {args.concurrent} at a time, {args.burn} burners")
    watched = [Watched(MIX[i % len(MIX)][0]) for i in range(args.runs)]
    t0 = time.monotonic()
    with stack() as (source, target), burners(args.burn):
        for first in range(0, args.runs, args.concurrent):
            batch = range(first, min(args.runs, first + args.concurrent))
            threads = [threading.Thread(target=one, args=(source.address, target.address, i,
                                                          watched[i])) for i in batch]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    rows = [["scenario", "runs", "outcomes", "events", "max gap s", "gaps > 1.5 s"]]
    for name, _ in MIX:
        ws = [w for w in watched if w.name == name]
        gaps = [g for w in ws for g in w.gaps]
        rows.append([name, str(len(ws)), ",".join(sorted({w.outcome for w in ws})),
                     str(len(gaps)), f"{max(gaps, default=0):.2f}",
                     str(sum(g > 1.5 for g in gaps))])
    print(table(rows))
    worst = max((g for w in watched for g in w.gaps), default=0.0)
    print(f"longest silence {worst:.2f} s (heartbeat every {HEARTBEAT_INTERVAL_S:g} s; a source is "
          f"declared lost after {LOST_AFTER_MIN_S:g} s at least); {time.monotonic() - t0:.0f} s; "
          f"load average after {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
