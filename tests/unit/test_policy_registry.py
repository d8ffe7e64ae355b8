"""One registry of policies: what the engine runs, the model runs (migbed/model decides with the
policy objects of migbed/core/policy.py on an Observation filled from its own state), and
every interface refuses a name it does not hold, naming the ones it does."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from types import ModuleType

import pytest

from migbed.cli.main import main
from migbed.cli.plugins import PluginError, load_policy_modules
from migbed.core.policy import (
    POLICIES,
    POLICY_REGISTRY,
    Decision,
    Observation,
    Policy,
    make_policy,
    policy_names,
    register_policy,
    unregister_policy,
)
from migbed.core.scenario import builtin_scenario_text, parse_scenario
from migbed.core.start import StartInputError, check_policy
from migbed.model import ModelParams, inputs_from, predict, simulate

WIRE = ModelParams(wire_rate=1e9, shaped=False)


def tiny_inputs(**migration: str):  # type: ignore[no-untyped-def]
    text = builtin_scenario_text("tiny")
    for key, value in migration.items():
        text = text.replace("[migration]\n", f"[migration]\n{key} = {value}\n")
    return inputs_from(parse_scenario(text, "tiny"), WIRE)


class Recorder(Policy):
    """switchover-ack's rule, keeping every Observation it is asked about."""

    name = "recorder"
    needs_ack = True
    seen: list[Observation] = []

    def decide(self, obs: Observation) -> Decision:
        Recorder.seen.append(obs)
        return make_policy("switchover-ack").decide(obs)


@pytest.fixture
def recorder() -> Iterator[type[Recorder]]:
    Recorder.seen = []
    register_policy(Recorder, "switchover-ack, recording what it saw")
    try:
        yield Recorder
    finally:
        unregister_policy("recorder")


def test_a_registered_policy_decides_in_the_model(recorder: type[Recorder]) -> None:
    inp = tiny_inputs()
    mine, ack = simulate(inp, "recorder"), simulate(inp, "switchover-ack")
    # The same rule on the same observations: the same migration, decided by the object.
    assert mine.policy == "recorder" and mine.stop_s == ack.stop_s
    assert mine.reason == ack.reason and mine.outcome == "completed"
    seen = recorder.seen
    assert seen and all(o.pending_exact for o in seen)


def test_the_models_observation_holds_what_the_engine_fills(recorder: type[Recorder]) -> None:
    inp = tiny_inputs()
    simulate(inp, "recorder")
    seen, last = recorder.seen, recorder.seen[-1]
    for o in seen:
        assert o.bandwidth == pytest.approx(inp.avail_bandwidth)
        assert o.threshold_bytes == pytest.approx(inp.avail_bandwidth * inp.downtime_limit)
        assert o.downtime_limit_s == inp.downtime_limit and not o.threshold_inclusive
        [dev] = o.devices
        # MIG_DATA_SIZE counts the unsent pre-copy bytes too, as the source driver does
        assert dev.stop_copy_bytes >= dev.initial_bytes_left + dev.dirty_bytes
    syncs = [o.dirty_sync_count for o in seen]
    assert syncs == sorted(syncs) and len(set(syncs)) == len(syncs)
    # Waiting for the ACK: the wait is counted from the first fit, and the target's view of
    # the device moves from loading (setup + initial image) to loaded, at a measured rate
    # that includes the setup (what the target's busy time shows).
    waits = [o for o in seen if not o.ack_received]
    assert waits and waits[0].ack_wait_s == 0 and waits[-1].ack_wait_s > 0.2
    assert any(o.devices[0].target.loading for o in waits)
    assert last.ack_received and last.devices[0].target.initial_loaded
    tgt = last.devices[0].target
    [d] = inp.devices
    assert tgt.loaded_bytes >= d.initial
    assert tgt.busy_s >= d.setup + d.initial / d.load_rate - 1e-9
    assert 0 < tgt.measured_load_rate < d.load_rate
    assert tgt.initial_load_s >= d.setup


def test_time_aware_is_the_policy_object_not_a_look_ahead() -> None:
    out = simulate(tiny_inputs(), "time-aware")
    # TimeAware.decide's own words and figure: the prediction from observed load rates
    assert out.reason.startswith("predicted downtime") and "fits" in out.reason
    assert out.basis == "prediction"  # the Decision's, as the engine records it
    assert 0 < out.predicted_downtime_s <= 0.1


def test_the_switchover_ack_timeout_is_the_policys() -> None:
    inp = tiny_inputs(**{"switchover-ack-timeout": '"100ms"', "ack-timeout-action": '"cancel"'})
    out = simulate(inp, "switchover-ack")
    assert out.outcome == "cancelled" and "no SWITCHOVER_ACK within 0.1s" in out.reason
    assert out.basis == "data"
    legacy = simulate(tiny_inputs(**{"switchover-ack-timeout": '"100ms"',
                                     "ack-timeout-action": '"legacy"'}), "switchover-ack")
    assert legacy.outcome == "completed" and "legacy fallback" in legacy.reason
    assert legacy.basis == "data"


def test_switchover_ack_forces_the_return_path_in_the_model() -> None:
    inp = tiny_inputs(**{"return-path": "false"})
    legacy, ack = simulate(inp, "legacy"), simulate(inp, "switchover-ack")
    # legacy ends its downtime at the last byte; switchover-ack, as in the engine, at SHUT
    # (once the destination has loaded everything)
    assert legacy.load_after_last_byte_s > 0.01 and ack.load_after_last_byte_s > 0.01
    assert legacy.downtime_s == pytest.approx(
        legacy.guest_downtime_s - legacy.resume_s - legacy.load_after_last_byte_s)
    assert ack.downtime_s == pytest.approx(ack.guest_downtime_s - ack.resume_s)


@pytest.mark.parametrize("where", ["make_policy", "simulate", "predict", "start"])
def test_an_unknown_policy_is_refused_naming_the_allowed(where: str) -> None:
    calls = {
        "make_policy": lambda: make_policy("bogus"),
        "simulate": lambda: simulate(tiny_inputs(), "bogus"),
        "predict": lambda: predict(parse_scenario(builtin_scenario_text("tiny")), ["bogus"]),
        "start": lambda: check_policy("bogus"),
    }
    with pytest.raises((ValueError, StartInputError)) as e:
        calls[where]()
    assert "'bogus'" in str(e.value) and all(p in str(e.value) for p in POLICIES)


def test_migbed_predict_refuses_bogus(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["predict", "tiny", "--policy", "bogus"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--policy" in err and "'bogus'" in err
    assert all(p in err for p in POLICIES) and "Traceback" not in err


def test_a_registered_policy_is_taken_everywhere(registered_policy: ModuleType,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    name = registered_policy.NAME
    assert name in policy_names() and check_policy(name) == name
    assert main(["predict", "tiny", "--unshaped", "--policy", name, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)["outcomes"][name]
    assert out["reason"] == registered_policy.REASON and out["setup_in_downtime_s"] == 0
    assert out["basis"] == "data"  # the prediction's JSON carries the typed basis too
    with pytest.raises(ValueError, match=r"unknown policy 'bogus'.*target-loaded"):
        make_policy("bogus")


def test_registry_refuses_what_it_cannot_hold() -> None:
    class Nameless(Policy):
        name = "Not A Name"

    class Taken(Policy):
        name = "legacy"

    with pytest.raises(ValueError, match="a-z"):
        register_policy(Nameless, "x")
    with pytest.raises(ValueError, match="already registered"):
        register_policy(Taken, "x")
    with pytest.raises(ValueError, match="subclass"):
        register_policy(dict, "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ships with migbed"):
        unregister_policy("legacy")
    assert tuple(POLICY_REGISTRY) == POLICIES


def test_a_plugin_module_that_does_not_import_is_named() -> None:
    with pytest.raises(PluginError, match="MIGBED_POLICY_MODULES: module 'no_such_mod'"):
        load_policy_modules({"MIGBED_POLICY_MODULES": "no_such_mod"})
    assert load_policy_modules({}) == []


def test_model_outputs_stay_finite_where_defined() -> None:
    for policy in POLICIES:
        o = simulate(tiny_inputs(), policy)
        assert o.outcome == "completed" and math.isfinite(o.guest_downtime_s)
