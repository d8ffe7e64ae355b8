"""PNG plots and one self-contained HTML page from DIR/results.json (`migbed report DIR`).

Writes into DIR:
  downtime.png                 downtime per policy (guest-visible and QEMU-reported), spread
                               across repeats, one panel per scenario
  timeline.png                 one run per policy: remaining bytes, ACK, stop, resume
                               (timeline-<scenario>.png per scenario when there are several)
  report.html                  both plots embedded (no external files), a summary per policy
                               and every run

`migbed run` calls :func:`write_report` when it finishes; the report needs nothing but the
results folder, so it can be re-made any time (or elsewhere) from a copied results.json.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import re
from collections.abc import Sequence
from pathlib import Path

from migbed.measure.record import RunRecord, load_journal, load_results
from migbed.report.plot import (
    ordered_policies,
    ordered_scenarios,
    plot_downtime,
    plot_timeline,
)
from migbed.report.stats import SUMMARY, format_spread
from migbed.report.summary import dilation_note

MIB = float(1 << 20)
REPORT_NAME = "report.html"
DOWNTIME_PNG = "downtime.png"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "scenario"


def timeline_name(scenario: str, several: bool) -> str:
    return f"timeline-{_slug(scenario)}.png" if several else "timeline.png"


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _stats(values: Sequence[float]) -> str:
    return html.escape(format_spread(values))


def summary_rows(records: Sequence[RunRecord]) -> list[list[str]]:
    rows = []
    for scenario in ordered_scenarios(records):
        recs = [r for r in records if r.scenario == scenario]
        for policy in ordered_policies(recs):
            runs = [r for r in recs if r.policy == policy]
            done = [r for r in runs if r.outcome == "completed"]
            rows.append(
                [
                    html.escape(scenario),
                    html.escape(policy),
                    f"{len(done)}/{len(runs)}",
                    _stats([r.guest_downtime_ms for r in done]),
                    _stats([r.downtime_ms for r in done]),
                    _stats([r.switchover_ack_wait_ms for r in done]),
                    _stats([float(r.dirty_sync_count) for r in done]),
                    _stats([r.total_time_ms for r in done]),
                    format_spread([float(r.precopy_bytes) for r in done], MIB, 1),
                    format_spread([float(r.downtime_bytes) for r in done], MIB, 1),
                    str(sum(1 for r in done if r.forced_by_cap)),
                ]
            )
    return rows


SUMMARY_HEAD = [
    "scenario",
    "policy",
    "completed",
    "guest-visible downtime (ms)",
    "QEMU-reported downtime (ms)",
    "ACK wait (ms)",
    "iterations",
    "total time (ms)",
    "pre-copy MiB",
    "downtime MiB",
    "forced by cap",
]
RUN_HEAD = [
    "run",
    "scenario",
    "policy",
    "repeat",
    "outcome",
    "verified",
    "guest-visible (ms)",
    "± (ms)",
    "QEMU (ms)",
    "expected (ms)",
    "ACK wait (ms)",
    "iterations",
    "total (ms)",
    "time dilation",
    "decision",
]


def run_rows(records: Sequence[RunRecord]) -> list[list[str]]:
    rows = []
    for r in records:
        why = r.decision_reason + (f" [forced: {r.forced_by_cap}]" if r.forced_by_cap else "")
        if r.error:
            why = f"{why} error: {r.error}".strip()
        rows.append(
            [
                html.escape(r.run_id),
                html.escape(r.scenario),
                html.escape(r.policy),
                str(r.repeat),
                html.escape(r.outcome),
                "yes" if r.verified else "no",
                f"{r.guest_downtime_ms:.1f}",
                f"{r.guest_downtime_uncertainty_ms:.1f}",
                f"{r.downtime_ms:.1f}",
                f"{r.expected_downtime_ms:.1f}",
                f"{r.switchover_ack_wait_ms:.0f}",
                str(r.dirty_sync_count),
                f"{r.total_time_ms:.0f}",
                f"{r.time_dilation or 1:g}",
                html.escape(why),
            ]
        )
    return rows


def _table(head: list[str], rows: list[list[str]], css: str = "") -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "\n".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    cls = f' class="{css}"' if css else ""
    return f"<table{cls}>\n<thead><tr>{th}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; }
img { max-width: 100%; border: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85em; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th { background: #f2f2f2; } td:nth-child(-n+3) { text-align: left; }
table.runs td:last-child { text-align: left; max-width: 28em; }
small { color: #666; } .note { color: #555; font-size: 0.9em; }
"""


def render_html(records: Sequence[RunRecord], images: list[tuple[str, Path]], title: str) -> str:
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="note">{len(records)} run(s); scenarios: '
        f"{html.escape(', '.join(ordered_scenarios(records)))}; policies: "
        f"{html.escape(', '.join(ordered_policies(records)))}. Generated "
        f"{dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')} from results.json.</p>",
        *([f'<p class="note"><b>{html.escape(dilation_note(list(records)))}</b></p>']
          if dilation_note(list(records)) else []),
        "<h2>Summary per policy</h2>",
        f'<p class="note">Each cell: {SUMMARY} (the repeats of that scenario and policy).</p>',
        _table(SUMMARY_HEAD, summary_rows(records)),
    ]
    for heading, path in images:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        parts.append(_img(path, heading))
    parts += [
        "<h2>Definitions</h2>",
        '<ul class="note">',
        "<li><b>Guest-visible downtime</b>: last vCPU tick on the source to the first on the "
        "target. It holds the target's final load and resume, including device setup left "
        "over when the source stopped.</li>",
        "<li><b>QEMU-reported downtime</b>: source stop to completion on the source (QEMU's "
        "<code>downtime</code>); it does not see the destination's load time.</li>",
        "<li><b>ACK wait</b>: from pending first below the threshold to the destination's SWITCHOVER_ACK.</li>",
        "<li><b>Iterations</b>: dirty-bitmap syncs (QEMU <code>dirty-sync-count</code>).</li>",
        "</ul>",
        "<h2>Every run</h2>",
        _table(RUN_HEAD, run_rows(records), "runs"),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def write_report(results_dir: Path) -> Path:
    """Write the plots and report.html into ``results_dir``; return the page's path."""
    results_dir = Path(results_dir)
    source = results_dir / "results.json"
    journal = results_dir / "results.jsonl"
    if source.exists():
        records = load_results(str(source))
    elif journal.exists():  # a run that was killed before it wrote results.json
        records = load_journal(str(journal))
    else:
        raise FileNotFoundError(f"{source}: no results.json (or results.jsonl) in {results_dir}")
    if not records:
        raise ValueError(f"{source} holds no runs")
    images: list[tuple[str, Path]] = [
        (
            "Downtime per policy",
            plot_downtime(records, results_dir / DOWNTIME_PNG),
        )
    ]
    scenarios = ordered_scenarios(records)
    for scenario in scenarios:
        name = timeline_name(scenario, len(scenarios) > 1)
        images.append(
            (
                f"Timeline of one run per policy ({scenario}: the run with the median guest-visible downtime)",
                plot_timeline(records, results_dir / name, scenario),
            )
        )
    page = results_dir / REPORT_NAME
    page.write_text(render_html(records, images, f"migbed report: {results_dir.name}"))
    return page
