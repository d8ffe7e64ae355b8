"""The pure part of bench/container_link.py: the goal's reference, the source's bulk-stage
bandwidth from a run record, and the subnet the containers run on. No I/O and no side effects
on import, so tests/unit/test_bench_link_goal.py runs it without Docker.
"""

from __future__ import annotations

import ipaddress
import statistics
from collections.abc import Iterable
from dataclasses import dataclass

from migbed.env.shaping import FRAME_EFFICIENCY
from migbed.measure.record import RunRecord

GOAL_TOLERANCE = 0.05  # issue 11: within 5 % of the reference

# compose.yaml takes MIGBED_NET as the first three octets of its /24. 172.30.0 is `migbed
# up`'s, 172.30.7 and 172.30.8 the Docker tests': the benchmark looks higher up.
SUBNET_PREFIX = "172.30"
FIRST_THIRD_OCTET = 200
LAST_THIRD_OCTET = 254


@dataclass(frozen=True)
class Reference:
    """What the source's bandwidth is compared with: the lower of the two."""

    bps: float
    which: str  # "rate x 1448/1514" or "raw TCP"


def goal_reference(rate_bps: float, raw_tcp_bps: float) -> Reference:
    """The lower of the tbf rate's TCP payload (rate x 1448/1514) and raw TCP's goodput
    across the same containers: the link cannot carry more than either."""
    if not rate_bps > 0:
        raise ValueError(f"rate_bps must be positive, got {rate_bps!r}")
    if not raw_tcp_bps > 0:
        raise ValueError(f"raw_tcp_bps must be positive, got {raw_tcp_bps!r}")
    expected = rate_bps * FRAME_EFFICIENCY
    if expected <= raw_tcp_bps:
        return Reference(expected, "rate x 1448/1514")
    return Reference(raw_tcp_bps, "raw TCP")


def within_goal(measured_bps: float, ref: Reference) -> bool:
    """Within GOAL_TOLERANCE either way: above it the source counts bytes the link has not
    carried yet (buffers), which is no more faithful than falling short."""
    return abs(measured_bps / ref.bps - 1) <= GOAL_TOLERANCE


def bulk_stage_rate(rec: RunRecord) -> tuple[float, float]:
    """(bytes/s of the bulk stage, median bytes/s of its 100 ms timeline windows), as
    bench/stream_throughput.py takes it: precopy_bytes / (decision - precopy)."""
    rate = rec.bulk_stage_rate()
    if rate is None:
        raise ValueError(f"run {rec.run_id}: no bulk stage (precopy event "
                         f"{rec.event_time('precopy')}, decision event "
                         f"{rec.event_time('decision')}; {rec.outcome}: {rec.error})")
    windows = rec.bulk_stage_windows()
    return rate, statistics.median(windows) if windows else float("nan")


def free_subnet(used: Iterable[str]) -> str:
    """The first SUBNET_PREFIX.N (N from FIRST_THIRD_OCTET) whose /24 overlaps none of the
    `used` CIDRs (the Docker networks present), as compose.yaml's MIGBED_NET wants it."""
    taken = [ipaddress.ip_network(cidr, strict=False) for cidr in used]
    for third in range(FIRST_THIRD_OCTET, LAST_THIRD_OCTET + 1):
        net = ipaddress.ip_network(f"{SUBNET_PREFIX}.{third}.0/24")
        if not any(net.overlaps(t) for t in taken if t.version == 4):
            return f"{SUBNET_PREFIX}.{third}"
    raise RuntimeError(f"no free /24 in {SUBNET_PREFIX}.{FIRST_THIRD_OCTET}-{LAST_THIRD_OCTET}"
                       ".0 among the Docker networks; pass --net")
