"""migbed.runtime.malloc: with the thresholds set, a process that allocates and frees 1 MiB
buffers (what a gRPC receiver does per message) stops faulting in fresh pages for each one,
and a guest-sized allocation still goes back to the kernel when freed. Counted by the kernel
(minor page faults, RSS), in fresh processes."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

CHURN = """
import json, resource, sys
from migbed.runtime.malloc import keep_stream_buffers_mapped

def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

def fill_window():
    window = [bytearray(1 << 20) for _ in range(8)]  # the HTTP/2 window's worth
    for b in window:
        b[::4096] = b"x" * 256                  # touch every page, as a copy into it does
    return window

tuned = keep_stream_buffers_mapped() if sys.argv[1] == "tuned" else None
w = fill_window()                               # the first burst: faulted in either way
del w
before = faults()
for _ in range(20):                             # filled and drained 20 times
    w = fill_window()
    del w
again = faults() - before
base = rss()
guest = bytearray(64 << 20)                     # a guest's RAM, made resident
guest[::4096] = b"g" * (16 << 10)
held = rss() - base
del guest
print(json.dumps({"tuned": tuned, "again": again, "held": held,
                  "kept": rss() - base}))
"""


def _churn(mode: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", CHURN, mode], capture_output=True, text=True,
                         check=True, timeout=60)
    return json.loads(out.stdout)


def test_thresholds_are_set_on_glibc() -> None:
    assert _churn("tuned")["tuned"] is True


def test_buffers_are_reused_instead_of_faulted_in_again() -> None:
    default, tuned = _churn("default"), _churn("tuned")
    # Untuned, glibc gives the drained window back to the kernel and faults its pages in
    # again next time (20 x 8 MiB = 40 960 pages); tuned, the heap keeps them mapped.
    assert default["again"] > 20_000, default
    assert tuned["again"] < default["again"] // 10, (default, tuned)


def test_a_guest_sized_buffer_goes_back_to_the_kernel() -> None:
    tuned = _churn("tuned")
    assert tuned["held"] > 60 << 20, tuned  # it was resident ...
    assert tuned["kept"] < 4 << 20, tuned  # ... and unmapped when freed
