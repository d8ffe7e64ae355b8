"""Issue 23: the orchestrator itself stopped or killed, and its source service lost.

Each test runs a real `migbed run` (a subprocess, its own two `migbed serve` processes) and
strikes it as a service manager, a terminal or the OOM killer would, by PID. Then it checks
the process table (no service of the run left), the exit code and the record. The run
never ends by itself (orchlab.NEVER_ENDING: switchover-ack waits for a 600 s device setup),
so the strike always lands on a run in flight, in pre-copy.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from orchlab import (
    NEVER_ENDING,
    Orchestrator,
    bound_services,
    journal,
    source_of,
    wait_gone,
    wait_running,
)

from migbed.experiments.sweep import read_runs

pytestmark = pytest.mark.timeout(240)

GONE_WITHIN_S = 5.0  # "no service it started running for long"


def never_ending_run(tmp_path: Path, repeat: int = 2) -> tuple[Orchestrator, Path]:
    scenario = tmp_path / "never-ending.toml"
    scenario.write_text(NEVER_ENDING)
    out = tmp_path / "out"
    cli = Orchestrator(["run", "--scenario", str(scenario), "--policy", "switchover-ack",
                        "--repeat", str(repeat), "--no-progress", "--no-report", "--out", str(out)],
                       tmp_path / "cli")
    return cli, out


def in_flight(cli: Orchestrator) -> tuple[str, list[int]]:
    """Wait until its first run is in pre-copy; (run id, its services' pids)."""
    [run_id] = cli.wait_started(1)
    services = bound_services(cli.pid)
    assert len(services) == 2, f"expected its source and target, found {services}"
    time.sleep(1.5)  # boot, warm-up, setup: now in pre-copy, waiting for the ACK
    return run_id, services


def assert_guest_kept(rec: dict) -> None:  # type: ignore[type-arg]
    assert rec["source_guest_running_after"] and rec["source_integrity_ok"], rec["error"]
    assert not rec["verified"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_stop_signal_cancels_records_and_stops_its_services(tmp_path: Path, sig: int) -> None:
    cli, out = never_ending_run(tmp_path)
    try:
        run_id, services = in_flight(cli)
        cli.signal(sig)
        code = cli.wait(60)
    finally:
        cli.kill()
    name = signal.Signals(sig).name
    assert code == 128 + sig, cli.transcript()
    assert wait_gone(services, GONE_WITHIN_S) == [], "a service outlived its orchestrator"
    assert bound_services(cli.pid) == []
    [rec] = journal(out / "results.jsonl")  # the second repeat never started
    assert rec["run_id"] == run_id and rec["outcome"] == "cancelled"
    assert f"migbed run got {name}" in rec["error"] and rec["labels"]["interrupted"] == name
    assert_guest_kept(rec)
    assert cli.started() == [run_id]
    assert "Traceback" not in cli.stderr()
    assert f"stopped by {name}: exit {128 + sig}" in cli.stderr()
    # The views are written too, from the same record.
    assert [r["run_id"] for r in journal(out / "results.jsonl")] == [run_id]
    assert "cancelled" in (out / "results.csv").read_text()


def test_a_killed_orchestrator_takes_its_services_with_it(tmp_path: Path) -> None:
    """SIGKILL: nothing of the CLI runs any more, yet its services stop within seconds (the
    parent-death signal), the source cancelling the run (guest restarted) and appending its
    record to the CLI's results.jsonl: the one record of the run."""
    cli, out = never_ending_run(tmp_path)
    try:
        run_id, services = in_flight(cli)
        killed = time.monotonic()
        cli.signal(signal.SIGKILL)
        cli.wait(10)
        left = wait_gone(services, GONE_WITHIN_S)
        took = time.monotonic() - killed
    finally:
        cli.kill()
    assert left == [], f"services {left} still running {GONE_WITHIN_S:g} s after the CLI was killed"
    [rec] = journal(out / "results.jsonl")
    assert rec["run_id"] == run_id and rec["outcome"] == "cancelled", rec["error"]
    assert f"the orchestrator (pid {cli.pid})" in rec["error"]
    assert rec["labels"]["recorded-by"].startswith("source service")
    assert_guest_kept(rec)
    print(f"services gone {took:.2f} s after the SIGKILL")


def test_a_lost_source_still_gets_a_record(tmp_path: Path) -> None:
    """The source service SIGKILLed mid-run: the CLI writes the run's record itself (failed,
    why, what the target said), starts no other run, stops the target, and exits 3."""
    cli, out = never_ending_run(tmp_path)
    try:
        run_id, services = in_flight(cli)
        os.kill(source_of(cli.pid)[0], signal.SIGKILL)
        code = cli.wait(60)
    finally:
        cli.kill()
    assert code == 3, cli.transcript()
    assert wait_gone(services, GONE_WITHIN_S) == []
    [rec] = journal(out / "results.jsonl")
    assert rec["run_id"] == run_id and rec["outcome"] == "failed"
    assert rec["error"].startswith("lost the source 127.0.0.1:"), rec["error"]
    assert "UNAVAILABLE" in rec["error"], rec["error"]
    # What the target said of the session: it ended it (the stream broke), or it still had
    # it and cancelled it when asked.
    said = rec["error"].split("; target 127.0.0.1:", 1)[1]
    assert said.split(": ", 1)[1].startswith(("its session had ended: failed: ",
                                              "its session had ended: cancelled",
                                              "its session was still open")), said
    assert rec["labels"]["recorded-by"] == "orchestrator"
    assert cli.started() == [run_id], "a run was started on a lost source"
    assert "source was lost" in cli.stderr() and "Traceback" not in cli.stderr()


def test_sweep_sigterm_records_the_cancelled_run_and_resume_redoes_it(tmp_path: Path) -> None:
    """A sweep's run cancelled by SIGTERM is kept in runs.jsonl (labelled interrupted), the
    sweep exits 143 with its services gone, and --resume runs that cell again: exactly
    --repeat measurements per cell and policy in the end."""
    out = tmp_path / "sw"
    cli = Orchestrator(["sweep", "--scenario", "tiny", "--set", "guest.ram-size=64MiB",
                        "--set", "migration.max-bandwidth=16MiB/s", "--vary",
                        "migration.downtime-limit=300ms,400ms", "--policy", "legacy",
                        "--wire-rate", "1GB/s", "--precopy-rate", "1GB/s", "--no-progress",
                        "--no-report", "--out", str(out)], tmp_path / "cli")
    try:
        [run_id] = wait_running(cli.pid, 1)
        services = bound_services(cli.pid)
        time.sleep(1.0)
        cli.signal(signal.SIGTERM)
        code = cli.wait(60)
    finally:
        cli.kill()
    assert code == 143, cli.transcript()
    assert wait_gone(services, GONE_WITHIN_S) == []
    [line] = journal(out / "runs.jsonl")
    assert line["record"]["run_id"] == run_id and line["record"]["outcome"] == "cancelled"
    assert line["record"]["labels"]["interrupted"] == "SIGTERM"
    assert_guest_kept(line["record"])
    assert f"--resume {out}" in cli.stderr()

    resumed = Orchestrator(["sweep", "--resume", str(out), "--no-progress", "--no-report"],
                           tmp_path / "cli2")
    assert resumed.wait(300) == 0, resumed.transcript()
    lines = journal(out / "runs.jsonl")
    assert len(lines) == 3 and lines[0]["record"]["run_id"] == run_id
    runs = read_runs(out)
    assert sorted((r.cell, r.repeat) for r in runs) == [(0, 0), (1, 0)]
    assert all(r.record.outcome == "completed" and r.record.verified for r in runs)


def test_evacuate_sigterm_cancels_every_guest_in_flight(tmp_path: Path) -> None:
    """Two guests in flight, a third queued: SIGTERM cancels both (each record in
    results.jsonl as it ends), the third never starts, the views are written, exit 143."""
    scenario = tmp_path / "never-ending.toml"
    scenario.write_text(NEVER_ENDING)
    out = tmp_path / "evac"
    cli = Orchestrator(["evacuate", "--scenario", str(scenario), "--guests", "3", "--targets", "1",
                        "--per-source", "2", "--policy", "switchover-ack", "--no-progress",
                        "--out", str(out)], tmp_path / "cli")
    try:
        running = wait_running(cli.pid, 2)
        services = bound_services(cli.pid)
        time.sleep(1.5)
        cli.signal(signal.SIGTERM)
        code = cli.wait(60)
    finally:
        cli.kill()
    assert code == 143, cli.transcript()
    assert wait_gone(services, GONE_WITHIN_S) == []
    recs = journal(out / "results.jsonl")
    assert sorted(r["run_id"] for r in recs) == sorted(running)
    for rec in recs:
        assert rec["outcome"] == "cancelled" and "migbed evacuate got SIGTERM" in rec["error"]
        assert_guest_kept(rec)
    assert (out / "fleet.json").exists() and (out / "results.json").exists()
