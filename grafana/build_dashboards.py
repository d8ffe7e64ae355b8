"""Build migbed's Grafana dashboards as code (grafana-foundation-sdk, pinned in requirements).

    python grafana/build_dashboards.py           # rewrite grafana/dashboards/*.json
    python grafana/build_dashboards.py --check   # exit 1 if the committed JSON is stale

The JSON files are committed so Grafana's file provider (grafana/provisioning/dashboards)
loads them as they are; tests check that they match this script, that the SDK parses them
back unchanged, and that every query returns data from a real Prometheus.

Every panel, query, variable and annotation names the datasource through the ``${datasource}``
variable (default: the provisioned ``migbed-prometheus``), so the dashboards also work when
imported into a Grafana whose Prometheus has another uid. The aggregates (means, quantiles,
bytes per migration) are Prometheus recording rules (prometheus/rules/migbed.yml): the panels
read the recorded series.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path

from grafana_foundation_sdk.builders import bargauge, dashboard, stat, statetimeline, timeseries
from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

HERE = Path(__file__).resolve().parent
OUT_DIR = HERE / "dashboards"

DATASOURCE_UID = "migbed-prometheus"  # the provisioned one (grafana/provisioning/datasources)
DS = common.DataSourceRef(type_val="prometheus", uid="${datasource}")
# The dashboard JSON schema of the Grafana that compose.yaml pins (grafana-oss 11.6.1): a
# newer schemaVersion than the server knows is refused or mis-migrated.
SCHEMA_VERSION = 41
COMPARISON_UID = "migbed-policy-comparison"
LIVE_UID = "migbed-live-migration"

# Label matchers shared by the panels ($scenario and $policy are dashboard variables).
SP = 'scenario=~"$scenario",policy=~"$policy"'

PanelBuilder = Builder[dm.Panel]


def q(expr: str, legend: str = "", *, ref: str = "A", instant: bool = False) -> Dataquery:
    query = Dataquery().expr(expr).ref_id(ref).datasource(DS)
    if legend:
        query = query.legend_format(legend)
    return query.instant().format(PromQueryFormat.TIME_SERIES) if instant else query.range()


def mean_by_policy(metric: str) -> str:
    """Mean per (scenario, policy) over every completed migration the exporter has seen (a
    recording rule of prometheus/rules/migbed.yml)."""
    return f"scenario_policy:{metric}:mean{{{SP}}}"


def quantile_by_policy(phi: float, metric: str) -> str:
    return f'scenario_policy:{metric}:quantile{{{SP},quantile="{phi}"}}'


def datasource_variable() -> dashboard.DatasourceVariable:
    return (
        dashboard.DatasourceVariable("datasource")
        .label("Data source")
        .type("prometheus")
        .current(dm.VariableOption(selected=True, text="Prometheus", value=DATASOURCE_UID))
    )


def variable(name: str, label: str, query: str, *, multi: bool) -> dashboard.QueryVariable:
    var = (
        dashboard.QueryVariable(name)
        .label(label)
        .datasource(DS)
        .query(query)
        .definition(query)
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
        .include_all(True)
        .all_value(".*")
    )
    if multi:
        var = var.multi(True)
    return var


def event_annotation(name: str, expr: str, color: str, title: str) -> dashboard.AnnotationQuery:
    """An annotation at the time a ``*_timestamp_seconds`` gauge holds (value used as time)."""
    return (
        dashboard.AnnotationQuery()
        .name(name)
        .datasource(DS)
        .enable(True)
        .icon_color(color)
        .expr(f"({expr}) * 1000")
        .step("1s")
        .use_value_for_time(True)
        .title_format(title)
        .text_format(title)
        .tag_keys("scenario,policy")
    )


def _bar(title: str, unit: str, *targets: Dataquery, w: int = 8, h: int = 8) -> PanelBuilder:
    panel = (
        bargauge.Panel()
        .title(title)
        .datasource(DS)
        .unit(unit)
        .min(0)
        .display_mode(common.BarGaugeDisplayMode.BASIC)
        .orientation(common.VizOrientation.HORIZONTAL)
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .span(w)
        .height(h)
    )
    for t in targets:
        panel = panel.with_target(t)
    return panel


def _spread_bar(what: str, metric: str) -> PanelBuilder:
    """p10 / p50 / p90 of `metric` per policy: how repeats of one figure spread."""
    targets = [q(quantile_by_policy(phi, metric), f"{{{{policy}}}} p{round(phi * 100)}", ref=ref, instant=True)
               for phi, ref in ((0.1, "A"), (0.5, "B"), (0.9, "C"))]
    return _bar(f"{what} spread across repeats (p10 / p50 / p90)", "s", *targets, w=12, h=10)


def _ts(
    title: str,
    unit: str,
    *targets: Dataquery,
    w: int = 12,
    h: int = 8,
    points: bool = False,
    step: bool = False,
    description: str = "",
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .datasource(DS)
        .unit(unit)
        .span(w)
        .height(h)
        .line_width(2)
        .fill_opacity(5)
        .legend(
            cb.VizLegendOptions()
            .show_legend(True)
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
        )
        .tooltip(cb.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI))
    )
    if description:
        panel = panel.description(description)
    if points:
        panel = panel.show_points(common.VisibilityMode.ALWAYS).point_size(6)
    if step:
        panel = panel.line_interpolation(common.LineInterpolation.STEP_AFTER)
    for t in targets:
        panel = panel.with_target(t)
    return panel


def _stat(title: str, unit: str, *targets: Dataquery, w: int = 6, h: int = 5) -> PanelBuilder:
    panel = (
        stat.Panel()
        .title(title)
        .datasource(DS)
        .unit(unit)
        .span(w)
        .height(h)
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )
    for t in targets:
        panel = panel.with_target(t)
    return panel


def _states(
    title: str, mapping: dict[str, tuple[str, str]], *targets: Dataquery, w: int = 12, h: int = 6
) -> PanelBuilder:
    panel = (
        statetimeline.Panel()
        .title(title)
        .datasource(DS)
        .unit("none")  # states: the value mappings name them
        .span(w)
        .height(h)
        .mappings(
            [
                dm.ValueMap(
                    options={
                        value: dm.ValueMappingResult(text=text, color=color, index=i)
                        for i, (value, (text, color)) in enumerate(mapping.items())
                    }
                )
            ]
        )
    )
    for t in targets:
        panel = panel.with_target(t)
    return panel


def _layout(board: dashboard.Dashboard, sections: Iterable[tuple[str, list[PanelBuilder]]]) -> dashboard.Dashboard:
    panel_id = 1
    for title, panels in sections:
        board = board.with_row(dashboard.Row(title).id(panel_id))
        panel_id += 1
        for p in panels:
            p.id(panel_id)  # type: ignore[attr-defined]
            panel_id += 1
            board = board.with_panel(p)
    return board


def _board(title: str, uid: str, description: str, tooltip: dm.DashboardCursorSync,
           since: str) -> dashboard.Dashboard:
    """A migbed dashboard up to its own variables: tags, refresh, time range, the datasource."""
    return (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["migbed", "migration"])
        .editable()
        .tooltip(tooltip)
        .refresh("5s")
        .time(since, "now")
        .timezone(common.TimeZoneBrowser)
        .with_variable(datasource_variable())
    )


def _link_to(title: str) -> dashboard.DashboardLink:
    """A link to the other migbed dashboard (by tag), keeping the variables and the time."""
    return (
        dashboard.DashboardLink(title)
        .type(dm.DashboardLinkType.DASHBOARDS)
        .tags(["migbed"])
        .as_dropdown(False)
        .include_vars(True)
        .keep_time(True)
    )


GUEST_DOWNTIME = "migbed_migration_guest_downtime_seconds"
QEMU_DOWNTIME = "migbed_migration_downtime_seconds"


def _comparison_board() -> dashboard.Dashboard:
    """The comparison dashboard up to its panels: one scenario, any policies, result marks."""
    return (
        _board(
            "migbed: switchover policy comparison",
            COMPARISON_UID,
            "Guest-visible and QEMU-reported downtime, ACK wait, iterations, total time and "
            "bytes per switchover policy, over every migration the source exporter has run "
            "(histograms and counters accumulate; results.json holds each run).",
            dm.DashboardCursorSync.CROSSHAIR,
            "now-30m",
        )
        .with_variable(
            # one scenario at a time: means across scenarios of different sizes mean nothing
            variable(
                "scenario",
                "Scenario",
                "label_values(migbed_migrations_total, scenario)",
                multi=False,
            ).include_all(False)
        )
        .with_variable(variable("policy", "Policy", "label_values(migbed_migrations_total, policy)", multi=True))
        .annotation(
            event_annotation(
                "Results",
                f"migbed_migration_last_timestamp_seconds{{{SP}}}",
                "blue",
                "result: {{policy}}",
            )
        )
        .link(_link_to("Live migration"))
    )


def _downtime_means() -> list[PanelBuilder]:
    """Mean downtime per policy: as the guest saw it, as QEMU reports it, and the difference."""
    return [
        _bar(
            "Guest-visible downtime, mean per policy",
            "s",
            q(mean_by_policy(GUEST_DOWNTIME), "{{policy}}", instant=True),
        ),
        _bar(
            "QEMU-reported downtime, mean per policy",
            "s",
            q(mean_by_policy(QEMU_DOWNTIME), "{{policy}}", instant=True),
        ),
        _bar(
            "Downtime QEMU does not report (guest-visible minus reported), mean",
            "s",
            q(mean_by_policy("migbed_migration_unreported_downtime_seconds"), "{{policy}}", instant=True),
        ),
    ]


def _downtime_panels() -> list[PanelBuilder]:
    """The first row: the means, their spread, where the downtime went, each run's result."""
    return [
        *_downtime_means(),
        _spread_bar("Guest-visible downtime", GUEST_DOWNTIME),
        _spread_bar("QEMU-reported downtime", QEMU_DOWNTIME),
        _bar(
            "Where guest-visible downtime went, mean per policy and part",
            "s",
            q(
                f"scenario_policy_part:migbed_migration_guest_downtime_part_seconds:mean{{{SP}}}",
                "{{policy}} {{part}}",
                instant=True,
            ),
            w=24,
            h=10,
        ),
        _ts(
            "Downtime of each run (latest result per policy)",
            "s",
            q(
                f"migbed_migration_last_guest_downtime_seconds{{{SP}}}",
                "{{policy}} guest-visible",
                ref="A",
            ),
            q(
                f"migbed_migration_last_downtime_seconds{{{SP}}}",
                "{{policy}} QEMU-reported",
                ref="B",
            ),
            w=24,
            points=True,
            step=True,
            description="Each step is one migration's result; the gauge keeps the "
            "latest result until the next run of the same scenario and policy.",
        ),
    ]


def _why_means() -> list[PanelBuilder]:
    """What each policy did to get there: ACK wait, iterations and total time, means."""
    return [
        _bar(
            "Switchover-ACK wait, mean per policy",
            "s",
            q(
                mean_by_policy("migbed_migration_switchover_ack_wait_seconds"),
                "{{policy}}",
                instant=True,
            ),
        ),
        _bar(
            "Iterations (dirty-bitmap syncs), mean per policy",
            "none",
            q(mean_by_policy("migbed_migration_iterations"), "{{policy}}", instant=True),
        ),
        _bar(
            "Total migration time, mean per policy",
            "s",
            q(
                mean_by_policy("migbed_migration_total_time_seconds"),
                "{{policy}}",
                instant=True,
            ),
        ),
    ]


def _why_panels() -> list[PanelBuilder]:
    """The second row: the means above, bytes by stage, device loads and outcomes."""
    return [
        *_why_means(),
        _bar(
            "Bytes per migration by stage (precopy: VM running, downtime: stopped)",
            "bytes",
            q(
                f"scenario_policy_stage:migbed_migration_transferred_bytes:per_migration{{{SP}}}",
                "{{policy}} {{stage}}",
                instant=True,
            ),
            w=12,
        ),
        _bar(
            "Device initial-data load time on the target (latest run)",
            "s",
            q(
                f"migbed_migration_last_device_initial_load_seconds{{{SP}}}",
                "{{policy}} {{device}}",
                instant=True,
            ),
            w=12,
        ),
        _stat(
            "Migrations by outcome",
            "none",
            q(
                f"sum by (outcome) (migbed_migrations_total{{{SP}}})",
                "{{outcome}}",
                instant=True,
            ),
            w=8,
            h=8,
        ),
        _bar(
            "Guest-visible downtime (source) and the target's final loads, mean per policy",
            "s",
            q(mean_by_policy(GUEST_DOWNTIME), "{{policy}} guest-visible downtime", ref="A", instant=True),
            q(
                mean_by_policy("migbed_target_final_load_seconds"),
                "{{policy}} final loads after the last byte (target)",
                ref="B",
                instant=True,
            ),
            w=16,
        ),
    ]


def _multifd_panels() -> list[PanelBuilder]:
    """The third row: how the bytes and packets spread over the multifd channels."""
    return [
        _bar(
            "Bytes per multifd channel, per migration",
            "bytes",
            q(
                f"scenario_policy_channel:migbed_migration_multifd_channel_bytes:per_migration{{{SP}}}",
                "{{policy}} channel {{channel}}",
                instant=True,
            ),
            w=10,
        ),
        _bar(
            "Packets per multifd channel (latest run)",
            "none",
            q(
                f"migbed_migration_last_multifd_channel_packets{{{SP}}}",
                "{{policy}} channel {{channel}}",
                instant=True,
            ),
            w=10,
        ),
        _stat(
            "multifd channels (latest run)",
            "none",
            q(
                f"migbed_migration_last_multifd_channels{{{SP}}}",
                "{{policy}}",
                instant=True,
            ),
            w=4,
            h=8,
        ),
    ]


def policy_comparison() -> dashboard.Dashboard:
    """Old vs new switchover policies across repeats: what each policy costs the guest."""
    return _layout(
        _comparison_board(),
        [
            ("Downtime per policy (completed migrations)", _downtime_panels()),
            ("Why: ACK wait, iterations, time and bytes", _why_panels()),
            ("multifd channels", _multifd_panels()),
        ],
    )


PHASE_EXPR = " + ".join(
    f'{code} * max by (scenario, policy) (migbed_source_phase{{{SP},stage="{stage}"}})'
    for code, stage in enumerate(("setup", "precopy", "stop-copy", "completing", "done"))
)
PHASE_MAP = {
    "0": ("setup", "purple"),
    "1": ("pre-copy", "blue"),
    "2": ("stop-copy (VM stopped)", "red"),
    "3": ("completing", "orange"),
    "4": ("done", "green"),
}
VFIO_MAP = {
    "0": ("ERROR", "dark-red"),
    "1": ("STOP", "red"),
    "2": ("RUNNING", "green"),
    "3": ("STOP_COPY", "orange"),
    "4": ("RESUMING", "purple"),
    "5": ("RUNNING_P2P", "light-green"),
    "6": ("PRE_COPY", "blue"),
    "7": ("PRE_COPY_P2P", "light-blue"),
}


# The moments the live board marks: (annotation, the gauge holding its time, colour, text).
LIVE_EVENTS = (
    ("Decision", "migbed_source_last_decision_timestamp_seconds", "yellow", "decision ({{policy}})"),
    ("Switchover ACK", "migbed_source_last_switchover_ack_timestamp_seconds", "green", "switchover-ack ({{policy}})"),
    ("Source stop", "migbed_source_last_stop_timestamp_seconds", "red", "stop ({{policy}})"),
    ("Completed", "migbed_source_last_completed_timestamp_seconds", "orange", "completed ({{policy}})"),
    ("Resumed (source view)", "migbed_source_last_resume_timestamp_seconds", "blue", "resumed ({{policy}})"),
    ("Resumed on target", "migbed_target_last_resume_timestamp_seconds", "purple", "target resume ({{policy}})"),
)
# The target's series carry no policy label: it does not know the source's policy.
TGT = 'scenario=~"$scenario"'


def _live_board() -> dashboard.Dashboard:
    """The live dashboard up to its panels: scenario and policy, the LIVE_EVENTS marks."""
    board = (
        _board(
            "migbed: live migration",
            LIVE_UID,
            "Pre-copy progress of the running migration as the source and target exporters "
            "report it, sampled every scrape (1 s). Annotations mark the decision, the "
            "switchover ACK, the source stop, completion and the resume on the target.",
            dm.DashboardCursorSync.TOOLTIP,
            "now-15m",
        )
        .with_variable(variable("scenario", "Scenario", "label_values(migbed_source_phase, scenario)", multi=False))
        .with_variable(variable("policy", "Policy", "label_values(migbed_source_phase, policy)", multi=True))
    )
    for name, gauge, color, text in LIVE_EVENTS:
        board = board.annotation(event_annotation(name, f"{gauge}{{{SP}}}", color, text))
    return board.link(_link_to("Policy comparison"))


def _precopy_panels() -> list[PanelBuilder]:
    """The source's pre-copy as QEMU sees it: what remains, the rates, the estimate, the phase."""
    return [
        _ts(
            "Remaining RAM, pending and threshold",
            "bytes",
            q(f"migbed_source_ram_remaining_bytes{{{SP}}}", "{{policy}} RAM remaining"),
            q(f"migbed_source_pending_bytes{{{SP}}}", "{{policy}} pending", ref="B"),
            q(f"migbed_source_threshold_bytes{{{SP}}}", "{{policy}} threshold", ref="C"),
            description="QEMU switches over when pending < threshold (and, with "
            "switchover-ack, once the destination acknowledged).",
        ),
        _ts(
            "Measured bandwidth",
            "Bps",
            q(f"migbed_source_bandwidth_bytes_per_second{{{SP}}}", "{{policy}}"),
        ),
        _ts(
            "Iteration (dirty-bitmap syncs)",
            "none",
            q(f"migbed_source_iterations{{{SP}}}", "{{policy}}"),
            w=8,
            step=True,
        ),
        _ts(
            "Dirty page rate",
            "none",
            q(f"migbed_source_dirty_pages_per_second{{{SP}}}", "{{policy}} pages/s"),
            w=8,
        ),
        _ts(
            "Expected downtime (QEMU's estimate)",
            "s",
            q(f"migbed_source_expected_downtime_seconds{{{SP}}}", "{{policy}}"),
            w=8,
        ),
        _states(
            "Phase",
            PHASE_MAP,
            q(PHASE_EXPR, "{{policy}}"),
        ),
        _states(
            "Switchover ACK",
            {"0": ("waiting for ACK", "orange"), "1": ("ACK received", "green")},
            q(f"migbed_source_ack_received{{{SP}}}", "{{policy}}"),
        ),
    ]


def _source_device_panels() -> list[PanelBuilder]:
    """The source's VFIO devices: initial and dirty bytes left, the uAPI state."""
    return [
        _ts(
            "Device initial bytes still to send (source)",
            "bytes",
            q(f"migbed_source_device_initial_bytes{{{SP}}}", "{{policy}} {{device}}"),
            w=8,
        ),
        _ts(
            "Device dirty bytes (source)",
            "bytes",
            q(f"migbed_source_device_dirty_bytes{{{SP}}}", "{{policy}} {{device}}"),
            w=8,
        ),
        _states(
            "VFIO device state (source)",
            VFIO_MAP,
            q(f"migbed_source_device_vfio_state{{{SP}}}", "{{policy}} {{device}}"),
            w=8,
            h=8,
        ),
    ]


def _target_load_panels() -> list[PanelBuilder]:
    """The target's device loads: progress, busy time, loading and initial-data states."""
    return [
        _ts(
            "Target load progress",
            "bytes",
            q(f"migbed_target_device_loaded_bytes{{{TGT}}}", "loaded {{device}}"),
            q(
                f"migbed_target_device_backlog_bytes{{{TGT}}}",
                "backlog {{device}}",
                ref="B",
            ),
            w=8,
        ),
        _ts(
            "Time the target's devices spent loading (this session)",
            "s",
            q(f"migbed_target_device_busy_seconds{{{TGT}}}", "{{device}}"),
            w=8,
            description="What a destination can observe of its device loads: busy time. "
            "QEMU's estimate does not see it.",
        ),
        _states(
            "Device loading on the target",
            {"0": ("idle", "green"), "1": ("loading", "orange")},
            q(f"migbed_target_device_loading{{{TGT}}}", "{{device}}"),
            w=8,
            h=8,
        ),
        _states(
            "Device initial data loaded on the target",
            {"0": ("loading", "orange"), "1": ("loaded", "green")},
            q(f"migbed_target_device_initial_loaded{{{TGT}}}", "{{device}}"),
            w=8,
            h=8,
        ),
    ]


def _target_received_panel() -> PanelBuilder:
    return _ts(
        "Bytes received by the target, by stage",
        "Bps",
        q(
            f"sum by (stage) (rate(migbed_target_received_ram_bytes_total{{{TGT}}}[$__rate_interval]))",
            "RAM {{stage}}",
        ),
        q(
            f"sum by (stage) (rate(migbed_target_received_device_bytes_total{{{TGT}}}[$__rate_interval]))",
            "device {{stage}}",
            ref="B",
        ),
        w=16,
    )


def _latest_result_panels() -> list[PanelBuilder]:
    """The last finished migration's figures, one stat each."""
    return [
        _stat(title, "s", q(f"{gauge}{{{SP}}}", "{{policy}}", instant=True))
        for title, gauge in (
            ("Guest-visible downtime", "migbed_migration_last_guest_downtime_seconds"),
            ("QEMU-reported downtime", "migbed_migration_last_downtime_seconds"),
            ("Switchover-ACK wait", "migbed_migration_last_switchover_ack_wait_seconds"),
            ("Total time", "migbed_migration_last_total_time_seconds"),
        )
    ]


def _process_panels() -> list[PanelBuilder]:
    """The two services as processes: memory and CPU."""
    return [
        _ts(
            "Resident memory",
            "bytes",
            q('process_resident_memory_bytes{job=~"migbed-source|migbed-target"}', "{{role}} {{instance}}"),
        ),
        _ts(
            "CPU (1 = one core)",
            "percentunit",
            q(
                'rate(process_cpu_seconds_total{job=~"migbed-source|migbed-target"}[$__rate_interval])',
                "{{role}} {{instance}}",
            ),
        ),
    ]


def live_migration() -> dashboard.Dashboard:
    """One migration as it runs: progress, devices, target load, with ACK/stop/resume marks."""
    return _layout(
        _live_board(),
        [
            ("Pre-copy progress (source)", _precopy_panels()),
            ("Devices (VFIO)", [*_source_device_panels(), *_target_load_panels(), _target_received_panel()]),
            ("Latest result", _latest_result_panels()),
            ("Services (process)", _process_panels()),
        ],
    )


DASHBOARDS = {
    "policy-comparison.json": policy_comparison,
    "live-migration.json": live_migration,
}


def render() -> dict[str, str]:
    """File name -> dashboard JSON text, exactly as committed."""
    encoder = JSONEncoder(sort_keys=True, indent=2)
    out = {}
    for name, build in DASHBOARDS.items():
        model = build().build()
        model.schema_version = SCHEMA_VERSION
        out[name] = encoder.encode(model) + "\n"
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--check", action="store_true", help="fail if the committed JSON is stale")
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    args = ap.parse_args(argv)
    stale = []
    for name, text in render().items():
        path = args.out / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            json.loads(text)
            print(f"wrote {path}")
    if stale:
        print(f"stale dashboards (run grafana/build_dashboards.py): {stale}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
