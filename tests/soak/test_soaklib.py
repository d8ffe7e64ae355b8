"""The soak's pure parts: the generator (seeded, valid scenarios, every fault kind drawn)
and the checker (which run endings break a promise)."""

from __future__ import annotations

import json
from collections import Counter

from soaklib import (
    CLI_FAULT_KINDS,
    FAULT_KINDS,
    NEMESIS_REASON,
    Fault,
    Generator,
    Summary,
    check_cli_run,
    check_record,
)

from migbed.core.scenario import parse_scenario
from migbed.measure.record import RunRecord


def test_same_seed_same_sequence_other_seed_other_sequence() -> None:
    def draw(seed: int) -> list[object]:
        g = Generator(seed)
        return [(g.migration(i), g.fault()) for i in range(30)]
    assert draw(7) == draw(7)
    assert draw(7) != draw(8)


def test_every_generated_scenario_parses_and_covers_the_space() -> None:
    g = Generator(11)
    seen: Counter[str] = Counter()
    for i in range(300):
        plan = g.migration(i)
        sc = parse_scenario(plan.toml)  # raises on an invalid combination
        m = sc.migration
        seen[plan.policy] += 1
        seen[f"multifd={m.multifd}"] += 1
        seen[f"transfer={m.device_state_transfer}"] += 1
        seen[f"devices={min(len(sc.devices), 1)}"] += 1
        if m.device_state_transfer == "multifd":
            assert m.multifd and m.qemu_version == "10.0"
    for key in ("legacy", "initial-bytes-sent", "switchover-ack", "time-aware", "multifd=True",
                "multifd=False", "transfer=main", "transfer=multifd", "devices=0", "devices=1"):
        assert seen[key] > 0, f"300 draws never gave {key}: {seen}"


def test_each_round_of_faults_holds_every_kind_once() -> None:
    g = Generator(5, fault_share=1.0)
    faults = [g.fault() for _ in range(3 * len(FAULT_KINDS))]
    kinds = [f.kind for f in faults if f is not None]
    n = len(FAULT_KINDS)
    for r in range(3):
        assert sorted(kinds[r * n:(r + 1) * n]) == sorted(FAULT_KINDS)
    for f in faults:
        assert f is not None and 0.05 <= f.delay_s <= 1.5
        if f.kind.startswith("freeze"):
            assert 0.2 <= f.hold_s <= 3.0
    no_cut = Generator(5, kinds=tuple(k for k in FAULT_KINDS if k != "cut-link"), fault_share=1.0)
    assert all(f is not None and f.kind != "cut-link" for f in (no_cut.fault() for _ in range(30)))
    assert all(f is None for f in (Generator(5, fault_share=0.0).fault() for _ in range(30)))


def rec(outcome: str, verified: bool = False, running: bool = True, intact: bool = True,
        error: str = "") -> RunRecord:
    r = RunRecord(run_id="r", scenario="s", policy="legacy", repeat=0, outcome=outcome,
                  error=error, verified=verified)
    r.source_guest_running_after = running
    r.source_integrity_ok = intact
    return r


def test_checker_accepts_the_promised_endings() -> None:
    assert check_record(rec("completed", verified=True), "", "", None) == []
    assert check_record(rec("failed", error="target silent"), "", "kill-target", None) == []
    assert check_record(rec("cancelled", error=NEMESIS_REASON), "", "cancel",
                        (True, "precopy")) == []
    assert check_record(rec("completed", verified=True), "", "cancel", (False, "completing")) == []
    assert check_record(None, "lost the source", "kill-source", None) == []


def test_checker_names_each_broken_promise() -> None:
    def one(*args: object) -> str:
        out = check_record(*args)  # type: ignore[arg-type]
        assert len(out) == 1, out
        return out[0]
    assert "not verified" in one(rec("completed"), "", "", None)
    assert "not running" in one(rec("failed", running=False), "", "kill-target", None)
    assert "damaged" in one(rec("cancelled", intact=False), "", "freeze-target", None)
    assert "no fault injected" in one(rec("failed", error="x"), "", "", None)
    assert "no record" in one(None, "lost the source", "kill-target", None)
    assert "cancelled=true" in one(rec("completed", verified=True), "", "cancel",
                                   (True, "completing"))
    assert "cancelled=false" in one(rec("cancelled", error=NEMESIS_REASON), "", "cancel",
                                    (False, "completing"))
    assert "unknown outcome" in one(rec("exploded"), "", "", None)


def test_summary_as_json() -> None:
    s = Summary(seed=3, command="bench/soak.py --seed 3")
    s.faults["kill-source"] += 2
    s.outcomes["completed"] += 1
    d = json.loads(json.dumps(s.as_dict()))
    assert d["faults"] == {"kill-source": 2} and d["outcomes"] == {"completed": 1}
    assert d["seed"] == 3 and d["violations"] == []


def test_orchestrator_faults_go_through_migbed_run() -> None:
    g = Generator(9, fault_share=1.0)
    for _ in range(30):
        f = g.fault()
        assert f is not None and g.via_cli(f) == (f.kind in CLI_FAULT_KINDS)
    none = Generator(9, fault_share=0.0)
    share = sum(none.via_cli(none.fault()) for _ in range(400)) / 400
    assert 0.1 < share < 0.3  # some runs without a fault go through `migbed run` too
    assert Generator(4).via_cli(Fault("kill-target", 0.1, 0.0)) is False


def cli_rec(run_id: str, outcome: str, error: str = "", verified: bool = False,
            kept: bool = True, by: str = "") -> dict:
    return {"run_id": run_id, "outcome": outcome, "error": error, "verified": verified,
            "source_guest_running_after": kept, "source_integrity_ok": kept,
            "labels": {"recorded-by": by} if by else {}}


def test_cli_checker_accepts_the_promised_endings() -> None:
    ok = [cli_rec("r", "completed", verified=True)]
    assert check_cli_run("", 0, ["r"], ok, []) == []
    assert check_cli_run("term-cli", 143, ["r"], [cli_rec(
        "r", "cancelled", "migbed run got SIGTERM (pid 7)")], []) == []
    assert check_cli_run("term-cli", 143, ["r"], ok, []) == []  # past the switchover
    assert check_cli_run("kill-cli", -9, ["r"], [cli_rec(
        "r", "cancelled", "the orchestrator (pid 7) that started this service died",
        by="source service (its orchestrator died)")], []) == []
    assert check_cli_run("kill-cli-source", 3, ["r"], [cli_rec(
        "r", "failed", "lost the source 127.0.0.1:1 while ...", kept=False,
        by="orchestrator")], []) == []


def test_cli_checker_names_each_broken_promise() -> None:
    def one(*args: object) -> str:
        out = check_cli_run(*args)  # type: ignore[arg-type]
        assert len(out) == 1, out
        return out[0]
    ok = [cli_rec("r", "completed", verified=True)]
    assert "did not exit" in one("", None, ["r"], ok, [])
    assert "outlived the CLI" in one("kill-cli", -9, ["r"], ok, [4242])
    assert "records for []" in one("kill-cli", -9, ["r"], [], [])
    assert "records for ['r', 'r']" in one("", 0, ["r"], ok + ok, [])
    assert "not whole" in one("kill-cli", -9, ["r"], [], [], "Expecting value")
    assert "exit code 0, expected -15 or 143" in one("term-cli", 0, ["r"], ok, [])
    assert "exit code 1, expected 3" in one("kill-cli-source", 1, ["r"], [cli_rec(
        "r", "failed", "lost the source x", kept=False, by="orchestrator")], [])
    assert "not running intact" in one("term-cli", 143, ["r"], [cli_rec(
        "r", "cancelled", "migbed run got SIGTERM", kept=False)], [])
    assert "signal named" in one("term-cli", 143, ["r"], [cli_rec("r", "cancelled", "x")], [])
    assert "orchestrator's record" in one("", 3, ["r"], [cli_rec(
        "r", "failed", "lost the source x", kept=False, by="orchestrator")], [])
