"""multifd data plane vs raw TCP, a sender process and a receiver process on loopback.

    .venv/bin/python bench/multifd_throughput.py [--ram 512MiB] [--rounds 4] [--repeat 5]
                                                 [--channels 1,2] [--burst 512KiB,4MiB]

This process is the sender (the source); it starts one receiver process (the target) and
drives it over a pipe. Every trial moves the same bytes, --rounds passes over a --ram image
(numpy, prefaulted on both sides), on fresh connections (connecting is not timed):

  raw TCP     N connections, each sendall()s its 1/N slice of the image per round from a
              numpy buffer; the receiver recv_into()s (MSG_WAITALL) straight into its numpy
              buffer, one thread per connection. The best plain Python can do: the reference.
  raw TCP, asyncio receiver
              the same, but the receiver is one asyncio loop with loop.sock_recv_into(): the
              alternative design for the target, measured against the threaded one.
  multifd     migbed.dataplane: MultifdSender (submit_async of every page, then sync(round))
              into a MultifdListener session (wait_sync(rounds)), N channels.

A trial's time runs from the first byte submitted to the receiver's "done" line (all bytes
in its buffer; for multifd: wait_sync of the last round returned). After each multifd trial
the receiver's RAM digest is checked against the sender's (not timed): a figure from a
transfer that lost a page would not count. Modes run back to back in alternating order,
--repeat times; medians are reported, and the ratio multifd / raw TCP for the same number of
connections (goal: >= 0.8 with 2 channels).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np
from _common import ROOT, GiB, MiB, header, load_average, median, table

from migbed.core.units import parse_size
from migbed.dataplane.receiver import MultifdListener
from migbed.dataplane.sender import DEFAULT_BURST_BYTES, MultifdSender

PAGE = 4096


def make_ram(size: int, fill: bool) -> np.ndarray:
    ram = np.empty((size // PAGE, PAGE), dtype=np.uint8)
    words = ram.reshape(-1).view(np.uint64)
    if fill:  # distinct content per word, so a misplaced page changes the digest
        words[:] = np.arange(words.size, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    else:
        words.fill(0)  # prefault: np.empty only reserves
    return ram


def digest(ram: np.ndarray) -> str:
    return hashlib.blake2b(ram.data.cast("B"), digest_size=16).hexdigest()


def slices(ram: np.ndarray, n: int) -> list[memoryview]:
    flat = ram.data.cast("B")
    step = -(-flat.nbytes // n)
    return [flat[i * step:min((i + 1) * step, flat.nbytes)] for i in range(n)]


# ---------------------------------------------------------------- receiver process


def cpu_s() -> float:
    """User + system CPU seconds of this process so far (all threads)."""
    t = os.times()
    return t.user + t.system


def recv_all(sock: socket.socket, view: memoryview) -> None:
    got = 0
    while got < view.nbytes:
        n = sock.recv_into(view[got:], view.nbytes - got, socket.MSG_WAITALL)
        if n == 0:
            raise ConnectionError("sender closed early")
        got += n


def serve_tcp(ram: np.ndarray, conns: int, rounds: int, use_asyncio: bool) -> None:
    with socket.create_server(("127.0.0.1", 0)) as srv:
        print(f"port {srv.getsockname()[1]}", flush=True)
        socks = [srv.accept()[0] for _ in range(conns)]
    cpu0 = cpu_s()
    parts = slices(ram, conns)
    if use_asyncio:
        async def one(s: socket.socket, view: memoryview) -> None:
            loop = asyncio.get_running_loop()
            for _ in range(rounds):
                got = 0
                while got < view.nbytes:
                    n = await loop.sock_recv_into(s, view[got:])
                    if n == 0:
                        raise ConnectionError("sender closed early")
                    got += n

        async def all_() -> None:
            for s in socks:
                s.setblocking(False)
            await asyncio.gather(*(one(s, v) for s, v in zip(socks, parts, strict=True)))

        asyncio.run(all_())
    else:
        def one_t(s: socket.socket, view: memoryview) -> None:
            for _ in range(rounds):
                recv_all(s, view)
        ts = [threading.Thread(target=one_t, args=(s, v)) for s, v in zip(socks, parts, strict=True)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    print(f"done {cpu_s() - cpu0:.4f}", flush=True)
    for s in socks:
        s.close()


def serve_multifd(listener: MultifdListener, ram: np.ndarray, channels: int, rounds: int,
                  token: bytes) -> None:
    session = listener.register(token, ram, channels, PAGE, silence_timeout_s=30.0)
    cpu0 = cpu_s()
    print("registered", flush=True)
    asyncio.run(session.wait_sync(rounds, 600.0))
    print(f"done {cpu_s() - cpu0:.4f}", flush=True)
    deadline = time.monotonic() + 10
    while not session.finished and time.monotonic() < deadline:
        time.sleep(0.01)
    listener.unregister(token)
    print(f"digest {digest(ram)} {session.pages_received}", flush=True)


def receiver(size: int) -> int:
    ram = make_ram(size, fill=False)
    with MultifdListener("127.0.0.1") as listener:
        print(f"ready {listener.port}", flush=True)
        for line in sys.stdin:
            cmd, *args = line.split()
            if cmd == "zero":
                ram.reshape(-1).view(np.uint64).fill(0)
                print("zeroed", flush=True)
            elif cmd in ("tcp", "tcp-asyncio"):
                serve_tcp(ram, int(args[0]), int(args[1]), cmd == "tcp-asyncio")
            elif cmd == "multifd":
                serve_multifd(listener, ram, int(args[0]), int(args[1]), bytes.fromhex(args[2]))
            elif cmd == "quit":
                return 0
    return 0


# ---------------------------------------------------------------- sender (this process)


class Receiver:
    def __init__(self, size: int) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve", str(size)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     cwd=ROOT)
        self.port = int(self.expect("ready")[0])

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def expect(self, word: str) -> list[str]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith(word):
            raise RuntimeError(f"receiver said {line!r}, expected {word!r}")
        return line.split()[1:]

    def close(self) -> None:
        self.send("quit")
        self.proc.wait(30)


@dataclass
class Trial:
    rate: float  # bytes/s
    sender_cpu: float  # CPU seconds per GiB moved, the whole process
    receiver_cpu: float


def trial_tcp(rx: Receiver, ram: np.ndarray, conns: int, rounds: int, use_asyncio: bool) -> Trial:
    rx.send(f"{'tcp-asyncio' if use_asyncio else 'tcp'} {conns} {rounds}")
    port = int(rx.expect("port")[0])
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(conns)]
    parts = slices(ram, conns)

    def one(s: socket.socket, view: memoryview) -> None:
        for _ in range(rounds):
            s.sendall(view)

    ts = [threading.Thread(target=one, args=(s, v)) for s, v in zip(socks, parts, strict=True)]
    cpu0, t0 = cpu_s(), time.perf_counter()
    for t in ts:
        t.start()
    rx_cpu = float(rx.expect("done")[0])
    elapsed = time.perf_counter() - t0
    for t in ts:
        t.join()
    cpu = cpu_s() - cpu0
    for s in socks:
        s.close()
    gib = ram.nbytes * rounds / GiB
    return Trial(ram.nbytes * rounds / elapsed, cpu / gib, rx_cpu / gib)


def trial_multifd(rx: Receiver, ram: np.ndarray, channels: int, rounds: int, packet: int,
                  want_digest: str) -> Trial:
    rx.send("zero")
    rx.expect("zeroed")
    token = np.random.default_rng().bytes(16)
    rx.send(f"multifd {channels} {rounds} {token.hex()}")
    rx.expect("registered")
    sender = MultifdSender("127.0.0.1", rx.port, token, channels, ram, burst_bytes=packet,
                           heartbeat_timeout_s=30.0)
    sender.connect(5.0)
    pages = np.arange(ram.shape[0])

    async def send() -> None:
        for r in range(1, rounds + 1):
            await sender.submit_async(pages)
            await sender.sync(r)

    cpu0, t0 = cpu_s(), time.perf_counter()
    asyncio.run(send())
    rx_cpu = float(rx.expect("done")[0])
    elapsed = time.perf_counter() - t0
    cpu = cpu_s() - cpu0
    sender.close()
    got, pages_received = rx.expect("digest")
    if got != want_digest or int(pages_received) != ram.shape[0] * rounds:
        raise RuntimeError(f"multifd {channels} channels: target RAM differs from the source "
                           f"({got} != {want_digest}, {pages_received} pages)")
    gib = ram.nbytes * rounds / GiB
    return Trial(ram.nbytes * rounds / elapsed, cpu / gib, rx_cpu / gib)


def rate(trials: list[Trial]) -> float:
    return median([t.rate for t in trials])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ram", default="512MiB", help="RAM image moved per round (512MiB)")
    p.add_argument("--rounds", type=int, default=4, help="passes over the image per trial (4)")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--channels", default="1,2", help="connection counts to measure (1,2)")
    p.add_argument("--burst", default="", help="bytes of QEMU-sized (512 KiB) packets per "
                   "write to compare, e.g. 512KiB,4MiB (default: the sender's default)")
    p.add_argument("--no-asyncio", action="store_true", help="skip the asyncio receiver")
    p.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        return receiver(args.serve)
    size = parse_size(args.ram)
    packets = [parse_size(x) for x in args.burst.split(",")] if args.burst else \
        [DEFAULT_BURST_BYTES]
    counts = [int(c) for c in args.channels.split(",")]
    header(f"multifd throughput: {size // MiB} MiB x {args.rounds} rounds per trial, "
           f"{args.repeat} repeats, loopback, a sender and a receiver process")
    ram = make_ram(size, fill=True)
    want = digest(ram)
    rx = Receiver(size)
    modes = [("tcp", n, 0) for n in counts] + \
        [("multifd", n, pkt) for n in counts for pkt in packets]
    if not args.no_asyncio:
        modes += [("tcp-asyncio", n, 0) for n in counts]
    results: dict[tuple[str, int, int], list[Trial]] = {m: [] for m in modes}
    try:
        for i in range(args.repeat):
            for kind, n, pkt in (modes if i % 2 == 0 else list(reversed(modes))):
                if kind == "multifd":
                    tr = trial_multifd(rx, ram, n, args.rounds, pkt, want)
                else:
                    tr = trial_tcp(rx, ram, n, args.rounds, kind == "tcp-asyncio")
                results[(kind, n, pkt)].append(tr)
                print(f"  #{i + 1} {label(kind, pkt):28s} x{n}  {tr.rate / MiB:7.0f} MiB/s  "
                      f"CPU s/GiB: sender {tr.sender_cpu:.2f} receiver {tr.receiver_cpu:.2f}",
                      flush=True)
    finally:
        rx.close()
    report(results, modes, counts, packets, with_asyncio=not args.no_asyncio)
    print(f"load average at the end: {load_average()}")
    return 0


def report(results: dict[tuple[str, int, int], list[Trial]], modes: list[tuple[str, int, int]],
           counts: list[int], packets: list[int], with_asyncio: bool) -> None:
    rows = [["measure", "connections", "median MiB/s", "min", "max", "sender CPU s/GiB",
             "receiver CPU s/GiB"]]
    for kind, n, pkt in sorted(modes, key=lambda m: (m[1], m[0] != "tcp", m[0], m[2])):
        trials = results[(kind, n, pkt)]
        xs = [t.rate for t in trials]
        rows.append([label(kind, pkt), str(n), f"{median(xs) / MiB:.0f}", f"{min(xs) / MiB:.0f}",
                     f"{max(xs) / MiB:.0f}", f"{median([t.sender_cpu for t in trials]):.2f}",
                     f"{median([t.receiver_cpu for t in trials]):.2f}"])
    print()
    print(table(rows))
    print()
    for n in counts:
        tcp = rate(results[("tcp", n, 0)])
        for pkt in packets:
            goal = " (goal >= 0.8)" if n == 2 else ""
            print(f"ratio multifd ({pkt // 1024} KiB bursts) / raw TCP, {n} connection(s) = "
                  f"{rate(results[('multifd', n, pkt)]) / tcp:.2f}{goal}")
        if with_asyncio:
            print(f"ratio asyncio receiver / threaded receiver, raw TCP x{n} = "
                  f"{rate(results[('tcp-asyncio', n, 0)]) / tcp:.2f}")


def label(kind: str, packet: int) -> str:
    names = {"tcp": "raw TCP (threads)", "tcp-asyncio": "raw TCP, asyncio receiver",
             "multifd": "multifd"}
    return f"{names[kind]}, {packet // 1024} KiB bursts" if packet else names[kind]


if __name__ == "__main__":
    sys.exit(main())
