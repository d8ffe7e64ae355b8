"""A comparison: the same scenario under several policies, repeated, run one at a time.

Policies are interleaved within each repeat (legacy, ack, legacy, ack, ...) so that a
slow drift of the machine does not favour one policy. Every run is a real migration
between the given source and target services; the records are collected as they come.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from migbed.core.units import format_bytes
from migbed.experiments.controller import SourceControl
from migbed.experiments.follow import RECORDED_BY, StartedRun, dilation_of, follow_run
from migbed.experiments.interrupt import Interruption
from migbed.measure.record import ProgressSample, RunRecord


@dataclass
class Plan:
    scenario_name: str
    scenario_toml: str
    policies: list[str]
    repeat: int
    source: str
    target: str  # as the source dials it
    cancel_after: float = 0.0  # s after start; 0 = never (a user-initiated cancel, for tests)

    def runs(self) -> list[tuple[int, str]]:
        return [(r, p) for r in range(self.repeat) for p in self.policies]


def _describe(sample: ProgressSample) -> str:
    ack = " ack" if sample.ack_received else ""
    return (f"{sample.phase} iter {sample.dirty_sync_count} "
            f"remaining {format_bytes(sample.pending_bytes)} "
            f"{format_bytes(sample.bandwidth_bytes_per_s)}/s{ack}")


def _throttled(show: Callable[[ProgressSample], None], period_s: float = 0.2) -> Callable[[ProgressSample], None]:
    """Show at most one progress sample per period (samples come every 100 ms)."""
    last = [0.0]

    def on_sample(s: ProgressSample) -> None:
        now = time.monotonic()
        if now - last[0] > period_s:
            last[0] = now
            show(s)

    return on_sample


def run_plan(plan: Plan, show_progress: bool = True,
             on_record: Callable[[RunRecord], None] | None = None,
             on_start: Callable[[str], None] | None = None,
             interruption: Interruption | None = None) -> list[RunRecord]:
    """Run every (repeat, policy) of the plan, one at a time. `on_start` gets each run id as
    its run starts (the CLI prints it: `migbed cancel` needs it); `on_record` each record as
    its run ends (the CLI appends it to results.jsonl before anything else happens). Every
    started run gets exactly one record (experiments/follow.py); after a stop signal
    (`interruption`) the run in flight is cancelled and no other starts."""
    from tqdm import tqdm

    control = SourceControl(plan.source)
    records: list[RunRecord] = []
    batch = uuid.uuid4().hex[:8]
    runs = plan.runs()
    dilation = dilation_of(plan.scenario_toml)
    # A bar only on a terminal, whoever calls: a log gets no carriage returns.
    bar = tqdm(total=len(runs), unit="run", disable=not (show_progress and sys.stderr.isatty()),
               dynamic_ncols=True, desc=plan.scenario_name)
    try:
        for repeat, policy in runs:
            if interruption is not None and interruption.fired:
                break
            run = StartedRun(f"{plan.scenario_name}-{policy}-{repeat}-{batch}", plan.scenario_name,
                             policy, repeat, plan.source, plan.target, time_dilation=dilation)
            bar.set_description(f"{policy} #{repeat + 1}")
            control.start(plan.scenario_toml, policy, plan.target, run.run_id,
                          {"repeat": str(repeat)})
            if on_start is not None:
                on_start(run.run_id)
            record = follow_run(control, run, interruption,
                                _throttled(lambda s: bar.set_postfix_str(_describe(s))),
                                plan.cancel_after)
            records.append(record)
            if on_record is not None:
                on_record(record)
            bar.set_postfix_str(f"{record.outcome}, guest downtime {record.guest_downtime_ms:.0f} ms")
            bar.update(1)
            if record.labels.get(RECORDED_BY) == "orchestrator":
                break  # the source is lost: the next Start would only fail the same way
    finally:
        bar.close()
        control.close()
    return records
