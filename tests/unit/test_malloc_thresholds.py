"""migbed.runtime.malloc: with the thresholds set, a process that allocates and frees 1 MiB
buffers in a loop (what a gRPC receiver does per message) stops faulting in fresh pages for
each one. Counted by the kernel (minor page faults), in fresh processes."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

CHURN = """
import json, resource, sys
from migbed.runtime.malloc import keep_stream_buffers_mapped
tuned = keep_stream_buffers_mapped() if sys.argv[1] == "tuned" else None
bytes(1 << 20)                                  # glibc's first 1 MiB buffer, freed
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):                             # a 16 MiB window filled and drained 20 times
    window = [bytearray(1 << 20) for _ in range(16)]
    for b in window:
        b[::4096] = b"x" * 256                  # touch every page, as a copy into it does
    del window, b
print(json.dumps({"tuned": tuned,
                  "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
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
    # again next time (20 x 16 MiB = 80 000 pages); tuned, the heap keeps them mapped.
    assert int(default["faults"]) > 40_000, default
    assert int(tuned["faults"]) < int(default["faults"]) // 10, (default, tuned)
