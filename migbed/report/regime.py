"""Regime maps of a sweep: heatmaps per policy, the legacy penalty, the ACK's cost, the model's
regime boundary over the measured cells, the model's error per cell; HTML + PNGs + CSV.

Reads a sweep folder (sweep.json, predictions.json, runs.jsonl; migbed/experiments/sweep.py)
and writes regime.html, regime-*.png, runs.csv and cells.csv into it. A cell shows the
measured median of its runs and, below it in brackets, the model's prediction; cells not
measured (``--predict``) show the prediction alone. The thick line separates cells where the
model says legacy leaves device setup inside the downtime from cells where pre-copy absorbs it,
and from cells where legacy's data never fits and a cap ends pre-copy ("capped"); a value
whose stop a cap forced is marked "cap".
"""

from __future__ import annotations

import csv
import html
import itertools
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.patheffects as pe
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from migbed.experiments.sweep import PREDICTIONS_FILE, FinishedRun, SweepSpec, read_runs, read_spec
from migbed.measure.record import CSV_FIELDS
from migbed.report.report import _img

PAGE = "regime.html"
# Readable on any colour of the map: white text with a dark outline, a cyan boundary.
_TEXT_FX = [pe.withStroke(linewidth=2.5, foreground="black")]
_LINE_FX = [pe.Stroke(linewidth=5, foreground="black"), pe.Normal()]
BOUNDARY_COLOR = "#00e5ff"
# metric -> (record field, prediction field, label)
METRICS = {
    "guest": ("guest_downtime_ms", "guest_downtime_s", "guest-visible downtime (ms)"),
    "qemu": ("downtime_ms", "downtime_s", "QEMU-reported downtime (ms)"),
    "total": ("total_time_ms", "total_time_s", "total time (ms)"),
}


@dataclass
class CellView:
    """One cell: its axis values, measured medians and predictions per policy (ms)."""

    index: int
    values: dict[str, Any]
    regime: str
    measured: dict[str, dict[str, float]] = field(default_factory=dict)  # policy -> metric -> ms
    predicted: dict[str, dict[str, float]] = field(default_factory=dict)
    runs: dict[str, int] = field(default_factory=dict)  # policy -> completed runs
    # policy -> the cap that forced its stop ("" when the policy switched): the measured
    # runs' (any of them) when measured, else the prediction's
    capped: dict[str, str] = field(default_factory=dict)

    def value(self, policy: str, metric: str) -> tuple[float | None, float | None]:
        m = self.measured.get(policy, {}).get(metric)
        p = self.predicted.get(policy, {}).get(metric)
        return m, p

    def difference(self, a: str, b: str, metric: str, source: str) -> float | None:
        table = self.measured if source == "measured" else self.predicted
        x, y = table.get(a, {}).get(metric), table.get(b, {}).get(metric)
        return None if x is None or y is None else x - y


def cell_views(spec: SweepSpec, predictions: list[dict[str, Any]], runs: list[FinishedRun]) -> list[CellView]:
    views = []
    for p in predictions:
        pr = p["prediction"]
        v = CellView(p["cell"], p["values"], pr["regime"])
        for pol, o in pr["outcomes"].items():
            if o["outcome"] == "completed":
                v.predicted[pol] = {m: float(o[f]) * 1e3 for m, (_, f, _) in METRICS.items() if o[f] is not None}
                v.capped[pol] = o.get("forced_by_cap") or ""
        views.append(v)
    by_cell: dict[tuple[int, str], list[FinishedRun]] = {}
    for r in runs:
        by_cell.setdefault((r.cell, r.policy), []).append(r)
    for (ci, pol), rs in by_cell.items():
        done = [r.record for r in rs if r.record.outcome == "completed"]
        if ci < len(views):
            views[ci].runs[pol] = len(done)
            if done:
                views[ci].measured[pol] = {m: statistics.median(float(getattr(r, f)) for r in done)
                                           for m, (f, _, _) in METRICS.items()}
                views[ci].capped[pol] = next((r.forced_by_cap for r in done if r.forced_by_cap), "")
    return views


# ---------------------------------------------------------------- heatmaps


def _grid(spec: SweepSpec, views: list[CellView], fixed: dict[str, Any]) -> list[list[CellView | None]]:
    """Rows = second axis (or one row), columns = first axis; extra axes fixed."""
    xs = spec.axes[0].values
    ys = spec.axes[1].values if len(spec.axes) > 1 else (None,)
    grid: list[list[CellView | None]] = [[None] * len(xs) for _ in ys]
    for v in views:
        if any(v.values.get(k) != val for k, val in fixed.items()):
            continue
        x = xs.index(v.values[spec.axes[0].key])
        y = ys.index(v.values[spec.axes[1].key]) if len(spec.axes) > 1 else 0
        grid[y][x] = v
    return grid


def _boundary(ax: Any, grid: list[list[CellView | None]]) -> None:
    """Thick lines between neighbouring cells of different predicted regimes."""
    def reg(c: CellView | None) -> str:
        return c.regime if c is not None else ""

    for y, row in enumerate(grid):
        for x, c in enumerate(row):
            if x + 1 < len(row) and reg(c) != reg(row[x + 1]):
                ax.plot([x + 0.5, x + 0.5], [y - 0.5, y + 0.5], color=BOUNDARY_COLOR, lw=3,
                        path_effects=_LINE_FX)
            if y + 1 < len(grid) and reg(c) != reg(grid[y + 1][x]):
                ax.plot([x - 0.5, x + 0.5], [y + 0.5, y + 0.5], color=BOUNDARY_COLOR, lw=3,
                        path_effects=_LINE_FX)


def _heatmap(ax: Any, spec: SweepSpec, grid: list[list[CellView | None]], cell_value: Any,
             title: str, cmap: str, vrange: tuple[float, float] | None = None,
             mark: Any = None) -> None:
    """`mark(cell)`: a word under the value ("cap": a cap forced the stop), or ""."""
    nan = float("nan")
    shown = [[nan] * len(row) for row in grid]
    for y, row in enumerate(grid):
        for x, c in enumerate(row):
            if c is None:
                continue
            m, p = cell_value(c)
            main = m if m is not None else p
            if main is not None:
                shown[y][x] = main
            text = "-" if main is None else f"{main:.0f}"
            if m is not None and p is not None:
                text += f"\n({p:.0f})"
            word = mark(c) if mark is not None else ""
            if word and main is not None:
                text += f"\n{word}"
            ax.text(x, y, text, ha="center", va="center", fontsize=8, color="white",
                    path_effects=_TEXT_FX)
    vmin, vmax = vrange if vrange else (None, None)
    im = ax.imshow(shown, cmap=cmap, origin="lower", aspect="auto", vmin=vmin, vmax=vmax)
    ax.set_xlim(-0.5, len(grid[0]) - 0.5)
    ax.set_ylim(-0.5, len(grid) - 0.5)
    ax.figure.colorbar(im, ax=ax, fraction=0.046)
    _boundary(ax, grid)
    ax.set_xticks(range(len(spec.axes[0].values)), [str(v) for v in spec.axes[0].values],
                  rotation=30, fontsize=8)
    ax.set_xlabel(spec.axes[0].key)
    if len(spec.axes) > 1:
        ax.set_yticks(range(len(spec.axes[1].values)), [str(v) for v in spec.axes[1].values], fontsize=8)
        ax.set_ylabel(spec.axes[1].key)
    else:
        ax.set_yticks([])
    ax.set_title(title, fontsize=10)


def _figure(n: int) -> tuple[Figure, list[Any]]:
    cols = min(n, 2)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, 4.2 * rows), squeeze=False)
    flat = [a for row in axes for a in row]
    for extra in flat[n:]:
        extra.set_visible(False)
    return fig, flat[:n]


def plot_downtime(spec: SweepSpec, views: list[CellView], metric: str, fixed: dict[str, Any],
                  path: Path) -> None:
    grid = _grid(spec, views, fixed)
    fig, axes = _figure(len(spec.policies))
    # One colour scale for every policy: the panels compare at a glance.
    seen = [x for c in views for pol in spec.policies for x in c.value(pol, metric) if x is not None]
    vrange = (min(seen), max(seen)) if seen else None
    for ax, pol in zip(axes, spec.policies, strict=True):
        _heatmap(ax, spec, grid, lambda c, pol=pol: c.value(pol, metric), pol, "viridis", vrange,
                 lambda c, pol=pol: "cap" if c.capped.get(pol) else "")
    fig.suptitle(f"{METRICS[metric][2]}: {_what(views)}; cyan line: the model's "
                 f"regime boundary{_fixed_label(fixed)}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_penalty(spec: SweepSpec, views: list[CellView], fixed: dict[str, Any], path: Path) -> None:
    grid = _grid(spec, views, fixed)
    fig, axes = _figure(3)

    def diff(a: str, b: str, metric: str) -> Any:
        return lambda c: (c.difference(a, b, metric, "measured"), c.difference(a, b, metric, "predicted"))

    _heatmap(axes[0], spec, grid, diff("legacy", "switchover-ack", "guest"),
             "legacy penalty: guest downtime, legacy - switchover-ack (ms)", "magma")
    _heatmap(axes[1], spec, grid, diff("legacy", "switchover-ack", "qemu"),
             "legacy penalty: QEMU downtime, legacy - switchover-ack (ms)", "magma")
    _heatmap(axes[2], spec, grid, diff("switchover-ack", "legacy", "total"),
             "the ACK's cost: total time, switchover-ack - legacy (ms)", "cividis")
    fig.suptitle(f"{_what(views)}; cyan line: the model's regime boundary{_fixed_label(fixed)}",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _what(views: list[CellView]) -> str:
    if any(v.measured for v in views):
        return "measured median (predicted)"
    return "predicted by the model (no runs)"


def _fixed_label(fixed: dict[str, Any]) -> str:
    return "" if not fixed else "; " + ", ".join(f"{k}={v}" for k, v in fixed.items())


def facets(spec: SweepSpec, limit: int = 12) -> list[dict[str, Any]]:
    """One map per combination of the axes beyond the first two."""
    extra = spec.axes[2:]
    combos = itertools.product(*(a.values for a in extra))
    return [dict(zip((a.key for a in extra), c, strict=True)) for c in itertools.islice(combos, limit)]


# ---------------------------------------------------------------- the model's error

GOAL_SHARE, GOAL_MS = 0.10, 20.0  # issue 16: within 10 % or 20 ms, whichever is larger


@dataclass(frozen=True)
class Accuracy:
    policy: str
    cells: int  # cells with a measured median and a completed prediction
    median_abs_ms: float
    median_abs_share: float  # of the measured value
    within_goal: int  # cells with |error| <= max(GOAL_MS, GOAL_SHARE x measured)
    worst_label: str
    worst_predicted_ms: float
    worst_measured_ms: float

    @property
    def meets_goal(self) -> bool:
        return self.cells > 0 and (self.median_abs_ms <= GOAL_MS or self.median_abs_share <= GOAL_SHARE)


def accuracy(views: list[CellView], policy: str, metric: str = "guest") -> Accuracy:
    """Predicted against measured (cell medians) for one policy."""
    errs = []
    for v in views:
        m, p = v.value(policy, metric)
        if m is not None and p is not None:
            label = ", ".join(f"{k.rsplit('.', 1)[-1]}={x}" for k, x in v.values.items())
            errs.append((abs(p - m), m, p, label))
    if not errs:
        nan = float("nan")
        return Accuracy(policy, 0, nan, nan, 0, "", nan, nan)
    worst = max(errs)
    return Accuracy(
        policy, len(errs), statistics.median(e[0] for e in errs),
        statistics.median(e[0] / e[1] if e[1] > 0 else float("inf") for e in errs),
        sum(e[0] <= max(GOAL_MS, GOAL_SHARE * e[1]) for e in errs), worst[3], worst[2], worst[1])


# ---------------------------------------------------------------- CSV and HTML


def write_runs_csv(spec: SweepSpec, views: list[CellView], runs: list[FinishedRun], path: Path) -> None:
    """Every run, with its cell's axis values and the model's prediction beside it."""
    keys = [a.key for a in spec.axes]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["cell", *keys, *CSV_FIELDS, "predicted_guest_downtime_ms",
                    "predicted_downtime_ms", "predicted_total_time_ms"])
        for r in sorted(runs, key=lambda r: (r.cell, r.repeat, r.policy)):
            v = views[r.cell]
            d = r.record.to_dict()
            pred = v.predicted.get(r.policy, {})
            w.writerow([r.cell, *(v.values[k] for k in keys), *(d[f] for f in CSV_FIELDS),
                        *(_round(pred.get(m)) for m in ("guest", "qemu", "total"))])


def write_cells_csv(spec: SweepSpec, views: list[CellView], path: Path) -> None:
    """Per cell and policy: measured median and predicted (ms), and the error."""
    keys = [a.key for a in spec.axes]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["cell", *keys, "regime", "policy", "runs", *(f"{s}_{m}_ms" for m in METRICS
                    for s in ("measured", "predicted")), "guest_error_ms"])
        for v in views:
            for pol in spec.policies:
                row: list[Any] = [v.index, *(v.values[k] for k in keys), v.regime, pol, v.runs.get(pol, 0)]
                for m in METRICS:
                    mm, pp = v.value(pol, m)
                    row += [_round(mm), _round(pp)]
                mg, pg = v.value(pol, "guest")
                row.append(_round(None if mg is None or pg is None else pg - mg))
                w.writerow(row)


def _round(x: float | None) -> str:
    return "" if x is None else f"{x:.1f}"


def _cell_rows(spec: SweepSpec, views: list[CellView]) -> list[list[str]]:
    rows = []
    for v in views:
        for pol in spec.policies:
            mg, pg = v.value(pol, "guest")
            mq, pq = v.value(pol, "qemu")
            err = "" if mg is None or pg is None else f"{pg - mg:+.0f}"
            rows.append([str(v.index + 1), html.escape(", ".join(f"{k}={x}" for k, x in v.values.items())),
                         v.regime, html.escape(pol), str(v.runs.get(pol, 0)), _round(mg), _round(pg), err,
                         _round(mq), _round(pq)])
    return rows


def _accuracy_table(spec: SweepSpec, views: list[CellView]) -> str:
    rows = []
    for pol in spec.policies:
        a = accuracy(views, pol)
        if a.cells:
            worst = f"{a.worst_label} ({a.worst_predicted_ms:.0f} / {a.worst_measured_ms:.0f})"
            rows.append(f"<tr><td>{html.escape(pol)}</td><td>{a.cells}</td><td>{a.median_abs_ms:.0f}</td>"
                        f"<td>{a.median_abs_share:.0%}</td><td>{a.within_goal}/{a.cells}</td>"
                        f"<td>{html.escape(worst)}</td></tr>")
    if not rows:
        return ""
    head = ("<tr><th>policy</th><th>cells</th><th>median |error| ms</th><th>median |error| %</th>"
            f"<th>within max({GOAL_MS:.0f} ms, {GOAL_SHARE:.0%})</th>"
            "<th>worst cell (predicted / measured ms)</th></tr>")
    return "<h2>the model's error (guest-visible downtime)</h2><table>" + head + "".join(rows) + "</table>"


def _params_text(params: dict[str, Any]) -> str:
    def show(k: str, v: Any) -> str:
        if k in ("wire_rate", "precopy_rate", "stream_buffer") and isinstance(v, int | float):
            return f"{k}={v / 1e6:.0f} MB{'' if k == 'stream_buffer' else '/s'}"
        return f"{k}={v}"
    return ", ".join(show(k, v) for k, v in params.items())


def render_page(spec: SweepSpec, extra: dict[str, Any], params: dict[str, Any],
                images: list[tuple[str, Path]], views: list[CellView]) -> str:
    head = ["cell", "values", "predicted regime", "policy", "runs", "guest ms measured",
            "guest ms predicted", "error ms", "QEMU ms measured", "QEMU ms predicted"]
    th = "".join(f"<th>{h}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in _cell_rows(spec, views))
    axes = "; ".join(f"{html.escape(a.key)} = {html.escape(', '.join(map(str, a.values)))}" for a in spec.axes)
    mode = "predicted only" if extra.get("predict_only") else (
        f"measured: {spec.repeat} run(s) per cell and policy, "
        + ("two local processes (unshaped loopback)" if spec.local else f"source {extra.get('source')}"))
    parts = [
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>sweep {html.escape(spec.name)}</title>",
        "<style>body{font-family:sans-serif;max-width:1300px;margin:1em auto}"
        "td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px}table{border-collapse:collapse}"
        "img{max-width:100%}</style></head><body>",
        f"<h1>sweep {html.escape(spec.name)} ({html.escape(spec.sweep_id)})</h1>",
        f"<p>{html.escape(spec.description)}</p>",
        f"<p>Axes: {axes}. Policies: {html.escape(', '.join(spec.policies))}. {html.escape(mode)}.</p>",
        "<p>Inputs of the model beside the scenario: "
        + html.escape(_params_text(params)) + ". Each heatmap cell: the measured median, and the "
        "model's prediction in brackets. The cyan line is the model's regime boundary between "
        "cells where legacy leaves device setup inside the downtime (in-downtime), where "
        "pre-copy absorbs it (absorbed), and where legacy's data never fits the threshold and "
        "a cap ends pre-copy (capped: real QEMU, with no such cap, would iterate on). \"cap\" "
        "under a value: a cap forced that policy's stop.</p>",
    ]
    for title, path in images:
        parts += [f"<h2>{html.escape(title)}</h2>", _img(path, title)]
    parts += [_accuracy_table(spec, views), "<h2>cells: measured and predicted</h2>",
              f"<table><tr>{th}</tr>{trs}</table>", "<pre>" + html.escape(spec.base_text) + "</pre>",
              "</body></html>"]
    return "\n".join(parts)


def write_regime_report(out: Path) -> Path:
    spec, extra = read_spec(out)
    pred_doc = json.loads((out / PREDICTIONS_FILE).read_text())
    runs = read_runs(out)
    views = cell_views(spec, pred_doc["cells"], runs)
    images: list[tuple[str, Path]] = []
    for i, fixed in enumerate(facets(spec)):
        suffix = f"-{i + 1}" if fixed else ""
        for metric in ("guest", "qemu"):
            path = out / f"regime-{metric}{suffix}.png"
            plot_downtime(spec, views, metric, fixed, path)
            images.append((f"{METRICS[metric][2]}{_fixed_label(fixed)}", path))
        if {"legacy", "switchover-ack"} <= set(spec.policies) or extra.get("predict_only"):
            path = out / f"regime-penalty{suffix}.png"
            plot_penalty(spec, views, fixed, path)
            images.append((f"legacy penalty and the ACK's cost{_fixed_label(fixed)}", path))
    write_runs_csv(spec, views, runs, out / "runs.csv")
    write_cells_csv(spec, views, out / "cells.csv")
    page = out / PAGE
    page.write_text(render_page(spec, extra, pred_doc.get("params", {}), images, views))
    return page
