"""A cell's prediction: every policy's migration, the regime, the legacy penalty, the ACK's cost.

The regime is a property of the scenario, read off the legacy rule: "absorbed" when the
device's setup and initial load are over before legacy stops the VM (pre-copy hides them;
switchover-ack gains nothing), "in-downtime" when more than 10 ms and 10 % of them run
after the stop, "capped" when legacy's pending data never fits the threshold and only a cap
(max-iterations, max-time) ends pre-copy: then where the setup lands says nothing about the
rule, and real QEMU, which has no such cap, would iterate on (with mlx5's whole-state
MIG_DATA_SIZE above the threshold, every policy of QEMU's is there).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from migbed.core.scenario import Scenario
from migbed.model.inputs import Inputs, ModelParams, inputs_from
from migbed.model.precopy import Outcome, simulate

# Absorbed: what of the devices' setup and initial load runs after the stop is at most
# this, or this share of it (per-chunk loads leave the last buffered chunks' loads over).
REGIME_EPS_S = 0.010
REGIME_SHARE = 0.10


@dataclass(frozen=True)
class CellPrediction:
    outcomes: dict[str, Outcome]  # by policy; always holds legacy and switchover-ack
    regime: str  # absorbed | in-downtime | capped | unknown (legacy did not complete)
    setup_in_downtime_s: float  # under legacy
    legacy_penalty_s: float  # guest downtime, legacy minus switchover-ack
    legacy_penalty_qemu_s: float  # QEMU-reported downtime, legacy minus switchover-ack
    ack_cost_s: float  # total time, switchover-ack minus legacy

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: NaN and infinity (undefined, never) become None."""
        d = {k: _finite(v) for k, v in asdict(self).items() if k != "outcomes"}
        d["outcomes"] = {p: {k: _finite(v) for k, v in asdict(o).items()} for p, o in self.outcomes.items()}
        return d


def _finite(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def initial_load_cost(inp: Inputs) -> float:
    """s the destination spends on the devices' setups and initial images."""
    return sum(d.setup + d.initial / d.load_rate for d in inp.devices if d.initial > 0)


CAPPED = "capped"


def regime_of(setup_in_downtime_s: float, initial_load_cost_s: float, forced_by_cap: str = "") -> str:
    """capped | in-downtime | absorbed: legacy's data never fitted (a cap forced its stop),
    or how much of the devices' setup and initial load (of initial_load_cost_s in all) ran
    after legacy's stop. The model's predictions and the measured runs
    (migbed/report/decision.py) are classified by this one rule."""
    if forced_by_cap:
        return CAPPED
    if setup_in_downtime_s > max(REGIME_EPS_S, REGIME_SHARE * initial_load_cost_s):
        return "in-downtime"
    return "absorbed"


def predict_inputs(inp: Inputs, policies: list[str] | tuple[str, ...]) -> CellPrediction:
    wanted = list(dict.fromkeys([*policies, "legacy", "switchover-ack"]))
    outcomes = {p: simulate(inp, p) for p in wanted}
    leg, ack = outcomes["legacy"], outcomes["switchover-ack"]
    regime = ("unknown" if leg.outcome != "completed"
              else regime_of(leg.setup_in_downtime_s, initial_load_cost(inp), leg.forced_by_cap))
    return CellPrediction(
        outcomes, regime, leg.setup_in_downtime_s,
        leg.guest_downtime_s - ack.guest_downtime_s, leg.downtime_s - ack.downtime_s,
        ack.total_time_s - leg.total_time_s)


def predict(scenario: Scenario, policies: list[str] | tuple[str, ...],
            params: ModelParams | None = None) -> CellPrediction:
    """Predict `scenario` under each of `policies` (legacy and switchover-ack always)."""
    return predict_inputs(inputs_from(scenario, params), policies)


def regime_text(pred: CellPrediction) -> str:
    """The regime in words, for a person: what legacy's rule did in this cell."""
    leg = pred.outcomes["legacy"]
    if pred.regime == CAPPED:
        return (f"capped: legacy's data never fits the threshold, pre-copy ends on "
                f"{leg.forced_by_cap} (real QEMU, with no such cap, iterates on)")
    if pred.regime == "unknown":
        return f"unknown: legacy did not complete ({leg.outcome})"
    return pred.regime
