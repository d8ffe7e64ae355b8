"""The results table (median and range per policy), from run records."""

from __future__ import annotations

from migbed.measure.record import RunRecord
from migbed.report.stats import format_spread

TABLE_FIELDS = [
    ("guest_downtime_ms", "guest downtime ms"),
    ("downtime_ms", "downtime ms (QEMU)"),
    ("expected_downtime_ms", "expected ms"),
    ("switchover_ack_wait_ms", "ACK wait ms"),
    ("total_time_ms", "total ms"),
    ("dirty_sync_count", "iterations"),
]


def dilation_note(records: list[RunRecord]) -> str:
    """One line saying the figures are in virtual time, when any run was dilated ("" if none)."""
    factors = sorted({r.time_dilation for r in records if r.time_dilation not in (0.0, 1.0)})
    if not factors:
        return ""
    ks = ", ".join(f"{k:g}" for k in factors)
    return (f"time-dilation {ks}: every time and rate here is virtual; the runs took {ks} times "
            "as long on this host (docs/fidelity.md, time dilation)")


def results_table(records: list[RunRecord]) -> str:
    """Median [min-max] per policy of the completed runs; counts of every outcome."""
    policies: list[str] = []
    for r in records:
        if r.policy not in policies:
            policies.append(r.policy)
    header = ["policy", "runs", "verified", *[label for _, label in TABLE_FIELDS], "switched on"]
    rows = [header]
    for p in policies:
        mine = [r for r in records if r.policy == p]
        done = [r for r in mine if r.outcome == "completed"]
        row = [p, str(len(mine)), f"{sum(r.verified for r in mine)}/{len(mine)}"]
        row += [format_spread([float(getattr(r, f)) for r in done]) for f, _ in TABLE_FIELDS]
        row.append(switched_on(done))
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    note = dilation_note(records)
    if note:
        lines.append(note)
    failed = [r for r in records if r.outcome != "completed"]
    for r in failed:
        lines.append(f"! {r.run_id}: {r.outcome}: {r.error}")
    return "\n".join(lines)


# A record written before decision_basis existed does not say: shown as such, not guessed
# from its reason text.
UNKNOWN_BASIS = "unknown"


def switched_on(runs: list[RunRecord]) -> str:
    """What each switchover rested on (RunRecord.decision_basis, core/policy.py Basis:
    "data", the pending data fitted, and the ACK where the policy waits for one;
    time-aware's "prediction", "floor" or "data (no prediction)"), or the cap that forced
    it, with the count of each when the runs differ."""
    kinds = [r.forced_by_cap or r.decision_basis or UNKNOWN_BASIS for r in runs]
    if not kinds:
        return "-"
    counts = {k: kinds.count(k) for k in dict.fromkeys(kinds)}
    if len(counts) == 1:
        return kinds[0]
    return ", ".join(f"{k} {n}/{len(kinds)}" for k, n in counts.items())
