"""CPU and memory of a process, read from /proc (Linux)."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Sequence
from pathlib import Path


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")


def rss_bytes(pid: int) -> int:
    """Resident set (VmRSS) now, in bytes."""
    return _status_kib(pid, "VmRSS") * 1024


def hwm_bytes(pid: int) -> int:
    """Peak resident set (VmHWM) of a process, in bytes."""
    return _status_kib(pid, "VmHWM") * 1024


def reset_hwm(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs). True if done."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def cpu_seconds(pid: int) -> float:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


class PeakSampler:
    """Polls a set of pids' VmRSS (for reporting alongside the kernel's VmHWM)."""

    def __init__(self, pids: Sequence[int], period_s: float = 0.05) -> None:
        self.pids = list(pids)
        self.peak = dict.fromkeys(self.pids, 0)
        self.period = period_s
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for p in self.pids:
                with contextlib.suppress(OSError, RuntimeError):
                    self.peak[p] = max(self.peak[p], rss_bytes(p))
            self._stop.wait(self.period)

    def __enter__(self) -> PeakSampler:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
