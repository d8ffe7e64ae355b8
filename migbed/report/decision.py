"""The decision regime of measured runs, classified as the model classifies its predictions.

- regime: did legacy's stop leave the devices' setup and initial load inside the downtime
  ("in-downtime") or did pre-copy absorb it ("absorbed")? Or did legacy's data never fit,
  so that a cap forced the stop ("capped")? The rule is the model's
  (migbed.model.predict.regime_of); the measured amount is, per device with initial bytes,
  the time from the stop to the target's `initial-loaded:<device>` event (recorded by the
  source from the target's DeviceLoadProgress, on the source's clock), or its whole
  initial load cost when the target never reported it loaded in pre-copy (the initial image
  went out in the stop-copy, without INIT_DATA_SENT).
- ending: how pre-copy ended: "policy" (the policy said go), the cap that forced it
  ("max-iterations", "max-time"), or the run's outcome when it did not complete.
"""

from __future__ import annotations

from migbed.core.scenario import Scenario
from migbed.measure.record import RunRecord
from migbed.model.precopy import Outcome
from migbed.model.predict import regime_of


def _event_ms(record: RunRecord, name: str) -> float | None:
    return next((e.t_ms for e in record.events if e.name == name), None)


def device_initial_cost_s(scenario: Scenario) -> dict[str, float]:
    """s each device with initial bytes spends on its setup and initial image."""
    return {d.name: d.load_setup_time + d.initial_bytes / d.load_rate
            for d in scenario.devices if d.initial_bytes > 0}


def measured_setup_in_downtime_s(record: RunRecord, scenario: Scenario) -> float:
    """s of the devices' setup and initial load that ran after the stop (see the module)."""
    stop = _event_ms(record, "stop")
    if stop is None:
        raise ValueError(f"run {record.run_id}: no stop event (outcome {record.outcome})")
    total = 0.0
    for name, cost in device_initial_cost_s(scenario).items():
        loaded = _event_ms(record, f"initial-loaded:{name}")
        total += cost if loaded is None else max(0.0, loaded - stop) / 1e3
    return total


def measured_regime(legacy: RunRecord, scenario: Scenario) -> str:
    """The regime a completed legacy run shows: in-downtime | absorbed | capped | unknown."""
    if legacy.outcome != "completed":
        return "unknown"
    cost = sum(device_initial_cost_s(scenario).values())
    return regime_of(measured_setup_in_downtime_s(legacy, scenario), cost, legacy.forced_by_cap)


def measured_ending(record: RunRecord) -> str:
    if record.outcome != "completed":
        return record.outcome
    return record.forced_by_cap or "policy"


def predicted_ending(outcome: Outcome) -> str:
    if outcome.outcome != "completed":
        return outcome.outcome
    return outcome.forced_by_cap or "policy"
