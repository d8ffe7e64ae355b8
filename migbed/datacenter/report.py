"""Views of a simulated drain, all derived from the per-migration results: the summary table,
summary.json, migrations.csv, series.csv, and the CDF, Gantt and utilisation plots."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from migbed.datacenter.simulator import OUTCOMES, PolicyResult
from migbed.datacenter.spec import DatacenterSpec
from migbed.datacenter.topology import Network

CSV_FIELDS = ["policy", "migration", "kind", "source", "target", "outcome", "queued_at_s", "start_s",
              "stop_s", "end_s", "queued_s", "total_time_s", "downtime_s", "guest_downtime_s",
              "objective_s", "breach", "bandwidth_MBps"]


def _quantiles(values: np.ndarray) -> dict[str, float | None]:
    v = values[~np.isnan(values)]
    if not len(v):
        return {k: None for k in ("min", "p50", "p90", "p99", "max", "mean")}
    q = np.quantile(v, [0.5, 0.9, 0.99])
    return {"min": float(v.min()), "p50": float(q[0]), "p90": float(q[1]), "p99": float(q[2]),
            "max": float(v.max()), "mean": float(v.mean())}


def summarise(spec: DatacenterSpec, res: PolicyResult) -> dict[str, Any]:
    """The policy's figures, each computed here once (every view reads this)."""
    outcome = np.frombuffer(res.outcome, dtype=np.int8) if res.migrations else np.zeros(0, np.int8)
    guest_dt = np.array(res.guest_downtime)
    objective = np.array(res.objective)
    completed = outcome == OUTCOMES.index("completed")
    breaches = int(np.sum(completed & (guest_dt > objective)))
    queued = np.array(res.start) - np.array(res.queued_at)
    return {
        "policy": res.policy,
        "drain_time_s": res.drain_time_s,
        "wave_time_s": res.wave_time_s,
        "migrations": res.migrations,
        "completed": int(completed.sum()),
        "not_completed": {o: int(np.sum(outcome == i)) for i, o in enumerate(OUTCOMES) if o != "completed"},
        "not_started": res.not_started,
        "downtime_objective_breaches": breaches,
        "breach_share": breaches / max(1, int(completed.sum())),
        "guest_downtime_s": _quantiles(guest_dt),
        "downtime_s": _quantiles(np.array(res.downtime)),
        "total_time_s": _quantiles(np.array(res.total_time)),
        "queued_s": _quantiles(queued),
        "bandwidth_at_start_Bps": _quantiles(np.array(res.bandwidth)),
        "peak_in_flight": int(max(res.series.get("in_flight", [0]), default=0)),
        "model_runs": res.model_runs,
        "bandwidth_classes": res.bandwidth_classes,
        "sharing_solves": res.solves,
    }


def _ms(x: float | None) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x * 1e3:.0f}"


def summary_table(summaries: Sequence[dict[str, Any]]) -> str:
    head = ["policy", "migrations", "drain s", "guest downtime ms p50 [p99]", "total ms p50 [p99]",
            "objective breaches", "not completed", "peak in flight"]
    rows = [head]
    for s in summaries:
        g, t = s["guest_downtime_s"], s["total_time_s"]
        rows.append([s["policy"], str(s["migrations"]), f"{s['drain_time_s']:.1f}",
                     f"{_ms(g['p50'])} [{_ms(g['p99'])}]", f"{_ms(t['p50'])} [{_ms(t['p99'])}]",
                     f"{s['downtime_objective_breaches']} ({s['breach_share']:.1%})",
                     str(sum(s["not_completed"].values()) + s["not_started"]), str(s["peak_in_flight"])])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_results(spec: DatacenterSpec, results: Sequence[PolicyResult], out: Path,
                  extra: dict[str, Any] | None = None) -> list[Path]:
    """summary.json, migrations.csv (one row a migration), series.csv (over time)."""
    out.mkdir(parents=True, exist_ok=True)
    summary = out / "summary.json"
    doc = {"datacenter": spec.name, "hosts": spec.topology.hosts, "racks": spec.topology.racks,
           "guests_per_host": spec.guests_per_host, "drain": spec.drain.mode,
           "limits": {"per_source": spec.limits.per_source, "per_cluster": spec.limits.per_cluster,
                      "per_target": spec.limits.per_target},
           "clock": "simulated seconds since the drain began", **(extra or {}),
           "policies": [summarise(spec, r) for r in results]}
    summary.write_text(json.dumps(doc, indent=1))
    (out / "datacenter.toml").write_text(spec.source_text)
    mig = out / "migrations.csv"
    net = Network(spec.topology)
    with open(mig, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(CSV_FIELDS)
        for r in results:
            for i in range(r.migrations):
                kind = r.kind[i]
                w.writerow([r.policy, i, spec.mix[kind].scenario.name, net.host_name(r.source[i]),
                            net.host_name(r.target[i]), OUTCOMES[r.outcome[i]],
                            *(f"{x:.4f}" for x in (r.queued_at[i], r.start[i], r.stop[i], r.end[i],
                                                   r.start[i] - r.queued_at[i], r.total_time[i],
                                                   r.downtime[i], r.guest_downtime[i], r.objective[i])),
                            int(r.guest_downtime[i] > r.objective[i]), f"{r.bandwidth[i] / 1e6:.1f}"])
    series = out / "series.csv"
    with open(series, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["policy", "t_s", "in_flight", "throughput_Bps", "uplink_max_utilisation", "spine_utilisation"])
        for r in results:
            s = r.series
            for i in range(len(s.get("t", []))):
                w.writerow([r.policy, f"{s['t'][i]:.4f}", int(s["in_flight"][i]), f"{s['throughput'][i]:.0f}",
                            f"{s['uplink_max'][i]:.4f}", f"{s['spine'][i]:.4f}"])
    return [summary, mig, series]


def plot_all(spec: DatacenterSpec, results: Sequence[PolicyResult], out: Path) -> list[Path]:
    """cdf.png (guest downtime and total time per policy), gantt.png (a sample of guests),
    utilisation.png (in flight, throughput, uplink and spine over time)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = [_plot_cdf(plt, results, out / "cdf.png"), _plot_gantt(plt, spec, results, out / "gantt.png"),
             _plot_utilisation(plt, results, out / "utilisation.png")]
    return paths


def _plot_cdf(plt: Any, results: Sequence[PolicyResult], path: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for r in results:
        for ax, values in ((axes[0], r.guest_downtime), (axes[1], r.total_time)):
            v = np.sort(np.array(values)[~np.isnan(np.array(values))])
            if len(v):
                ax.plot(v * 1e3, np.arange(1, len(v) + 1) / len(v), label=r.policy)
    objectives = sorted(set(np.array(results[0].objective))) if results and results[0].migrations else []
    for o in objectives[:3]:
        axes[0].axvline(o * 1e3, color="grey", linestyle=":", linewidth=1)
    axes[0].set_xlabel("guest-visible downtime (ms); dotted: objective")
    axes[1].set_xlabel("total time (ms)")
    for ax in axes:
        ax.set_ylabel("share of migrations")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_gantt(plt: Any, spec: DatacenterSpec, results: Sequence[PolicyResult], path: Path) -> Path:
    n = max(1, len(results))
    fig, axes = plt.subplots(n, 1, figsize=(11, 3.2 * n), squeeze=False, sharex=True)
    for ax, r in zip(axes[:, 0], results, strict=False):
        every = max(1, r.migrations // spec.gantt_guests)
        picked = list(range(0, r.migrations, every))
        picked.sort(key=lambda i: r.start[i])
        for y, i in enumerate(picked):
            ax.barh(y, r.start[i] - r.queued_at[i], left=r.queued_at[i], color="#dddddd", height=0.8)
            stop = r.stop[i] if math.isfinite(r.stop[i]) else r.end[i]
            ax.barh(y, stop - r.start[i], left=r.start[i], color="#2ca02c", height=0.8)
            breach = r.guest_downtime[i] > r.objective[i]
            ax.barh(y, r.end[i] - stop, left=stop, color="#d62728" if breach else "#1f77b4", height=0.8)
        ax.invert_yaxis()
        ax.set_yticks([])
        ax.axvline(r.drain_time_s, color="black", linestyle="--", linewidth=1)
        shown = f"every {every}th of {r.migrations}" if every > 1 else f"all {r.migrations}"
        ax.set_title(f"{r.policy}: drain {r.drain_time_s:.1f} s; {shown} migrations (grey queued, green "
                     "pre-copy, blue downtime, red downtime over the objective)", fontsize=9)
    axes[-1, 0].set_xlabel("simulated seconds since the drain began")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_utilisation(plt: Any, results: Sequence[PolicyResult], path: Path) -> Path:
    fig, axes = plt.subplots(3, 1, figsize=(11, 8), sharex=True)
    for r in results:
        s = r.series
        t = np.array(s.get("t", []))
        if not len(t):
            continue
        axes[0].step(t, s["in_flight"], where="post", label=r.policy)
        axes[1].step(t, np.array(s["throughput"]) * 8 / 1e9, where="post", label=r.policy)
        axes[2].step(t, np.array(s["uplink_max"]) * 100, where="post", label=f"{r.policy}: busiest rack uplink")
        if max(s["spine"], default=0) > 0:
            axes[2].step(t, np.array(s["spine"]) * 100, where="post", linestyle="--", label=f"{r.policy}: spine")
    axes[0].set_ylabel("migrations in flight")
    axes[1].set_ylabel("migration traffic (Gbit/s)")
    axes[2].set_ylabel("utilisation (%)")
    axes[2].set_xlabel("simulated seconds since the drain began")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
