"""TCP goodput between two fresh processes (migbed.env.goodput's receiver and sender), as the
benchmarks measure a link: the receiver may live in a network namespace (`wrapper`)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence

from migbed.experiments.localstack import free_port


def measure_goodput(host: str, seconds: float, warmup: float, wrapper: Sequence[str] = ()) -> float:
    """Payload bits/s from this process's side to a receiver on `host`, counted by the
    receiver after `warmup` s."""
    port = free_port()
    to = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    recv = subprocess.Popen(
        [*wrapper, sys.executable, "-m", "migbed.env.goodput", "recv", "--listen", to,
         "--count", "1", "--warmup", str(warmup)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        out = subprocess.run([sys.executable, "-m", "migbed.env.goodput", "send", "--to", to,
                              "--seconds", str(seconds)],
                             capture_output=True, text=True, timeout=seconds * 10 + 30, check=False)
        result = json.loads(out.stdout or "{}")
        if not result.get("ok"):
            raise RuntimeError(f"goodput failed: {out.stdout} {out.stderr}")
        return float(result["goodput_bps"])
    finally:
        try:
            recv.wait(10)
        except subprocess.TimeoutExpired:
            recv.kill()
            recv.wait()
