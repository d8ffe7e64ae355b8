"""What migbed's dashboards share: the datasource variable, queries, panel builders, layout.

Every panel, query, variable and annotation names the datasource through the ``${datasource}``
variable (default: the provisioned ``migbed-prometheus``), so the dashboards also work when
imported into a Grafana whose Prometheus has another uid.
"""

from __future__ import annotations

from collections.abc import Iterable

from grafana_foundation_sdk.builders import bargauge, dashboard, stat, statetimeline, timeseries
from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

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


def bar(title: str, unit: str, *targets: Dataquery, w: int = 8, h: int = 8) -> PanelBuilder:
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


def spread_bar(what: str, metric: str) -> PanelBuilder:
    """p10 / p50 / p90 of `metric` per policy: how repeats of one figure spread."""
    targets = [q(quantile_by_policy(phi, metric), f"{{{{policy}}}} p{round(phi * 100)}", ref=ref, instant=True)
               for phi, ref in ((0.1, "A"), (0.5, "B"), (0.9, "C"))]
    return bar(f"{what} spread across repeats (p10 / p50 / p90)", "s", *targets, w=12, h=10)


def timeseries_panel(
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


def stat_panel(title: str, unit: str, *targets: Dataquery, w: int = 6, h: int = 5) -> PanelBuilder:
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


def states(
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


def layout(board: dashboard.Dashboard, sections: Iterable[tuple[str, list[PanelBuilder]]]) -> dashboard.Dashboard:
    panel_id = 1
    for title, panels in sections:
        board = board.with_row(dashboard.Row(title).id(panel_id))
        panel_id += 1
        for p in panels:
            p.id(panel_id)  # type: ignore[attr-defined]
            panel_id += 1
            board = board.with_panel(p)
    return board


def new_board(title: str, uid: str, description: str, tooltip: dm.DashboardCursorSync,
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


def link_to(title: str) -> dashboard.DashboardLink:
    """A link to the other migbed dashboard (by tag), keeping the variables and the time."""
    return (
        dashboard.DashboardLink(title)
        .type(dm.DashboardLinkType.DASHBOARDS)
        .tags(["migbed"])
        .as_dropdown(False)
        .include_vars(True)
        .keep_time(True)
    )
