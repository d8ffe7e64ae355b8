"""The pre-copy rate as a model input apart from the wire (final-copy) rate.

The engine's pre-copy RAM goes slower than its final copy (dirty-bitmap scans, 50 ms rounds,
checks): at the final-copy rate the model sends nearly all of the RAM before the device's
image completes on the 4 GiB/s cells of setup-vs-bandwidth and stops inside its setup; at the
slower pre-copy rate RAM is still left when the image completes, so pre-copy absorbs it.
"""

from __future__ import annotations

import pytest

from migbed.cli.main import main
from migbed.core.scenario import parse_scenario
from migbed.experiments.sweep import _bulk_stage_rate, load_sweep
from migbed.measure.record import Event, RunRecord
from migbed.model import ModelParams, inputs_from, predict
from migbed.model.inputs import link_goodput

FINAL_COPY = 2471e6  # the wire rate measured for docs/sweeps.md's Accuracy table
PRECOPY = 1.6 * 1024**3  # the engine's pre-copy RAM in one run of that cell (163 MiB / 103 ms)


def _cell(bandwidth: str, setup: str) -> str:
    spec = load_sweep("setup-vs-bandwidth")
    for cell in spec.cells():
        if cell.values == {"migration.max-bandwidth": bandwidth, "device.vf0.load-setup-time": setup}:
            return cell.text
    raise AssertionError(f"no cell {bandwidth}/{setup} in setup-vs-bandwidth")


def _predict(text: str, precopy_rate: float | None) -> dict[str, object]:
    params = ModelParams(wire_rate=FINAL_COPY, precopy_rate=precopy_rate, shaped=False)
    return predict(parse_scenario(text, "cell"), ["legacy", "switchover-ack"], params).to_dict()


@pytest.mark.parametrize("unset", [None, 0.0])
@pytest.mark.parametrize(("bandwidth", "setup"), [("4GiB/s", "1500ms"), ("64MiB/s", "400ms")])
def test_no_precopy_rate_is_the_wire_rate(unset: float | None, bandwidth: str, setup: str) -> None:
    text = _cell(bandwidth, setup)
    assert _predict(text, unset) == _predict(text, FINAL_COPY)


def test_the_stop_copy_keeps_the_wire_rate() -> None:
    inp = inputs_from(parse_scenario(_cell("4GiB/s", "1500ms"), "cell"),
                      ModelParams(wire_rate=FINAL_COPY, precopy_rate=PRECOPY, shaped=False))
    assert (inp.precopy_wire, inp.stop_wire) == (PRECOPY, FINAL_COPY)


def test_a_shaped_link_sets_the_precopy_rate_too() -> None:
    sc = parse_scenario(_cell("4GiB/s", "1500ms"), "cell")
    assert sc.link.rate > 0  # mlx5-like's [link]: shaped unless the runs are local
    inp = inputs_from(sc, ModelParams(wire_rate=FINAL_COPY, precopy_rate=PRECOPY))
    assert inp.precopy_wire == inp.stop_wire == link_goodput(sc, inp.params)


def test_a_slower_precopy_absorbs_legacys_setup_at_4_gib_s() -> None:
    text = _cell("4GiB/s", "1500ms")
    before, after = _predict(text, None), _predict(text, PRECOPY)
    assert before["regime"] == "in-downtime"
    assert after["regime"] == "absorbed"
    legacy = after["outcomes"]["legacy"]  # type: ignore[index]
    assert legacy["guest_downtime_s"] < 0.1 < before["outcomes"]["legacy"]["guest_downtime_s"]  # type: ignore[index]


@pytest.mark.parametrize("command", [["predict", "tiny"], ["sweep", "--predict", "--scenario", "tiny",
                                                           "--vary", "guest.dirty-rate=1MiB/s"]])
@pytest.mark.parametrize("value", ["fast", "100MB", "0MB/s", "-5MB/s"])
def test_bad_precopy_rates_are_refused_naming_the_flag(capsys: pytest.CaptureFixture[str],
                                                       command: list[str], value: str) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*command, f"--precopy-rate={value}"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--precopy-rate" in err and "Traceback" not in err


def test_predict_takes_a_precopy_rate(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", "tiny", "--unshaped", "--wire-rate", "800MB/s", "--precopy-rate", "500MB/s"]) == 0
    out = capsys.readouterr().out
    assert "pre-copy 500 MB/s" in out


def _record(precopy_ms: float | None, decision_ms: float | None, precopy_bytes: int) -> RunRecord:
    events = [Event(t, name) for t, name in ((precopy_ms, "precopy"), (decision_ms, "decision"))
              if t is not None]
    return RunRecord("r", "precopy-calibration", "legacy", 0, outcome="completed",
                     precopy_bytes=precopy_bytes, events=events)


def test_the_bulk_stage_rate_is_precopy_bytes_over_precopy_to_decision() -> None:
    assert _bulk_stage_rate(_record(10.0, 110.0, 256 << 20)) == pytest.approx((256 << 20) / 0.1)


@pytest.mark.parametrize(("start", "decision", "nbytes"), [
    (None, 110.0, 256 << 20), (10.0, None, 256 << 20), (110.0, 110.0, 256 << 20), (10.0, 110.0, 1 << 20)])
def test_a_run_without_a_bulk_stage_gives_no_rate(start: float | None, decision: float | None,
                                                  nbytes: int) -> None:
    assert _bulk_stage_rate(_record(start, decision, nbytes)) is None
