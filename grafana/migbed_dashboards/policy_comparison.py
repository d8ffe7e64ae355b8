"""The policy comparison dashboard: downtime (guest-visible and QEMU-reported), why it differs,
multifd, per switchover policy over every migration the source exporter has run."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard
from grafana_foundation_sdk.models import dashboard as dm

from migbed_dashboards.parts import (
    COMPARISON_UID,
    SP,
    PanelBuilder,
    bar,
    event_annotation,
    layout,
    link_to,
    mean_by_policy,
    new_board,
    q,
    spread_bar,
    stat_panel,
    timeseries_panel,
    variable,
)

GUEST_DOWNTIME = "migbed_migration_guest_downtime_seconds"
QEMU_DOWNTIME = "migbed_migration_downtime_seconds"


def _comparison_board() -> dashboard.Dashboard:
    """The comparison dashboard up to its panels: one scenario, any policies, result marks."""
    return (
        new_board(
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
        .link(link_to("Live migration"))
    )


def _downtime_means() -> list[PanelBuilder]:
    """Mean downtime per policy: as the guest saw it, as QEMU reports it, and the difference."""
    return [
        bar(
            "Guest-visible downtime, mean per policy",
            "s",
            q(mean_by_policy(GUEST_DOWNTIME), "{{policy}}", instant=True),
        ),
        bar(
            "QEMU-reported downtime, mean per policy",
            "s",
            q(mean_by_policy(QEMU_DOWNTIME), "{{policy}}", instant=True),
        ),
        bar(
            "Downtime QEMU does not report (guest-visible minus reported), mean",
            "s",
            q(mean_by_policy("migbed_migration_unreported_downtime_seconds"), "{{policy}}", instant=True),
        ),
    ]


def _downtime_panels() -> list[PanelBuilder]:
    """The first row: the means, their spread, where the downtime went, each run's result."""
    return [
        *_downtime_means(),
        spread_bar("Guest-visible downtime", GUEST_DOWNTIME),
        spread_bar("QEMU-reported downtime", QEMU_DOWNTIME),
        bar(
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
        timeseries_panel(
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
        bar(
            "Switchover-ACK wait, mean per policy",
            "s",
            q(
                mean_by_policy("migbed_migration_switchover_ack_wait_seconds"),
                "{{policy}}",
                instant=True,
            ),
        ),
        bar(
            "Iterations (dirty-bitmap syncs), mean per policy",
            "none",
            q(mean_by_policy("migbed_migration_iterations"), "{{policy}}", instant=True),
        ),
        bar(
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
        bar(
            "Bytes per migration by stage (precopy: VM running, downtime: stopped)",
            "bytes",
            q(
                f"scenario_policy_stage:migbed_migration_transferred_bytes:per_migration{{{SP}}}",
                "{{policy}} {{stage}}",
                instant=True,
            ),
            w=12,
        ),
        bar(
            "Device initial-data load time on the target (latest run)",
            "s",
            q(
                f"migbed_migration_last_device_initial_load_seconds{{{SP}}}",
                "{{policy}} {{device}}",
                instant=True,
            ),
            w=12,
        ),
        stat_panel(
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
        bar(
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
        bar(
            "Bytes per multifd channel, per migration",
            "bytes",
            q(
                f"scenario_policy_channel:migbed_migration_multifd_channel_bytes:per_migration{{{SP}}}",
                "{{policy}} channel {{channel}}",
                instant=True,
            ),
            w=10,
        ),
        bar(
            "Packets per multifd channel (latest run)",
            "none",
            q(
                f"migbed_migration_last_multifd_channel_packets{{{SP}}}",
                "{{policy}} channel {{channel}}",
                instant=True,
            ),
            w=10,
        ),
        stat_panel(
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
    return layout(
        _comparison_board(),
        [
            ("Downtime per policy (completed migrations)", _downtime_panels()),
            ("Why: ACK wait, iterations, time and bytes", _why_panels()),
            ("multifd channels", _multifd_panels()),
        ],
    )
