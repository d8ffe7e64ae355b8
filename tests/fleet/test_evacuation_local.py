"""Evacuations between real local processes over real gRPC: limits held, every guest verified,
a target lost mid-plan fails only its own guests and leaves each of them running on the source."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from migbed.core.scenario import builtin_scenario_text
from migbed.experiments.localstack import Service, start_service
from migbed.fleet.evacuation import Endpoints, Evacuation, GuestRun
from migbed.fleet.planner import EvacuationPlan, Limits
from migbed.fleet.run import SOURCE_HOST, guests_from_scenario

TINY = builtin_scenario_text("tiny")


def _hosts(tmp_path: Path, targets: int) -> tuple[Endpoints, list[Service]]:
    services = [start_service("target", tmp_path / f"t{i}") for i in range(targets)]
    services.append(start_service("source", tmp_path / "s"))
    endpoints = Endpoints({SOURCE_HOST: services[-1].address},
                          {f"target-{i}": services[i].address for i in range(targets)})
    return endpoints, services


def test_six_guests_two_in_flight_all_verified(tmp_path: Path) -> None:
    endpoints, services = _hosts(tmp_path, 2)
    try:
        fleet = guests_from_scenario("tiny", TINY, 6)
        plan = EvacuationPlan(fleet, list(endpoints.targets), Limits(per_source=2, per_cluster=5))
        result = Evacuation(plan, endpoints, {"tiny": TINY}, "switchover-ack").run("first-come")
    finally:
        for svc in services:
            svc.stop()
    assert [g.outcome for g in result.guests] == ["completed"] * 6
    assert all(g.verified for g in result.guests)
    peak, per_source = result.in_flight_peaks()
    assert per_source == {SOURCE_HOST: 2} and peak == 2  # the limit was reached, never passed
    assert {g.target_host for g in result.guests} == {"target-0", "target-1"}
    for g in result.guests:
        # The run's own total time fits inside the runner's view of it.
        assert g.total_time_ms <= g.end_ms - g.start_ms
    assert sorted(g.queued_ms for g in result.guests)[:2] < [50.0, 50.0]  # the first two start at once
    assert result.drain_time_ms == max(g.end_ms for g in result.guests)


def test_a_target_killed_mid_plan_fails_only_its_guests(tmp_path: Path) -> None:
    endpoints, services = _hosts(tmp_path, 2)
    doomed = services[1]  # target-1
    killed: list[str] = []

    def on_done(g: GuestRun) -> None:
        if not killed:  # after the first guest is done, target-1 goes away with its host
            os.kill(doomed.process.pid, signal.SIGKILL)
            killed.append(g.guest)

    try:
        fleet = guests_from_scenario("tiny", TINY, 6)
        plan = EvacuationPlan(fleet, list(endpoints.targets), Limits(per_source=2, per_cluster=5))
        result = Evacuation(plan, endpoints, {"tiny": TINY}, "switchover-ack",
                            on_guest_done=on_done).run("first-come")
    finally:
        for svc in services:
            svc.stop()
    by_outcome = {g.guest: (g.outcome, g.target_host) for g in result.guests}
    failed = [g for g in result.guests if g.outcome != "completed"]
    assert failed, f"killing target-1 failed no guest: {by_outcome}"
    assert all(g.target_host == "target-1" for g in failed), by_outcome
    assert result.lost_targets == ["target-1"]
    assert not result.not_started  # the plan went on with target-0
    for g in result.guests:
        if g.outcome == "completed":
            assert g.verified
    for rec in result.records:
        if rec.outcome != "completed":
            # QEMU's promise: a failed migration leaves the source guest running and intact.
            assert rec.source_guest_running_after and rec.source_integrity_ok, rec.error
    late = [g for g in result.guests if g.start_ms > min(f.end_ms for f in failed)]
    assert all(g.target_host == "target-0" for g in late)
