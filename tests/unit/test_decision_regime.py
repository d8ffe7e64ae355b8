"""The decision regime of a measured legacy run (migbed/report/decision.py), by the model's rule."""

from __future__ import annotations

from migbed.core.scenario import resolve_scenario
from migbed.measure.record import Event, RunRecord
from migbed.model.predict import CAPPED
from migbed.report.decision import measured_ending, measured_regime


def legacy_run(forced_by_cap: str, loaded_ms: float) -> RunRecord:
    return RunRecord("r", "cover-letter", "legacy", 0, "completed", verified=True,
                     forced_by_cap=forced_by_cap,
                     events=[Event(loaded_ms, "initial-loaded:vf0"), Event(3000.0, "stop")])


def test_a_stop_forced_by_a_cap_is_its_own_regime() -> None:
    sc = resolve_scenario("cover-letter")
    # The setup was loaded long before the stop: "absorbed" if legacy's rule had switched;
    # a cap forced the stop, so the rule never fired: "capped", whatever the setup did.
    assert measured_regime(legacy_run("", 1700.0), sc) == "absorbed"
    capped = legacy_run("max-iterations", 1700.0)
    assert measured_regime(capped, sc) == CAPPED == "capped"
    assert measured_ending(capped) == "max-iterations"
    # ...and after the stop, still "capped" (not "in-downtime").
    assert measured_regime(legacy_run("max-time", 3500.0), sc) == "capped"
