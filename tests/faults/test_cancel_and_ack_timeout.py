"""User-initiated cancel at every stage, and the switchover-ack timeout, end to end.

Real `migbed serve` processes; cancels go through Control.Cancel, `migbed cancel` and
`migbed run --cancel-after`. A cancelled migration leaves the source guest running and
intact, the reason in the record, and the target's session freed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from faultlab import (
    Lab,
    in_bulk_precopy,
    no_sessions,
    scenario_toml,
    sessions,
    start_run,
    stop_cleanly,
    wait_stopped,
    wait_until,
    waiting_for_ack,
)

from migbed.experiments.controller import SourceControl

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

CLI = [sys.executable, "-m", "migbed.cli.main"]
BOUND_S = 8.0  # cancel -> record, on a loaded 2-core machine
SLOW_SETUP = [{"name": "vf0", "initial-bytes": "4MB", "stop-copy-size": "1MB",
               "load-setup-time": "600s"}]

STAGES: dict[str, tuple[dict[str, Any], str]] = {
    # stage: (scenario knobs, policy)
    "boot": ({"guest": {"ram-size": "256MiB"}, "migration": {"warmup": "2s"}}, "legacy"),
    "bulk pre-copy": ({"guest": {"ram-size": "256MiB"},
                       "migration": {"max-bandwidth": "32MiB/s"}}, "legacy"),
    "waiting for SWITCHOVER_ACK": ({"devices": SLOW_SETUP, "migration": {
        "avail-switchover-bandwidth": "128MiB/s"}}, "switchover-ack"),
    "stop-copy": ({"guest": {"ram-size": "512MiB"},
                   "migration": {"max-bandwidth": "8MiB/s", "max-time": "1s"}}, "legacy"),
    "resuming (target loading)": ({"devices": [{**SLOW_SETUP[0], "initial-bytes": "64MB"}],
                                   "migration": {"max-bandwidth": "64MiB/s"}}, "legacy"),
}


@pytest.mark.parametrize("stage", list(STAGES))
def test_cancel_at_stage(lab: Lab, stage: str) -> None:
    knobs, policy = STAGES[stage]
    name = "cancel-" + stage.split()[0].strip("()")
    toml = scenario_toml(name, **knobs)
    target, source = lab.start("target"), lab.start("source")
    ctl = SourceControl(source.address)
    w = start_run(ctl, toml, policy, target.address)
    if stage == "bulk pre-copy":
        w.wait_sample(in_bulk_precopy(256 << 20), 30, stage)
    elif stage.startswith("waiting"):
        w.wait_sample(waiting_for_ack, 30, stage)
    elif stage in ("stop-copy", "resuming (target loading)"):
        wait_stopped(source, name, policy, 60)
        if stage.startswith("resuming"):
            time.sleep(1.0)
    t = time.monotonic()
    # `migbed cancel`, the operator's command, as a real process.
    out = subprocess.run([*CLI, "cancel", source.address, w.run_id, "--reason",
                          f"user cancel at {stage}"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"{w.run_id}: cancelled", out.stdout
    rec = w.result(BOUND_S + 10)
    assert rec.outcome == "cancelled", f"{rec.outcome}: {rec.error}"
    assert rec.error == f"user cancel at {stage}"
    assert rec.source_guest_running_after and rec.source_integrity_ok
    assert w.ended - t < BOUND_S + (2.5 if stage == "boot" else 0)  # boot: warm-up goes on
    if stage == "stop-copy":
        assert rec.event_time("stop") is not None and rec.event_time("completed") is None
    if stage.startswith("resuming"):
        # With the return path (the default) completion waits for the target's Shut, which
        # a target still loading never sent: the run had not completed, the cancel won.
        assert rec.event_time("stop") is not None and rec.event_time("completed") is None
    wait_until(lambda: no_sessions(target.address), 10, "the target to free the session")
    assert sessions(source.address) == []
    # A finished run cannot be cancelled again; the CLI says so and succeeds.
    again = subprocess.run([*CLI, "cancel", source.address, w.run_id],
                           capture_output=True, text=True, timeout=30)
    assert again.returncode == 0 and "already cancelled" in again.stdout, again.stdout
    ctl.close()
    stop_cleanly(source)
    stop_cleanly(target)


def test_cancel_unknown_run_is_a_clear_error(lab: Lab) -> None:
    source = lab.start("source")
    out = subprocess.run([*CLI, "cancel", source.address, "no-such-run"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "NOT_FOUND" in out.stderr and "no-such-run" in out.stderr, out.stderr
    stop_cleanly(source)


def test_cancel_after_completion_changes_nothing(lab: Lab) -> None:
    target, source = lab.start("target"), lab.start("source")
    ctl = SourceControl(source.address)
    w = start_run(ctl, scenario_toml("cancel-late"), "legacy", target.address)
    rec = w.result(60)
    assert rec.outcome == "completed" and rec.verified
    reply = ctl.cancel(w.run_id)
    assert not reply.cancelled and reply.state == "completed"
    ctl.close()
    stop_cleanly(source)
    stop_cleanly(target)


def test_run_cancel_after_writes_the_reason(tmp_path: Path) -> None:
    """`migbed run --cancel-after`: the whole CLI path, local processes, results.json."""
    scen = tmp_path / "slow.toml"
    scen.write_text(scenario_toml("cancel-after", devices=SLOW_SETUP, migration={
        "avail-switchover-bandwidth": "128MiB/s"}))
    out_dir = tmp_path / "out"
    t = time.monotonic()
    out = subprocess.run([*CLI, "run", "--scenario", str(scen), "--policy", "switchover-ack",
                          "--repeat", "1", "--cancel-after", "1.5", "--out", str(out_dir),
                          "--no-progress", "--no-report"], capture_output=True, text=True,
                         timeout=120)
    took = time.monotonic() - t
    # 0/1 verified: exit 1 (`migbed --help`: a run failed, was cancelled or was not verified)
    assert out.returncode == 1, out.stdout + out.stderr
    (rec,) = json.loads((out_dir / "results.json").read_text())
    assert rec["outcome"] == "cancelled" and rec["error"] == "cancel-after", rec["error"]
    assert rec["source_guest_running_after"] and rec["source_integrity_ok"]
    assert took < 60
    assert "cancelled" in (out_dir / "results.csv").read_text()


# ---------------------------------------------------------------- switchover-ack timeout


def test_ack_timeout_legacy_fallback_completes(lab: Lab) -> None:
    """No ACK within the timeout, action legacy: switch on the data rule; the rest of the
    device setup then lands inside the downtime (the very penalty the ACK avoids)."""
    toml = scenario_toml("ack-timeout-legacy", devices=[{
        "name": "vf0", "initial-bytes": "4MB", "stop-copy-size": "1MB",
        "load-setup-time": "3s"}], migration={
        "avail-switchover-bandwidth": "128MiB/s", "switchover-ack-timeout": "500ms",
        "ack-timeout-action": "legacy"})
    target, source = lab.start("target"), lab.start("source")
    ctl = SourceControl(source.address)
    rec = start_run(ctl, toml, "switchover-ack", target.address).result(60)
    assert rec.outcome == "completed" and rec.verified, rec.error
    assert "legacy fallback" in rec.decision_reason, rec.decision_reason
    assert rec.decision_basis == "data"  # the fallback is QEMU's data rule without the ACK
    ack, decision = rec.event_time("switchover-ack"), rec.event_time("decision")
    assert decision is not None and (ack is None or ack > decision)
    # Switched about 0.5 s into a 3 s setup: most of the setup is in the guest's downtime.
    assert rec.guest_downtime_ms > 1500, rec.guest_downtime_ms
    ctl.close()
    stop_cleanly(source)
    stop_cleanly(target)


@pytest.mark.parametrize("policy", ["switchover-ack", "time-aware"])
def test_ack_timeout_cancel(lab: Lab, policy: str) -> None:
    toml = scenario_toml("ack-timeout-cancel", devices=SLOW_SETUP, migration={
        "avail-switchover-bandwidth": "128MiB/s", "switchover-ack-timeout": "700ms",
        "ack-timeout-action": "cancel"})
    target, source = lab.start("target"), lab.start("source")
    ctl = SourceControl(source.address)
    rec = start_run(ctl, toml, policy, target.address).result(60)
    assert rec.outcome == "cancelled", rec.error
    assert rec.error == "no SWITCHOVER_ACK within 0.7s"
    assert rec.source_guest_running_after and rec.source_integrity_ok
    wait_until(lambda: no_sessions(target.address), 10, "the target to free the session")
    ctl.close()
    stop_cleanly(source)
    stop_cleanly(target)


def test_ack_arrives_before_timeout_no_effect(lab: Lab) -> None:
    """A timeout longer than the setup changes nothing: the ACK comes, switchover-ack as usual."""
    toml = scenario_toml("ack-timeout-unused", migration={
        "avail-switchover-bandwidth": "128MiB/s", "switchover-ack-timeout": "20s",
        "ack-timeout-action": "cancel"})
    target, source = lab.start("target"), lab.start("source")
    ctl = SourceControl(source.address)
    rec = start_run(ctl, toml, "switchover-ack", target.address).result(60)
    assert rec.outcome == "completed" and rec.verified, rec.error
    assert rec.event_time("switchover-ack") is not None
    ctl.close()
    stop_cleanly(source)
    stop_cleanly(target)
