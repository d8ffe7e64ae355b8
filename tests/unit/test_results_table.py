"""The results table's "switched on" column reads the record's typed decision_basis."""

from __future__ import annotations

from migbed.measure.record import RunRecord
from migbed.report.summary import results_table, switched_on


def run(basis: str, forced: str = "", reason: str = "") -> RunRecord:
    return RunRecord("r", "s", "time-aware", 0, "completed", decision_reason=reason,
                     decision_basis=basis, forced_by_cap=forced)


def test_switched_on_is_the_typed_basis_not_the_reason() -> None:
    # A reason that reads like another basis changes nothing: the text is for humans.
    assert switched_on([run("floor", reason="predicted downtime 80 ms fits 300 ms")]) == "floor"
    assert switched_on([run("prediction"), run("prediction")]) == "prediction"
    assert switched_on([run("prediction"), run("data (no prediction)")]) == (
        "prediction 1/2, data (no prediction) 1/2")


def test_a_forced_switchover_names_its_cap() -> None:
    assert switched_on([run("cap", forced="max-iterations")]) == "max-iterations"


def test_a_record_from_before_the_field_shows_unknown() -> None:
    old = RunRecord.from_dict({k: v for k, v in run("", reason="pending 1 B < threshold 2 B").to_dict().items()
                               if k != "decision_basis"})
    assert switched_on([old]) == "unknown"
    assert switched_on([]) == "-"
    assert results_table([old]).splitlines()[2].endswith("unknown")
