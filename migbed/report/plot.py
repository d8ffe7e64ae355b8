"""Plots of run records (matplotlib, Agg backend: no display needed).

- :func:`plot_downtime`: guest-visible and QEMU-reported downtime per policy, every repeat as
  a dot, the median as a bar, min..max as a whisker (report.stats, as in every table); one
  panel per scenario.
- :func:`plot_timeline`: one run per policy: remaining bytes over time with the decision,
  switchover ACK, stop, completion and resume marked, the guest-visible downtime shaded.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from statistics import median
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from migbed.core.policy import POLICIES
from migbed.measure.record import RunRecord
from migbed.report.stats import spread

GUEST_COLOR = "#d62728"
QEMU_COLOR = "#1f77b4"
# Timeline marks: event name -> (label, colour, line style)
EVENT_STYLE: dict[str, tuple[str, str, str]] = {
    "decision": ("decision", "#b8860b", ":"),
    "switchover-ack": ("switchover ACK", "#2ca02c", "-"),
    "stop": ("source stop", "#d62728", "-"),
    "completed": ("completed (source)", "#ff7f0e", "--"),
    "resumed": ("resumed (target)", "#9467bd", "-"),
}
POLICY_ORDER = POLICIES  # the registry's order: legacy first, then each refinement
MiB = float(1 << 20)


def policy_key(policy: str) -> tuple[int, str]:
    return (POLICY_ORDER.index(policy) if policy in POLICY_ORDER else len(POLICY_ORDER), policy)


def ordered_policies(records: Sequence[RunRecord]) -> list[str]:
    return sorted({r.policy for r in records}, key=policy_key)


def ordered_scenarios(records: Sequence[RunRecord]) -> list[str]:
    seen: dict[str, None] = {}
    for r in records:
        seen.setdefault(r.scenario, None)
    return list(seen)


def completed(records: Sequence[RunRecord]) -> list[RunRecord]:
    return [r for r in records if r.outcome == "completed"]


def representative_run(records: Sequence[RunRecord]) -> RunRecord | None:
    """The completed run whose guest-visible downtime is the median (else any run)."""
    done = completed(records) or list(records)
    if not done:
        return None
    mid = median(r.guest_downtime_ms for r in done)
    return min(done, key=lambda r: (abs(r.guest_downtime_ms - mid), r.repeat))


# The two bars of each policy: (record field, colour, legend label).
DOWNTIME_SERIES: tuple[tuple[str, str, str], ...] = (
    ("guest_downtime_ms", GUEST_COLOR, "guest-visible downtime"),
    ("downtime_ms", QEMU_COLOR, "QEMU-reported downtime"),
)
BAR_WIDTH = 0.36
DOWNTIME_NOTE = (
    "bar: median; whisker: min..max; dots: each repeat (completed runs); the label is the median.\n"
    "guest-visible: last vCPU tick on the source to the first on the target; "
    "QEMU-reported: source stop to completion."
)


def _virtual(records: Sequence[RunRecord]) -> str:
    """The axis label's note for dilated runs: their times are virtual."""
    ks = sorted({r.time_dilation for r in records if r.time_dilation not in (0.0, 1.0)})
    return f", virtual (time-dilation {', '.join(f'{k:g}' for k in ks)})" if ks else ""


def plot_downtime(records: Sequence[RunRecord], path: Path) -> Path:
    """Downtime per policy (guest-visible vs QEMU-reported) with the spread across repeats."""
    scenarios = ordered_scenarios(records)
    fig: Figure = plt.figure(figsize=(max(6.5, 3.2 * len(ordered_policies(records))), 4.6))
    fig.set_figwidth(max(fig.get_figwidth(), 5.0 * len(scenarios)))
    axes = fig.subplots(1, max(1, len(scenarios)), squeeze=False)[0]
    for ax, scenario in zip(axes, scenarios, strict=False):
        _downtime_panel(ax, scenario, [r for r in records if r.scenario == scenario])
    fig.text(0.01, 0.01, DOWNTIME_NOTE, fontsize=7, color="#555555")
    return _save(fig, path, rect=(0, 0.07, 1, 1))


def _downtime_panel(ax: Any, scenario: str, records: Sequence[RunRecord]) -> None:
    """One scenario's panel: a pair of bars per policy from its completed runs."""
    recs = completed(records)
    policies = ordered_policies(recs) or ordered_policies(records)
    by: dict[str, list[RunRecord]] = defaultdict(list)
    for r in recs:
        by[r.policy].append(r)
    for i, policy in enumerate(policies):
        for k, (field, color, label) in enumerate(DOWNTIME_SERIES):
            values = [getattr(r, field) for r in by.get(policy, [])]
            _spread_bar(ax, i + (k - 0.5) * BAR_WIDTH, values, color, label if i == 0 else None)
    ax.set_xticks(range(len(policies)))
    ax.set_xticklabels(policies)
    ax.set_ylabel("downtime (ms): median, min..max" + _virtual(records))
    ax.set_ylim(bottom=0)
    ax.grid(axis="y", alpha=0.3)
    counts = sorted({len(by.get(p, [])) for p in policies})
    n_runs = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    ax.set_title(f"{scenario}: downtime per policy ({n_runs} completed runs each)", fontsize=11)
    ax.legend(loc="upper right", fontsize=8, frameon=False)


def _spread_bar(ax: Any, x: float, values: Sequence[float], color: str, label: str | None) -> None:
    """A bar at the median, a min..max whisker, every value as a dot, the median written on top;
    nothing without values."""
    sp = spread(values)
    if sp is None:
        return
    m = sp.median
    ax.bar(x, m, BAR_WIDTH * 0.92, color=color, alpha=0.35, edgecolor=color, label=label)
    ax.errorbar(x, m, yerr=[[m - sp.low], [sp.high - m]], color=color, capsize=5, lw=1.4)
    n = len(values)
    xs = [x + (j - (n - 1) / 2) * (BAR_WIDTH * 0.5 / max(1, n)) for j in range(n)]
    ax.scatter(xs, values, s=18, color=color, zorder=3, edgecolor="white", lw=0.5)
    ax.annotate(f"{m:.0f}", (x, sp.high), textcoords="offset points", xytext=(0, 4), ha="center",
                fontsize=8, color=color)


def _save(fig: Figure, path: Path, rect: tuple[float, float, float, float]) -> Path:
    fig.tight_layout(rect=rect)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_timeline(records: Sequence[RunRecord], path: Path, scenario: str | None = None) -> Path:
    """One representative run per policy: remaining bytes over time with events marked."""
    recs = [r for r in records if scenario is None or r.scenario == scenario]
    policies = ordered_policies(recs)
    runs = [(p, representative_run([r for r in recs if r.policy == p])) for p in policies]
    fig: Figure = plt.figure(figsize=(10, 2.6 * max(1, len(runs)) + 0.6))
    axes = fig.subplots(max(1, len(runs)), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (policy, run) in zip(axes, runs, strict=False):
        if run is not None:
            _timeline_panel(ax, policy, run)
    _figure_legend(fig, axes)
    _fit_time_axis(axes[-1], [r for _, r in runs if r is not None])
    axes[-1].set_xlabel("time since the migration started (ms)" + _virtual(recs))
    top = 1 - 0.55 / fig.get_figheight()
    return _save(fig, path, rect=(0, 0, 1, top))


def _timeline_panel(ax: Any, policy: str, run: RunRecord) -> None:
    """One run: what is left to send, the threshold, the downtime shaded, the events."""
    _plot_remaining(ax, run)
    thr = [s.threshold_bytes / MiB for s in run.timeline if s.phase == "precopy"]
    if thr:
        ax.axhline(median(thr), color="#7f7f7f", lw=0.9, ls="--", label="threshold (median)")
    stop, resumed = run.event_time("stop"), run.event_time("resumed")
    if stop is not None:
        end = resumed if resumed is not None else stop + run.guest_downtime_ms
        ax.axvspan(stop, end, color=GUEST_COLOR, alpha=0.10, lw=0)
    _mark_events(ax, run)
    ax.set_ylabel("MiB")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.set_title(
        f"{policy} ({run.scenario}, repeat {run.repeat}): guest-visible downtime "
        f"{run.guest_downtime_ms:.0f} ms, QEMU-reported {run.downtime_ms:.0f} ms, "
        f"ACK wait {run.switchover_ack_wait_ms:.0f} ms",
        fontsize=9.5,
        loc="left",
    )


def _remaining_series(run: RunRecord) -> tuple[list[float], list[float], list[float]]:
    """(t ms, RAM MiB, device initial + dirty MiB) left to send, from the run's timeline."""
    t = [s.t_ms for s in run.timeline]
    ram = [s.ram_remaining_bytes / MiB for s in run.timeline]
    dev = [sum(d.initial_bytes + d.dirty_bytes for d in s.devices) / MiB for s in run.timeline]
    done = run.event_time("completed")
    if t and done is not None and done > t[-1] and run.outcome == "completed":
        # a sample holds until the next; at completion nothing is left to send
        t, ram, dev = [*t, done], [*ram, 0.0], [*dev, 0.0]
    return t, ram, dev


def _plot_remaining(ax: Any, run: RunRecord) -> None:
    t, ram, dev = _remaining_series(run)
    marker = "o" if len(t) < 40 else None
    _steps(ax, t, ram, "#1f77b4", 1.6, "RAM remaining", marker)
    if any(dev):
        _steps(ax, t, dev, "#8c564b", 1.4, "device initial + dirty", marker)


def _steps(ax: Any, t: list[float], values: list[float], color: str, lw: float, label: str,
           marker: str | None) -> None:
    ax.plot(t, values, color=color, lw=lw, label=label, drawstyle="steps-post", marker=marker, ms=3)


def _event_style(name: str) -> tuple[str, str, str] | None:
    """(label, colour, line style) of an event's mark; None: not marked."""
    if name.startswith("init-data-sent:"):  # one per device, one style
        return ("initial data sent", "#8c564b", ":")
    return EVENT_STYLE.get(name)


def _mark_events(ax: Any, run: RunRecord) -> None:
    for ev in run.events:
        style = _event_style(ev.name)
        if style is None:
            continue
        label, color, ls = style
        wide = ev.name == "switchover-ack"  # often just before the stop: keep it visible
        ax.axvline(
            ev.t_ms,
            color=color,
            ls=ls,
            lw=3.2 if wide else 1.3,
            alpha=0.8 if wide else 1.0,
            zorder=2 if wide else 3,
            label=label,
        )


def _figure_legend(fig: Figure, axes: Iterable[Any]) -> None:
    """One legend above the panels: each label once, the downtime shading last."""
    legend: dict[str, Any] = {}
    for ax in axes:
        handles, labels = ax.get_legend_handles_labels()
        for h, lab in zip(handles, labels, strict=False):
            legend.setdefault(lab, h)
    legend["guest-visible downtime"] = Patch(color=GUEST_COLOR, alpha=0.15)
    fig.legend(
        list(legend.values()),
        list(legend.keys()),
        loc="upper center",
        ncol=min(5, len(legend)),
        fontsize=8,
        frameon=False,
    )


def _fit_time_axis(ax: Any, runs: Sequence[RunRecord]) -> None:
    # axvline does not widen the x range: fit every run's samples and events explicitly
    ends = [max([0.0, *(s.t_ms for s in r.timeline), *(e.t_ms for e in r.events)]) for r in runs]
    if ends and max(ends) > 0:
        ax.set_xlim(0, max(ends) * 1.03)
