"""The fault matrix: real processes, real kill -9, real link cuts, one fault per test.

Each fault must end the migration as failed or cancelled within a bounded time, with the
source guest running again and intact (QEMU's promise: a failed migration never loses the
VM), the reason in the run record, the target's session freed, no process hung and no
port left bound; and the surviving services must still run a good migration afterwards.

Set MIGBED_FAULTS_TABLE=FILE to get the matrix with its measured results as Markdown
(docs/faults.md was made that way).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from faultlab import (
    Lab,
    NetnsLink,
    Watched,
    idle_cpu,
    in_bulk_precopy,
    kill9,
    metric_value,
    metrics_text,
    no_sessions,
    port_is_free,
    require_root,
    rss_bytes,
    scenario_toml,
    sessions,
    start_run,
    stop_cleanly,
    wait_stopped,
    wait_until,
    waiting_for_ack,
)

from migbed.experiments.controller import SourceControl
from migbed.experiments.localstack import Service
from migbed.measure.record import RunRecord

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

HB = 1.0  # heartbeat-timeout of these scenarios
# From the fault to the record on the source: the heartbeat, the abort/close graces
# (0.5 s each), the guest's resume and self-check, and slack for a loaded 2-core machine.
BOUND_S = HB + 8.0
FREE_S = HB + 8.0  # from the fault to the target's session gone

GOOD = scenario_toml("good-after-fault")


@dataclass
class Row:
    fault: str
    stage: str
    outcome: str
    reason: str
    seconds: float
    guest_ok: str
    after_ok: bool


ROWS: list[Row] = []


@pytest.fixture(scope="module", autouse=True)
def matrix_table() -> Iterator[None]:
    yield
    path = os.environ.get("MIGBED_FAULTS_TABLE")
    if not path or not ROWS:
        return
    lines = ["| fault | stage | outcome | reason in the record | fault -> record (s) | "
             "source guest running + intact | good migration after |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in ROWS:
        reason = r.reason.replace("|", "/")
        reason = re.sub(r"127\.0\.0\.1:\d+|10\.213\.\d+\.\d+:\d+", "ADDR", reason)[:120]
        lines.append(f"| {r.fault} | {r.stage} | {r.outcome} | {reason} | {r.seconds:.2f} | "
                     f"{r.guest_ok} | {'yes' if r.after_ok else 'NO'} |")
    with open(path, "a") as fh:
        fh.write("\n".join(lines) + "\n")


def check_outcome(rec: RunRecord, w: Watched, t_fault: float, outcome: str,
                  reason: str) -> float:
    assert rec.outcome == outcome, f"{rec.outcome}: {rec.error}"
    assert re.search(reason, rec.error), rec.error
    assert not rec.verified
    assert rec.source_guest_running_after, "the source guest did not run again"
    assert rec.source_integrity_ok, f"the source guest is damaged: {rec.error}"
    took = w.ended - t_fault
    assert took < BOUND_S, f"{took:.1f}s from the fault to the record"
    return took


def check_metrics(source: Service, scenario: str, policy: str, outcome: str) -> None:
    n = metric_value(metrics_text(source), "migbed_migrations_total", scenario=scenario,
                     policy=policy, outcome=outcome)
    assert n == 1.0, f"migbed_migrations_total{{outcome={outcome}}} = {n}"


def good_migration(source: Service, target: Service) -> bool:
    """The services still serve: a fresh migration completes and verifies."""
    ctl = SourceControl(source.address)
    try:
        rec = start_run(ctl, GOOD, "switchover-ack", target.address).result(120)
    finally:
        ctl.close()
    assert rec.outcome == "completed" and rec.verified, f"{rec.outcome}: {rec.error}"
    assert sessions(source.address) == []
    assert sessions(target.address) == []
    return True


def finish(lab: Lab, *alive: Service) -> None:
    """No session left, every live service stops by itself on SIGTERM, every port free."""
    for svc in alive:
        assert sessions(svc.address) == [], f"{svc.role} still has sessions"
        assert idle_cpu(svc) < 0.025, f"{svc.role} busy with nothing to do: a guest left running?"
    for svc in alive:
        stop_cleanly(svc)
    for svc in lab.services:
        assert svc.process.poll() is not None
        assert port_is_free(svc.address) or svc.address.startswith("10.")


# ---------------------------------------------------------------- the target dies


def test_kill_target_during_bulk_precopy(lab: Lab) -> None:
    ram = 256 << 20
    toml = scenario_toml("fault-bulk", guest={"ram-size": "256MiB"},
                         migration={"max-bandwidth": "32MiB/s"})  # ~8 s of bulk copy
    target, source = lab.start("target"), lab.start("source")
    ctl = SourceControl(source.address)
    w = start_run(ctl, toml, "legacy", target.address)
    w.wait_sample(in_bulk_precopy(ram), 30, "bulk pre-copy")
    t = kill9(target)
    rec = w.result(BOUND_S + 5)
    took = check_outcome(rec, w, t, "failed", r"during precopy")
    check_metrics(source, "fault-bulk", "legacy", "failed")
    ctl.close()
    target2 = lab.start("target")
    after = good_migration(source, target2)
    ROWS.append(Row("target killed (SIGKILL)", "bulk pre-copy", rec.outcome, rec.error, took,
                    "yes", after))
    finish(lab, source, target2)


def test_kill_target_while_source_waits_for_ack(lab: Lab) -> None:
    # The device's setup takes a minute: the ACK cannot come while the test runs.
    toml = scenario_toml("fault-ackwait", devices=[{
        "name": "vf0", "initial-bytes": "4MB", "stop-copy-size": "1MB",
        "load-setup-time": "60s"}], migration={"avail-switchover-bandwidth": "128MiB/s"})
    target, source = lab.start("target"), lab.start("source")
    ctl = SourceControl(source.address)
    w = start_run(ctl, toml, "switchover-ack", target.address)
    w.wait_sample(waiting_for_ack, 30, "the source waiting for the ACK")
    time.sleep(0.3)
    assert w.record is None
    t = kill9(target)
    rec = w.result(BOUND_S + 5)
    took = check_outcome(rec, w, t, "failed", r"during precopy")
    ctl.close()
    target2 = lab.start("target")
    after = good_migration(source, target2)
    ROWS.append(Row("target killed (SIGKILL)", "waiting for SWITCHOVER_ACK", rec.outcome,
                    rec.error, took, "yes", after))
    finish(lab, source, target2)


def test_kill_target_during_stop_copy(lab: Lab) -> None:
    # max-time forces the switchover with ~500 MiB of RAM left: seconds of stop-copy.
    toml = scenario_toml("fault-stopcopy", guest={"ram-size": "512MiB"},
                         migration={"max-bandwidth": "8MiB/s", "max-time": "1s"})
    target, source = lab.start("target"), lab.start("source")
    ctl = SourceControl(source.address)
    w = start_run(ctl, toml, "legacy", target.address)
    wait_stopped(source, "fault-stopcopy", "legacy", 60)
    t = kill9(target)
    rec = w.result(BOUND_S + 5)
    took = check_outcome(rec, w, t, "failed", r"during stop-copy")
    assert rec.downtime_ms == 0  # never completed
    ctl.close()
    target2 = lab.start("target")
    after = good_migration(source, target2)
    ROWS.append(Row("target killed (SIGKILL)", "stop-copy (guest stopped)", rec.outcome,
                    rec.error, took, "yes", after))
    finish(lab, source, target2)


# ---------------------------------------------------------------- the source dies


@pytest.mark.parametrize("stage", ["bulk pre-copy", "stop-copy"])
def test_kill_source_target_frees_session(lab: Lab, stage: str) -> None:
    name = "fault-src-" + stage.split()[0].replace("-", "")
    if stage == "stop-copy":
        toml = scenario_toml(name, guest={"ram-size": "512MiB"},
                             migration={"max-bandwidth": "8MiB/s", "max-time": "1s"})
    else:
        toml = scenario_toml(name, guest={"ram-size": "256MiB"},
                             migration={"max-bandwidth": "32MiB/s"})
    target, source = lab.start("target"), lab.start("source")
    ctl = SourceControl(source.address)
    w = start_run(ctl, toml, "legacy", target.address)
    if stage == "stop-copy":
        wait_stopped(source, name, "legacy", 60)
    else:
        w.wait_sample(in_bulk_precopy(256 << 20), 30, "bulk pre-copy")
    assert sessions(target.address) == [w.run_id]
    held = rss_bytes(target.process.pid)
    t = kill9(source)
    wait_until(lambda: no_sessions(target.address), FREE_S, "the target to free the session")
    took = time.monotonic() - t
    # ...and its memory: the guest's RAM (256 or 512 MiB, resident on the target) is gone.
    wait_until(lambda: held - rss_bytes(target.process.pid) > 128 << 20, 10,
               "the target to free the guest's memory")
    ctl.close()
    assert port_is_free(source.address)
    source2 = lab.start("source")
    after = good_migration(source2, target)
    ROWS.append(Row("source killed (SIGKILL)", stage, "target session freed",
                    "(the source is gone: no record; target Status lists no session, its "
                    "memory is freed)", took, "n/a (source killed)", after))
    finish(lab, source2, target)


# ---------------------------------------------------------------- a load that never finishes


NEVER = [{"name": "vf0", "initial-bytes": "4MB", "stop-copy-size": "1MB",
          "load-setup-time": "600s"}]  # the longest a scenario allows: never, for a test


def test_load_never_finishes_ack_timeout_cancels(lab: Lab) -> None:
    toml = scenario_toml("fault-noload-timeout", devices=NEVER, migration={
        "avail-switchover-bandwidth": "128MiB/s", "switchover-ack-timeout": "1s",
        "ack-timeout-action": "cancel"})
    target, source = lab.start("target"), lab.start("source")
    ctl = SourceControl(source.address)
    w = start_run(ctl, toml, "switchover-ack", target.address)
    s = w.wait_sample(waiting_for_ack, 30, "the source waiting for the ACK")
    t = w.started + s.t_ms / 1e3  # roughly when the wait began
    rec = w.result(30)
    took = check_outcome(rec, w, t, "cancelled", r"no SWITCHOVER_ACK within 1s")
    wait_until(lambda: no_sessions(target.address), FREE_S, "the target to free the session")
    ctl.close()
    after = good_migration(source, target)
    ROWS.append(Row("device load never finishes (setup 600 s)",
                    "waiting for SWITCHOVER_ACK, switchover-ack-timeout 1 s, action cancel",
                    rec.outcome, rec.error, took, "yes", after))
    finish(lab, source, target)


def test_load_never_finishes_no_timeout_user_cancel(lab: Lab) -> None:
    # QEMU 8.1: no ACK timeout, the source waits for ever; the user cancels (migbed cancel).
    toml = scenario_toml("fault-noload-wait", devices=NEVER,
                         migration={"avail-switchover-bandwidth": "128MiB/s"})
    target, source = lab.start("target"), lab.start("source")
    ctl = SourceControl(source.address)
    w = start_run(ctl, toml, "switchover-ack", target.address)
    w.wait_sample(waiting_for_ack, 30, "the source waiting for the ACK")
    time.sleep(2.0)
    assert w.record is None, "without an ACK timeout the source must keep waiting"
    t = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "migbed.cli.main", "cancel",
                          source.address, w.run_id, "--reason", "operator gave up"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "cancelled" in out.stdout, out.stdout + out.stderr
    rec = w.result(BOUND_S + 5)
    took = check_outcome(rec, w, t, "cancelled", r"operator gave up")
    wait_until(lambda: no_sessions(target.address), FREE_S, "the target to free the session")
    ctl.close()
    after = good_migration(source, target)
    ROWS.append(Row("device load never finishes (setup 600 s)",
                    "waiting for SWITCHOVER_ACK, no timeout (8.1): `migbed cancel`",
                    rec.outcome, rec.error, took, "yes", after))
    finish(lab, source, target)


def test_load_never_finishes_legacy_cancel_while_resuming(lab: Lab) -> None:
    # legacy switches over regardless; the target never resumes; the user cancels. The
    # initial image outlasts the threshold, so part of it goes in pre-copy (and its setup
    # starts) before the switchover.
    toml = scenario_toml("fault-noload-legacy", devices=[{**NEVER[0], "initial-bytes": "64MB"}],
                         migration={"max-bandwidth": "64MiB/s"})
    target, source = lab.start("target"), lab.start("source")
    ctl = SourceControl(source.address)
    w = start_run(ctl, toml, "legacy", target.address)
    wait_stopped(source, "fault-noload-legacy", "legacy", 30)
    time.sleep(1.5)
    assert w.record is None
    t = time.monotonic()
    reply = ctl.cancel(w.run_id, "target never resumed")
    assert reply.cancelled, reply
    rec = w.result(BOUND_S + 5)
    took = check_outcome(rec, w, t, "cancelled", r"target never resumed")
    wait_until(lambda: no_sessions(target.address), FREE_S, "the target to free the session")
    ctl.close()
    after = good_migration(source, target)
    ROWS.append(Row("device load never finishes (setup 600 s)",
                    "legacy: switched over, waiting for the target's resume; Control.Cancel",
                    rec.outcome, rec.error, took, "yes", after))
    finish(lab, source, target)


# ---------------------------------------------------------------- the link is cut


@pytest.mark.parametrize("stage", ["bulk pre-copy", "waiting for SWITCHOVER_ACK", "stop-copy"])
def test_link_cut_and_restored(lab: Lab, stage: str) -> None:
    require_root("a link cut (network namespace + veth)")
    name = "fault-cut-" + stage.split()[0].replace("-", "")
    with NetnsLink() as link:
        target = lab.start("target", host=link.ns_ip, wrapper=link.wrapper)
        source = lab.start("source")
        ctl = SourceControl(source.address)
        if stage.startswith("bulk"):
            toml = scenario_toml(name, guest={"ram-size": "256MiB"},
                                 migration={"max-bandwidth": "32MiB/s"})
            w = start_run(ctl, toml, "legacy", target.address)
            w.wait_sample(in_bulk_precopy(256 << 20), 30, "bulk pre-copy")
        elif stage == "stop-copy":  # the guest is stopped: a blocked write must not hang
            toml = scenario_toml(name, guest={"ram-size": "512MiB"},
                                 migration={"max-bandwidth": "8MiB/s", "max-time": "1s"})
            w = start_run(ctl, toml, "legacy", target.address)
            wait_stopped(source, name, "legacy", 60)
        else:
            toml = scenario_toml(name, devices=NEVER,
                                 migration={"avail-switchover-bandwidth": "128MiB/s"})
            w = start_run(ctl, toml, "switchover-ack", target.address)
            w.wait_sample(waiting_for_ack, 30, "the source waiting for the ACK")
        t = link.cut()
        rec = w.result(BOUND_S + 5)
        took = check_outcome(rec, w, t, "failed",
                             r"silent for|took no data|during (precopy|setup|stop-copy)")
        if stage == "stop-copy":
            assert rec.event_time("completed") is None, "stop-copy ended before the cut"
        # The target, behind the cut, frees the session by its own heartbeat timeout: seen
        # from inside its namespace while the link is still down.
        wait_until(lambda: link.sessions_inside(target.address) == [], HB + 8,
                   "the target to free the session behind the cut", every=0.2)
        freed = time.monotonic() - t
        cut_for = link.restore() - t
        assert freed < cut_for
        wait_until(lambda: no_sessions(target.address), 15, "the target to free the session")
        ctl.close()
        after = good_migration(source, target)
        ROWS.append(Row("link cut (veth down in the target's netns), restored after "
                        f"{cut_for:.0f} s", stage, rec.outcome, rec.error, took,
                        "yes", after))
        finish(lab, source, target)
    assert link.leftovers() == []
