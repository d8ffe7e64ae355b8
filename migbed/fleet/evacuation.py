"""Running an evacuation: K guests drained off their source hosts, P in flight per source.

Each guest is a real migration, started on its source host's service through the Control
API and followed to its record, exactly as `migbed run` does for one guest; the plan
(planner.py) decides what starts when and where. Times here are on the runner's clock
(monotonic, ms since the evacuation started): they give each guest's queueing time, the
drain time and the in-flight check; downtimes come from each run's own record. A dilated
evacuation (its scenarios' time-dilation K) divides the runner's clock by K too, so every
time it reports is virtual, like the records'.
"""

from __future__ import annotations

import datetime
import queue
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from migbed.experiments.controller import ControlError, SourceControl
from migbed.experiments.follow import StartedRun, dilation_of, follow_run
from migbed.experiments.interrupt import Interruption
from migbed.fleet.planner import EvacuationPlan, Interval, Limits, Placement, max_in_flight
from migbed.measure.record import RunRecord
from migbed.wire.channel import check_health
from migbed.wire.tls import client_credentials


@dataclass
class GuestRun:
    """One guest of the evacuation, as the runner saw it (ms on the runner's clock)."""

    guest: str
    source_host: str
    target_host: str
    scenario: str
    run_id: str
    start_ms: float  # the runner asked the source to start it (queueing ended)
    end_ms: float  # its record came back
    outcome: str
    verified: bool
    downtime_ms: float
    guest_downtime_ms: float
    total_time_ms: float
    error: str = ""
    # The run's clock offset (target - source, ms) and the guest-visible downtime's
    # uncertainty (the offset's error plus one vCPU tick): per host pair, kept as measured.
    clock_offset_ms: float = 0.0
    same_clock: bool = False
    guest_downtime_uncertainty_ms: float = 0.0

    @property
    def queued_ms(self) -> float:
        """Time the guest waited for a slot: the plan started every guest at 0."""
        return self.start_ms


@dataclass
class EvacuationResult:
    policy: str
    order: str
    limits: Limits
    guests: list[GuestRun] = field(default_factory=list)
    not_started: list[str] = field(default_factory=list)
    lost_targets: list[str] = field(default_factory=list)
    records: list[RunRecord] = field(default_factory=list)
    started_at: str = ""  # UTC wall time of the runner's clock zero (ISO 8601)
    time_dilation: float = 1.0  # the runner's clock is divided by it (virtual ms)

    @property
    def drain_time_ms(self) -> float:
        """First guest started to last guest ended: how long the host took to empty."""
        return max((g.end_ms for g in self.guests), default=0.0)

    def in_flight_peaks(self) -> tuple[int, dict[str, int]]:
        return max_in_flight(Interval(g.source_host, g.start_ms, g.end_ms) for g in self.guests)

    def clock_offsets(self) -> dict[str, dict[str, Any]]:
        """Per host pair ("source -> target"): the clock offsets the runs measured (target -
        source, ms) and the largest uncertainty of a guest-visible downtime across the pair."""
        pairs: dict[str, list[GuestRun]] = {}
        for g in self.guests:
            if g.outcome == "completed":
                pairs.setdefault(f"{g.source_host} -> {g.target_host}", []).append(g)
        return {pair: {"runs": len(runs),
                       "offset_ms_min": min(r.clock_offset_ms for r in runs),
                       "offset_ms_max": max(r.clock_offset_ms for r in runs),
                       "uncertainty_ms_max": max(r.guest_downtime_uncertainty_ms for r in runs),
                       "same_clock": all(r.same_clock for r in runs)}
                for pair, runs in sorted(pairs.items())}

    def to_dict(self) -> dict[str, Any]:
        peak, per_source = self.in_flight_peaks()
        return {
            "policy": self.policy, "order": self.order, "limits": asdict(self.limits),
            "clock": "the runner's (ms since the evacuation started) for start/end/queued"
                     + (f", virtual (real / time-dilation {self.time_dilation:g})"
                        if self.time_dilation != 1.0 else ""),
            "time_dilation": self.time_dilation,
            "drain_time_ms": self.drain_time_ms, "max_in_flight": peak,
            "max_in_flight_per_source": per_source, "not_started": self.not_started,
            "lost_targets": self.lost_targets, "started_at": self.started_at,
            "clock_offsets": self.clock_offsets(),
            "guests": [{**asdict(g), "queued_ms": g.queued_ms} for g in self.guests],
        }


@dataclass(frozen=True)
class Endpoints:
    """Where each host's service answers: source Control API, target as sources dial it.

    `probes`: where the runner itself reaches a target's health service, when that is not
    the address the sources dial (lab hosts: the lab network may not reach the control
    machine); a target missing there is probed at its `targets` address."""

    sources: Mapping[str, str]
    targets: Mapping[str, str]
    probes: Mapping[str, str] = field(default_factory=dict)


_Done = tuple[Placement, float, RunRecord]


def one_dilation(scenario_texts: Mapping[str, str]) -> float:
    """The evacuation's time-dilation: one for all its scenarios (one runner clock)."""
    from migbed.core.scenario import parse_scenario

    factors = {parse_scenario(text, name).time_dilation for name, text in scenario_texts.items()}
    if len(factors) > 1:
        from migbed.core.scenario import ScenarioError

        raise ScenarioError(f"time-dilation: the evacuation's scenarios have {sorted(factors)}; "
                            "one runner clock needs one factor")
    return factors.pop() if factors else 1.0


class Evacuation:
    """Drive one plan to its end: start what the plan allows, collect what ends."""

    def __init__(self, plan: EvacuationPlan, endpoints: Endpoints, scenario_texts: Mapping[str, str],
                 policy: str, stop_on_target_loss: bool = False,
                 on_guest_done: Callable[[GuestRun], None] | None = None,
                 on_record: Callable[[RunRecord], None] | None = None,
                 interruption: Interruption | None = None) -> None:
        self.plan = plan
        self.endpoints = endpoints
        self.scenario_texts = scenario_texts
        self.policy = policy
        self.stop_on_target_loss = stop_on_target_loss
        self.on_guest_done = on_guest_done
        self.on_record = on_record  # each record as its guest ends (the journal)
        self.interruption = interruption  # a stop signal: cancel what is in flight, start nothing
        self.fleet_id = uuid.uuid4().hex[:8]
        self._done: queue.Queue[_Done] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._t0 = 0.0
        self._started_at: dict[str, float] = {}
        self.time_dilation = one_dilation(scenario_texts)

    def _ms(self) -> float:
        """Virtual ms since the evacuation started (real / the scenarios' time-dilation)."""
        return (time.monotonic() - self._t0) * 1e3 / self.time_dilation

    def run(self, order: str) -> EvacuationResult:
        result = EvacuationResult(self.policy, order, self.plan.limits, time_dilation=self.time_dilation)
        self._t0 = time.monotonic()
        result.started_at = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
        while not self.plan.done:
            if not self._stopping():
                for placement in self.plan.ready():
                    self._start(placement)
            if not self.plan.in_flight:
                break  # nothing can start (every target lost, or a stop signal): the rest stays queued
            placement, end_ms, record = self._done.get()
            self.plan.finished(placement.guest.name, record.outcome)
            if self.on_record is not None:
                self.on_record(record)
            run = self._guest_run(placement, end_ms, record)
            result.guests.append(run)
            result.records.append(record)
            if self.on_guest_done is not None:
                self.on_guest_done(run)
            if record.outcome != "completed":
                self._check_target(placement.target_host, result)
        for t in self._threads:
            t.join()
        result.not_started = [g.name for g in self.plan.queue] + [
            name for name, outcome in self.plan.outcomes.items() if outcome == "not-started"]
        return result

    def _stopping(self) -> bool:
        return self.interruption is not None and self.interruption.fired

    def _start(self, placement: Placement) -> None:
        self._started_at[placement.guest.name] = self._ms()
        thread = threading.Thread(target=self._migrate, args=(placement,),
                                  name=f"evacuate-{placement.guest.name}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _migrate(self, placement: Placement) -> None:
        guest = placement.guest
        run_id = f"{guest.name}-{self.policy}-{self.fleet_id}"
        source = self.endpoints.sources[guest.source_host]
        target = self.endpoints.targets[placement.target_host]
        labels = {"guest": guest.name, "source_host": guest.source_host,
                  "target_host": placement.target_host, "fleet": self.fleet_id}
        control = SourceControl(source)
        try:
            control.start(self.scenario_texts[guest.scenario], self.policy, target, run_id, labels)
            # Its record, always: a lost source's run gets one written here (follow.py).
            record = follow_run(control, StartedRun(
                run_id, guest.scenario, self.policy, 0, source, target, labels,
                self.endpoints.probes.get(placement.target_host, ""),
                dilation_of(self.scenario_texts[guest.scenario])), self.interruption)
        except ControlError as e:  # the source refused the run: it never started
            record = RunRecord(run_id=run_id, scenario=guest.scenario, policy=self.policy,
                               repeat=0, outcome="failed", error=str(e), labels=labels)
        finally:
            control.close()
        record.source_address = source
        self._done.put((placement, self._ms(), record))

    def _guest_run(self, placement: Placement, end_ms: float, record: RunRecord) -> GuestRun:
        g = placement.guest
        return GuestRun(g.name, g.source_host, placement.target_host, g.scenario, record.run_id,
                        self._started_at[g.name], end_ms, record.outcome, record.verified,
                        record.downtime_ms, record.guest_downtime_ms, record.total_time_ms,
                        record.error, record.clock_offset_ns / 1e6, record.same_clock,
                        record.guest_downtime_uncertainty_ms)

    def _check_target(self, host: str, result: EvacuationResult) -> None:
        """After a failed migration: is its target host still there? If not, place nothing
        more on it (and stop the plan if the user chose so)."""
        if host in self.plan.lost_targets:
            return
        probe = self.endpoints.probes.get(host, self.endpoints.targets[host])
        # The operator's credentials ($MIGBED_TLS_DIR): a TLS-only target refuses plaintext
        # and would look lost.
        if check_health(probe, timeout=2.0, credentials=client_credentials(None)):
            return
        result.lost_targets.append(host)
        self.plan.target_lost(host, stop_plan=self.stop_on_target_loss)
