"""The live migration dashboard: one migration as it runs (pre-copy progress, devices on both
sides, the target's loads), with the decision, ACK, stop and resume marked."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard
from grafana_foundation_sdk.models import dashboard as dm

from migbed_dashboards.parts import (
    LIVE_UID,
    SP,
    PanelBuilder,
    event_annotation,
    layout,
    link_to,
    new_board,
    q,
    stat_panel,
    states,
    timeseries_panel,
    variable,
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
        new_board(
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
    return board.link(link_to("Policy comparison"))


def _precopy_panels() -> list[PanelBuilder]:
    """The source's pre-copy as QEMU sees it: what remains, the rates, the estimate, the phase."""
    return [
        timeseries_panel(
            "Remaining RAM, pending and threshold",
            "bytes",
            q(f"migbed_source_ram_remaining_bytes{{{SP}}}", "{{policy}} RAM remaining"),
            q(f"migbed_source_pending_bytes{{{SP}}}", "{{policy}} pending", ref="B"),
            q(f"migbed_source_threshold_bytes{{{SP}}}", "{{policy}} threshold", ref="C"),
            description="QEMU switches over when pending < threshold (and, with "
            "switchover-ack, once the destination acknowledged).",
        ),
        timeseries_panel(
            "Measured bandwidth",
            "Bps",
            q(f"migbed_source_bandwidth_bytes_per_second{{{SP}}}", "{{policy}}"),
        ),
        timeseries_panel(
            "Iteration (dirty-bitmap syncs)",
            "none",
            q(f"migbed_source_iterations{{{SP}}}", "{{policy}}"),
            w=8,
            step=True,
        ),
        timeseries_panel(
            "Dirty page rate",
            "none",
            q(f"migbed_source_dirty_pages_per_second{{{SP}}}", "{{policy}} pages/s"),
            w=8,
        ),
        timeseries_panel(
            "Expected downtime (QEMU's estimate)",
            "s",
            q(f"migbed_source_expected_downtime_seconds{{{SP}}}", "{{policy}}"),
            w=8,
        ),
        states(
            "Phase",
            PHASE_MAP,
            q(PHASE_EXPR, "{{policy}}"),
        ),
        states(
            "Switchover ACK",
            {"0": ("waiting for ACK", "orange"), "1": ("ACK received", "green")},
            q(f"migbed_source_ack_received{{{SP}}}", "{{policy}}"),
        ),
    ]


def _source_device_panels() -> list[PanelBuilder]:
    """The source's VFIO devices: initial and dirty bytes left, the uAPI state."""
    return [
        timeseries_panel(
            "Device initial bytes still to send (source)",
            "bytes",
            q(f"migbed_source_device_initial_bytes{{{SP}}}", "{{policy}} {{device}}"),
            w=8,
        ),
        timeseries_panel(
            "Device dirty bytes (source)",
            "bytes",
            q(f"migbed_source_device_dirty_bytes{{{SP}}}", "{{policy}} {{device}}"),
            w=8,
        ),
        states(
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
        timeseries_panel(
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
        timeseries_panel(
            "Time the target's devices spent loading (this session)",
            "s",
            q(f"migbed_target_device_busy_seconds{{{TGT}}}", "{{device}}"),
            w=8,
            description="What a destination can observe of its device loads: busy time. "
            "QEMU's estimate does not see it.",
        ),
        states(
            "Device loading on the target",
            {"0": ("idle", "green"), "1": ("loading", "orange")},
            q(f"migbed_target_device_loading{{{TGT}}}", "{{device}}"),
            w=8,
            h=8,
        ),
        states(
            "Device initial data loaded on the target",
            {"0": ("loading", "orange"), "1": ("loaded", "green")},
            q(f"migbed_target_device_initial_loaded{{{TGT}}}", "{{device}}"),
            w=8,
            h=8,
        ),
    ]


def _target_received_panel() -> PanelBuilder:
    return timeseries_panel(
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
        stat_panel(title, "s", q(f"{gauge}{{{SP}}}", "{{policy}}", instant=True))
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
        timeseries_panel(
            "Resident memory",
            "bytes",
            q('process_resident_memory_bytes{job=~"migbed-source|migbed-target"}', "{{role}} {{instance}}"),
        ),
        timeseries_panel(
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
    return layout(
        _live_board(),
        [
            ("Pre-copy progress (source)", _precopy_panels()),
            ("Devices (VFIO)", [*_source_device_panels(), *_target_load_panels(), _target_received_panel()]),
            ("Latest result", _latest_result_panels()),
            ("Services (process)", _process_panels()),
        ],
    )
