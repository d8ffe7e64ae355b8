"""The engine and the model run the same policies, and agree on how a shipped scenario goes.

- A policy registered by a test (tests/shared_policy.py, named in MIGBED_POLICY_MODULES for
  the service processes) decides a real migration between two processes and the model's
  prediction of it, with the same words.
- Every shipped scenario, migrated for real under legacy: the decision regime (did legacy's
  stop leave the devices' setup inside the downtime?) and how pre-copy ended (the policy's
  go or a cap) are what the model predicts. The regime is read from the run as the model
  reads its own (migbed/report/decision.py), and the model's must not hinge on its one
  free input here, the wire rate: it is the same from 300 MB/s to 4 GB/s.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from migbed.core.scenario import builtin_scenario_text, builtin_scenarios, parse_scenario
from migbed.experiments.comparison import Plan, run_plan
from migbed.experiments.localstack import Service, local_stack
from migbed.measure.record import RunRecord
from migbed.model import ModelParams, predict
from migbed.report.decision import (
    measured_ending,
    measured_regime,
    measured_setup_in_downtime_s,
    predicted_ending,
)

WIRE_RATES = (300e6, 1e9, 2.5e9, 4e9)  # bytes/s; loopback here moves 0.3-2.8 GB/s


def test_a_registered_policy_runs_in_the_engine_and_the_model(registered_policy: ModuleType,
                                                              tmp_path: Path) -> None:
    name, text = registered_policy.NAME, builtin_scenario_text("tiny")
    with local_stack(tmp_path / "logs") as (source, target):  # started with the module named
        [record] = run_plan(Plan("tiny", text, [name], 1, source.address, target.address),
                            show_progress=False)
    assert record.outcome == "completed" and record.verified, record.error
    assert record.policy == name and record.decision_reason == registered_policy.REASON
    # `migbed predict` in a fresh process takes the module from the environment too
    proc = subprocess.run([sys.executable, "-m", "migbed", "predict", "tiny", "--unshaped",
                           "--policy", name, "--json"], capture_output=True, text=True,
                          timeout=120, env=os.environ)
    assert proc.returncode == 0, proc.stderr
    predicted = json.loads(proc.stdout)["outcomes"][name]
    assert predicted["reason"] == record.decision_reason
    assert predicted["basis"] == record.decision_basis == "data"
    # Waiting for the target's load kept the setup out of the downtime, in both.
    sc = parse_scenario(text, "tiny")
    assert measured_setup_in_downtime_s(record, sc) < 0.02
    assert predicted["setup_in_downtime_s"] == 0


def test_without_the_module_the_name_is_refused(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MIGBED_POLICY_MODULES"}
    proc = subprocess.run([sys.executable, "-m", "migbed", "predict", "tiny", "--policy",
                           "target-loaded"], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2
    assert "'target-loaded'" in proc.stderr and "legacy" in proc.stderr and "time-aware" in proc.stderr


@pytest.fixture(scope="module")
def legacy_runs(stack: tuple[Service, Service]) -> dict[str, RunRecord]:
    source, target = stack
    out = {}
    for name in builtin_scenarios():
        plan = Plan(name, builtin_scenario_text(name), ["legacy"], 1, source.address, target.address)
        [out[name]] = run_plan(plan, show_progress=False)
    return out


@pytest.mark.parametrize("name", builtin_scenarios())
def test_engine_and_model_agree_on_the_decision_regime(legacy_runs: dict[str, RunRecord],
                                                       name: str) -> None:
    sc = parse_scenario(builtin_scenario_text(name), name)
    record = legacy_runs[name]
    assert record.outcome == "completed" and record.verified, record.error
    predictions = [predict(sc, ["legacy"], ModelParams(wire_rate=w, shaped=False))
                   for w in WIRE_RATES]
    regimes = {p.regime for p in predictions}
    endings = {predicted_ending(p.outcomes["legacy"]) for p in predictions}
    assert len(regimes) == 1 and len(endings) == 1, f"{name}: the model's answer hinges on the wire rate"
    measured = (measured_regime(record, sc), measured_ending(record))
    assert measured == (regimes.pop(), endings.pop()), (
        f"{name}: measured {measured}, {measured_setup_in_downtime_s(record, sc) * 1e3:.0f} ms "
        f"of setup after the stop; predicted {predictions[1].setup_in_downtime_s * 1e3:.0f} ms")
