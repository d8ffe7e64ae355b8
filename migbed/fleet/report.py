"""Views of an evacuation, all derived from its results: the table, the CSV, the Gantt chart."""

from __future__ import annotations

import csv
import io
import statistics
from collections.abc import Sequence
from pathlib import Path

from migbed.fleet.evacuation import EvacuationResult
from migbed.measure.files import atomic_write_json, atomic_write_text
from migbed.measure.record import dump_results

GUEST_FIELDS = ["guest", "source_host", "target_host", "scenario", "run_id", "outcome", "verified",
                "queued_ms", "start_ms", "end_ms", "total_time_ms", "downtime_ms",
                "guest_downtime_ms", "guest_downtime_uncertainty_ms", "clock_offset_ms", "same_clock",
                "error"]


def _spread(values: Sequence[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.0f} [{min(values):.0f}-{max(values):.0f}]"


def fleet_table(results: Sequence[EvacuationResult]) -> str:
    """One row per policy: drain time against the per-guest figures (median [min-max])."""
    head = ["policy", "guests", "verified", "drain s", "in flight (max)", "guest downtime ms",
            "downtime ms (QEMU)", "total ms", "queued ms"]
    rows = [head]
    for res in results:
        done = [g for g in res.guests if g.outcome == "completed"]
        peak, per_source = res.in_flight_peaks()
        rows.append([
            res.policy, str(len(res.guests) + len(res.not_started)),
            f"{sum(g.verified for g in res.guests)}/{len(res.guests) + len(res.not_started)}",
            f"{res.drain_time_ms / 1e3:.1f}", f"{peak} ({max(per_source.values(), default=0)}/source)",
            _spread([g.guest_downtime_ms for g in done]), _spread([g.downtime_ms for g in done]),
            _spread([g.total_time_ms for g in done]), _spread([g.queued_ms for g in res.guests]),
        ])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for res in results:
        for g in res.guests:
            if g.outcome != "completed":
                lines.append(f"! {res.policy} {g.guest} on {g.target_host}: {g.outcome}: {g.error[:200]}")
        if res.not_started:
            lines.append(f"! {res.policy}: not started (stayed on their source): {', '.join(res.not_started)}")
    return "\n".join(lines)


def write_fleet(results: Sequence[EvacuationResult], out: Path) -> list[Path]:
    """fleet.json (the evacuation as data), fleet.csv (one row a guest), results.json
    (records); each written all at once (never half a file)."""
    out.mkdir(parents=True, exist_ok=True)
    fleet_json = out / "fleet.json"
    atomic_write_json(fleet_json, [r.to_dict() for r in results], indent=1)
    fleet_csv = out / "fleet.csv"
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(["policy", *GUEST_FIELDS])
    for res in results:
        for g in res.guests:
            w.writerow([res.policy, *[getattr(g, f) for f in GUEST_FIELDS]])
    atomic_write_text(fleet_csv, buf.getvalue())
    records = out / "results.json"
    dump_results([rec for res in results for rec in res.records], str(records))
    return [fleet_json, fleet_csv, records]


def plot_gantt(results: Sequence[EvacuationResult], path: Path) -> Path:
    """One panel per policy: each guest's migration as a bar on the runner's clock, its
    queueing before it, the drain time marked; bars labelled with the guest's downtime."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(results))
    height = max(2.5, 0.35 * max((len(r.guests) for r in results), default=1) + 1.2)
    fig, axes = plt.subplots(n, 1, figsize=(10, height * n), squeeze=False, sharex=True)
    for ax, res in zip(axes[:, 0], results, strict=False):
        guests = sorted(res.guests, key=lambda g: g.start_ms)
        for y, g in enumerate(guests):
            ax.barh(y, g.start_ms / 1e3, left=0, color="#dddddd", height=0.6)
            color = "#2ca02c" if g.verified else "#d62728"
            ax.barh(y, (g.end_ms - g.start_ms) / 1e3, left=g.start_ms / 1e3, color=color, height=0.6)
            ax.text(g.end_ms / 1e3, y, f" {g.guest_downtime_ms:.0f} ms", va="center", fontsize=8)
        ax.axvline(res.drain_time_ms / 1e3, color="black", linestyle="--", linewidth=1)
        ax.set_yticks(range(len(guests)), [f"{g.guest} -> {g.target_host}" for g in guests], fontsize=8)
        ax.invert_yaxis()
        ax.set_title(f"{res.policy}: drain {res.drain_time_ms / 1e3:.1f} s "
                     f"(grey: queued, green: migrating, label: guest-visible downtime)", fontsize=10)
    axes[-1, 0].set_xlabel("seconds since the evacuation started")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
