"""One clock for two hosts: NTP-style offset estimation over the migration channel.

Guest-visible downtime is the last vCPU tick on the source to the first on the target.
On one kernel both read the same CLOCK_MONOTONIC (same boot id): the offset is exactly 0.
Across hosts each Ping/Pong gives t0 (source send), t1 (target receive), t2 (source
receive); assuming symmetric paths, offset = t1 - (t0 + t2) / 2 with error at most
(t2 - t0) / 2. The sample with the smallest round trip bounds the error best.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass


def now_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            return fh.read().strip()
    except OSError:
        return ""


@dataclass
class OffsetEstimate:
    offset_ns: int  # target clock - source clock
    uncertainty_ns: int  # half the best round trip (0 on a shared clock)
    same_clock: bool
    samples: int


class OffsetEstimator:
    def __init__(self, same_clock: bool) -> None:
        self.same_clock = same_clock
        self.best_rtt: int | None = None
        self.best_offset = 0
        self.samples = 0
        self.last_rtt_ns = 0

    def add(self, source_send_ns: int, target_recv_ns: int, source_recv_ns: int) -> None:
        rtt = source_recv_ns - source_send_ns
        if rtt < 0:
            return
        self.samples += 1
        self.last_rtt_ns = rtt
        if self.best_rtt is None or rtt < self.best_rtt:
            self.best_rtt = rtt
            self.best_offset = target_recv_ns - (source_send_ns + source_recv_ns) // 2

    def estimate(self) -> OffsetEstimate:
        if self.same_clock:
            return OffsetEstimate(0, 0, True, self.samples)
        rtt = self.best_rtt if self.best_rtt is not None else 0
        return OffsetEstimate(self.best_offset, rtt // 2, False, self.samples)


def utc_stamp() -> str:
    """A results subfolder's name (run, up): UTC, sortable (20261130T004012Z)."""
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
