"""The final copy (stop -> completion) vs raw TCP moving the same bytes, measured in one run.

    .venv/bin/python bench/final_copy.py [--repeat 3]

migbed: a real target and a real source service, the `final-copy` comparison (a RAM-only
320 MiB guest writing a 64 MiB working set at 16 MiB/s, max-bandwidth 128 MiB/s,
downtime-limit 300 ms), once on the main stream and once with multifd (2 channels). From each
run record: downtime_ms (the stop -> completion on the source; with the return path it ends at
the target's Shut), its stop-copy part (stop_copy_ms: the stop -> the source wrote the last
byte) and downtime_bytes (what was sent after the stop).

raw TCP: right after each run, two fresh processes on loopback move exactly that run's
downtime_bytes over one TCP connection (sendall from a prefaulted buffer, recv_into a
prefaulted buffer); the time runs from the first byte sent to the receiver's one-byte reply
after the last byte arrived, so it holds one round trip, as QEMU's completion does. On a
loaded machine one transfer of ~30 MiB varies several-fold, so each run is compared with
the median of --tcp-samples raw transfers made right after it.

The figure: downtime_ms / raw TCP time for the same bytes (goal: within 1.5x, plus a few ms
for the completion handshake). Nothing is asserted; the load average is printed.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import MiB, free_port, header, load_average, median, migrate, require_ok, scenario_toml, stack, table

_CHUNK = 1 * MiB


def _receiver(port: int, nbytes: int) -> None:
    buf = bytearray(nbytes)  # prefaulted: zero-filled by Python
    view = memoryview(buf)
    with socket.create_server(("127.0.0.1", port)) as srv:
        print("ready", flush=True)
        conn, _ = srv.accept()
        with conn:
            got = 0
            while got < nbytes:
                n = conn.recv_into(view[got:], min(nbytes - got, 4 * _CHUNK))
                if n == 0:
                    raise SystemExit("sender closed early")
                got += n
            conn.sendall(b"k")


def raw_tcp_ms(nbytes: int) -> float:
    """ms for one TCP connection between two fresh processes to move nbytes, plus a reply."""
    port = free_port()
    rcv = subprocess.Popen([sys.executable, __file__, "--receive", str(port), str(nbytes)],
                           stdout=subprocess.PIPE, text=True)
    try:
        assert rcv.stdout is not None
        rcv.stdout.readline()  # "ready"
        payload = memoryview(bytes(b"\x5a" * nbytes))
        with socket.create_connection(("127.0.0.1", port)) as s:
            t0 = time.perf_counter()
            s.sendall(payload)
            if s.recv(1) != b"k":
                raise RuntimeError("raw TCP receiver did not confirm")
            ms = (time.perf_counter() - t0) * 1e3
        rcv.wait(30)
        return ms
    finally:
        if rcv.poll() is None:
            rcv.kill()
            rcv.wait()


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) == 4 and sys.argv[1] == "--receive":
        _receiver(int(sys.argv[2]), int(sys.argv[3]))
        return 0
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--tcp-samples", type=int, default=3, help="raw TCP transfers per run")
    args = p.parse_args(argv)
    header(f"final copy: stop -> completion vs raw TCP for the same bytes ({args.repeat} repeats)")
    rows = [["mode", "#", "downtime ms", "stop-copy ms", "downtime MiB", "raw TCP ms", "ratio",
             "stop-copy ratio", "load avg"]]
    ratios: dict[str, list[float]] = {"main": [], "multifd": []}
    with tempfile.TemporaryDirectory(prefix="migbed-final-") as tmp, \
            stack(Path(tmp)) as (source, target):
        for i in range(args.repeat):
            for mode in ("main", "multifd") if i % 2 == 0 else ("multifd", "main"):
                toml = scenario_toml("final-copy", f"migration.multifd={str(mode == 'multifd').lower()}")
                rec = require_ok(migrate(source, target.address, toml, "legacy"))
                tcp = median([raw_tcp_ms(rec.downtime_bytes) for _ in range(args.tcp_samples)])
                ratio = rec.downtime_ms / tcp
                ratios[mode].append(ratio)
                rows.append([mode, str(i + 1), f"{rec.downtime_ms:.1f}", f"{rec.stop_copy_ms:.1f}",
                             f"{rec.downtime_bytes / MiB:.1f}", f"{tcp:.1f}", f"{ratio:.2f}",
                             f"{rec.stop_copy_ms / tcp:.2f}", load_average()])
                print(f"  {mode:7s} #{i + 1}: downtime {rec.downtime_ms:.1f} ms "
                      f"(stop-copy {rec.stop_copy_ms:.1f}, return path {rec.return_path}, "
                      f"end {rec.downtime_end}), {rec.downtime_bytes / MiB:.1f} MiB; raw TCP "
                      f"{tcp:.1f} ms", flush=True)
    print()
    print(table(rows))
    for mode, rs in ratios.items():
        print(f"\n{mode}: downtime / raw TCP median {median(rs):.2f} [{min(rs):.2f}-{max(rs):.2f}] "
              f"(goal <= 1.5 plus a few ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
