"""bench/container_link.py's pure part (bench/_link_goal.py): the goal's reference, the bulk
stage's bandwidth from a run record, the subnet it picks. The benchmark itself is not run here."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from migbed.measure.record import Event, ProgressSample, RunRecord


def _load() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "bench" / "_link_goal.py"
    spec = importlib.util.spec_from_file_location("bench_link_goal", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while decorating
    spec.loader.exec_module(mod)
    return mod


goal = _load()


def test_reference_is_the_rates_payload_when_raw_tcp_reaches_it() -> None:
    ref = goal.goal_reference(10e9, 9.9e9)
    assert ref.which == "rate x 1448/1514"
    assert ref.bps == pytest.approx(10e9 * 1448 / 1514)


def test_reference_is_raw_tcp_when_the_containers_fall_short_of_the_rate() -> None:
    ref = goal.goal_reference(10e9, 7.5e9)
    assert ref.which == "raw TCP" and ref.bps == 7.5e9


@pytest.mark.parametrize(("measured", "met"), [(0.951, True), (1.049, True), (0.949, False),
                                               (1.051, False)])
def test_goal_is_within_five_percent_either_way(measured: float, met: bool) -> None:
    ref = goal.Reference(8e9, "raw TCP")
    assert goal.within_goal(measured * 8e9, ref) is met


@pytest.mark.parametrize(("rate", "raw", "field"), [(0, 1e9, "rate_bps"), (1e9, 0.0, "raw_tcp_bps"),
                                                     (float("nan"), 1e9, "rate_bps")])
def test_bad_inputs_name_the_field(rate: float, raw: float, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        goal.goal_reference(rate, raw)


def _sample(t_ms: float, phase: str, remaining: int, bw: float) -> ProgressSample:
    return ProgressSample(t_ms, phase, remaining, 0, 0, 1, bw, 0.0, 0.0, 0.0, remaining, False)


def test_bulk_stage_rate_is_precopy_bytes_over_precopy_to_decision() -> None:
    rec = RunRecord("r", "container-link", "legacy", 0, "completed", precopy_bytes=3 << 30,
                    events=[Event(100.0, "precopy"), Event(2100.0, "decision")],
                    timeline=[_sample(200, "precopy", 5, 1e9), _sample(300, "precopy", 4, 3e9),
                              _sample(400, "precopy", 0, 9e9), _sample(500, "stop-copy", 1, 9e9),
                              _sample(600, "precopy", 3, 2e9)])
    rate, windows = goal.bulk_stage_rate(rec)
    assert rate == pytest.approx((3 << 30) / 2.0)
    assert windows == pytest.approx(2e9)  # the median of 1, 3, 2: no drained or stop-copy window


def test_bulk_stage_rate_without_a_decision_says_which_run() -> None:
    rec = RunRecord("run-7", "container-link", "legacy", 0, "failed", error="lost the target",
                    events=[Event(100.0, "precopy")])
    with pytest.raises(ValueError, match=r"run-7.*lost the target"):
        goal.bulk_stage_rate(rec)


def test_free_subnet_skips_every_overlapping_network() -> None:
    used = ["172.30.0.0/24", "172.30.200.0/24", "172.30.201.128/25", "fd00::/64", "10.0.0.0/8"]
    assert goal.free_subnet(used) == "172.30.202"
    assert goal.free_subnet([]) == "172.30.200"
    with pytest.raises(RuntimeError, match="no free /24"):
        goal.free_subnet(["172.30.0.0/16"])
