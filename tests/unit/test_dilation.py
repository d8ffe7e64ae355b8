"""Time dilation (migbed/core/dilation.py): every field has a rule, both ways round-trip,
times scale by K and rates by 1/K into a run and back, sizes never."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from migbed.core import dilation as dil
from migbed.core import scenario as scn
from migbed.core.dilation import POLICY_RULES, RECORD_RULES, SCENARIO_RULES, Rule
from migbed.core.policy import Decision, DeviceView, Observation, TargetLoad, make_policy
from migbed.core.scenario import ScenarioError, builtin_scenario_text, builtin_scenarios, parse_scenario
from migbed.measure.record import DeviceSample, Event, ProgressSample, RunRecord
from migbed.wire import migration_pb2 as pb


def _dataclasses_reachable(root: type) -> list[type]:
    """root and every dataclass its fields hold (directly, or in a list / tuple / dict),
    found from the type hints: a dataclass added to the scenario or the record is found."""
    seen: list[type] = []
    todo = [root]
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.append(cls)
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            for t in _types_in(hints[f.name]):
                if dataclasses.is_dataclass(t) and isinstance(t, type):
                    todo.append(t)
    return seen


def _types_in(hint: typing.Any) -> list[typing.Any]:
    return [hint, *[t for a in typing.get_args(hint) for t in _types_in(a)]]


@pytest.mark.parametrize(("roots", "tables"), [
    ((scn.Scenario,), SCENARIO_RULES), ((RunRecord,), RECORD_RULES), ((Observation, Decision), POLICY_RULES)])
def test_every_field_has_a_rule(roots: tuple[type, ...], tables: dict[str, dict[str, Rule]]) -> None:
    classes = [c for root in roots for c in _dataclasses_reachable(root)]
    assert len(classes) >= 4, classes
    missing = [f"{c.__name__}.{f.name}" for c in classes for f in dataclasses.fields(c)
               if f.name not in tables.get(c.__name__, {})]
    assert not missing, f"fields without a dilation rule (add them to migbed/core/dilation.py): {missing}"
    stale = [f"{c}.{n}" for c, t in tables.items() for n in t
             if c not in {k.__name__ for k in classes} or n not in {f.name for f in dataclasses.fields(
                 next(k for k in classes if k.__name__ == c))}]
    assert not stale, f"rules for fields that no longer exist: {stale}"


def test_the_decision_basis_is_a_word_that_dilation_leaves_alone() -> None:
    assert RECORD_RULES["RunRecord"]["decision_basis"] is Rule.SAME
    assert POLICY_RULES["Decision"]["basis"] is Rule.SAME
    rec = RunRecord("r", "s", "time-aware", 0, "completed", decision_basis="floor", downtime_ms=400.0)
    back = dil.undilate(rec, 4)
    assert (back.decision_basis, back.downtime_ms) == ("floor", 100.0)


def test_every_record_message_field_is_a_record_field_with_a_rule() -> None:
    """From the wire's side too: a field added to the proto's record messages (and so to
    the dataclasses, record_wire insists) has a rule."""
    for message, cls in ((pb.RunRecord, RunRecord), (pb.ProgressSample, ProgressSample),
                         (pb.DeviceSample, DeviceSample), (pb.Event, Event)):
        names = set(message.DESCRIPTOR.fields_by_name)
        table = RECORD_RULES[cls.__name__]
        assert names <= set(table), (message.DESCRIPTOR.name, sorted(names - set(table)))


def test_a_field_without_a_rule_is_refused() -> None:
    @dataclasses.dataclass
    class Event:  # same name as the record's, one field more
        t_ms: float
        name: str
        detail: str = ""
        new_figure_ms: float = 0.0

    with pytest.raises(dil.DilationError, match=r"Event\.new_figure_ms has no dilation rule"):
        dil.undilate(Event(1.0, "x"), 2)


def _scenarios() -> list[scn.Scenario]:
    return [parse_scenario(builtin_scenario_text(n), n) for n in builtin_scenarios()]


@pytest.mark.parametrize("k", [1.0, 2.0, 3.7, 1000.0])
def test_scenario_round_trip(k: float) -> None:
    for sc in _scenarios():
        sc = dataclasses.replace(sc, time_dilation=k)
        d = dil.dilate_scenario(sc)
        assert d.dilated and d.time_dilation == k
        back = dil.undilate_scenario(d)
        assert _close(back, sc), sc.name


def test_scenario_times_stretch_rates_shrink_sizes_stay() -> None:
    sc = parse_scenario(builtin_scenario_text("mlx5-like"), "mlx5-like")
    sc = dataclasses.replace(sc, time_dilation=4.0, link=scn.LinkConfig(25e9, 1 << 20, 0.05))
    d = dil.dilate_scenario(sc)
    m, dm = sc.migration, d.migration
    assert dm.downtime_limit == 4 * m.downtime_limit and dm.max_bandwidth == m.max_bandwidth / 4
    assert dm.warmup == 4 * m.warmup and dm.heartbeat_timeout == 4 * m.heartbeat_timeout
    assert dm.max_iterations == m.max_iterations
    assert d.guest.vcpu_tick == 4 * sc.guest.vcpu_tick and d.guest.dirty_rate == sc.guest.dirty_rate / 4
    assert d.guest.ram_size == sc.guest.ram_size
    dev, ddev = sc.devices[0], d.devices[0]
    assert ddev.load_setup_time == 4 * dev.load_setup_time and ddev.load_rate == dev.load_rate / 4
    assert ddev.initial_bytes == dev.initial_bytes and ddev.stop_copy_size == dev.stop_copy_size
    assert d.link.rate == 25e9 / 4 and d.link.burst == 1 << 20 and d.link.latency == 0.2
    # what stays invariant: the threshold (bandwidth x downtime-limit) in bytes
    assert dm.max_bandwidth * dm.downtime_limit == pytest.approx(m.max_bandwidth * m.downtime_limit)


def test_dilating_twice_or_undilating_a_virtual_scenario_is_refused() -> None:
    sc = dataclasses.replace(_scenarios()[0], time_dilation=2.0)
    with pytest.raises(ScenarioError, match="already dilated"):
        dil.dilate_scenario(dil.dilate_scenario(sc))
    with pytest.raises(ScenarioError, match="not dilated"):
        dil.undilate_scenario(sc)


def _record() -> RunRecord:
    dev = DeviceSample("vf0", "PRE_COPY", 10, 20, 30, 40, True, 1.25, True)
    sample = ProgressSample(400.0, "precopy", 1 << 20, 2 << 20, 3 << 20, 4, 1.5e9, 4.5e8, 300.0,
                            2500.0, 5 << 20, False, [dev])
    return RunRecord(
        run_id="r", scenario="s", policy="legacy", repeat=0, outcome="completed", verified=True,
        destination_prepare_ms=40.0, setup_time_ms=8.0, total_time_ms=4000.0, downtime_ms=200.0,
        expected_downtime_ms=190.0, dirty_sync_count=7, precopy_bytes=1 << 30, downtime_bytes=1 << 25,
        verification_ms=80.0, guest_downtime_ms=210.0, guest_downtime_uncertainty_ms=1.5,
        stop_lag_ms=1.0, stop_copy_ms=150.0, device_save_ms=10.0, delivery_ms=30.0,
        destination_load_ms=20.0, resume_ms=9.0, stream_rtt_at_stop_ms=2.0,
        predicted_downtime_ms=205.0, switchover_ack_wait_ms=1400.0,
        device_initial_load_ms={"vf0": 1500.0}, multifd_channels=2,
        multifd_channel_bytes=[1 << 29, 1 << 29], clock_offset_ns=-12345, time_dilation=4.0,
        timeline=[sample], events=[Event(100.0, "precopy"), Event(3800.0, "stop", "x 5")],
    )


def test_record_out_of_a_run_times_shrink_rates_grow() -> None:
    r = _record()
    v = dil.undilate(r, 4)
    assert v.total_time_ms == 1000.0 and v.downtime_ms == 50.0 and v.guest_downtime_ms == 52.5
    assert v.device_initial_load_ms == {"vf0": 375.0}
    assert v.precopy_bytes == r.precopy_bytes and v.dirty_sync_count == 7
    assert v.multifd_channel_bytes == r.multifd_channel_bytes
    assert v.clock_offset_ns == r.clock_offset_ns  # a fact of the hosts, not of the run
    s, vs = r.timeline[0], v.timeline[0]
    assert vs.t_ms == 100.0 and vs.bandwidth_bytes_per_s == 6e9 and vs.dirty_pages_rate == 10000.0
    assert vs.threshold_bytes == s.threshold_bytes and vs.expected_downtime_ms == 75.0
    assert vs.devices[0].target_busy_s == 1.25 / 4 and vs.devices[0].target_loaded_bytes == 30
    assert [e.t_ms for e in v.events] == [25.0, 950.0] and v.events[1].detail == "x 5"
    # a copy: the run's own record is untouched
    assert r.total_time_ms == 4000.0 and r.timeline[0].t_ms == 400.0


@pytest.mark.parametrize("k", [1.0, 2.0, 3.7, 1000.0])
def test_record_round_trip(k: float) -> None:
    r = _record()
    assert _close(dil.dilate(dil.undilate(r, k), k), r)
    assert _close(dil.undilate(dil.dilate(r, k), k), r)


def test_the_policy_decides_in_virtual_time_and_the_same_way() -> None:
    """time-aware on a run dilated 4x: the same decision as undilated, its reason in
    virtual milliseconds, its prediction back in the run's real seconds."""
    load = TargetLoad(loaded_bytes=1 << 20, busy_s=0.5, measured_load_rate=1e9, initial_loaded=True)
    virtual = Observation(elapsed_s=2.0, pending_bytes=10 << 20, pending_exact=True,
                          threshold_bytes=40e6, bandwidth=1e9, downtime_limit_s=0.3,
                          dirty_sync_count=3, ack_received=True, rtt_s=0.001,
                          devices=(DeviceView("vf0", 0, 0, 20 << 20, load),))
    real = dil.dilate(virtual, 4)
    assert real.bandwidth == 0.25e9 and real.devices[0].target.measured_load_rate == 0.25e9
    plain, dilated = make_policy("time-aware"), dil.in_virtual_time(make_policy("time-aware"), 4)
    want, got = plain.decide(virtual), dilated.decide(real)
    assert (got.action, got.reason, got.basis) == (want.action, want.reason, want.basis), (got, want)
    assert got.predicted_downtime_s == pytest.approx(4 * want.predicted_downtime_s)
    assert dilated.name == "time-aware" and dilated.needs_ack


def test_factor_bounds_name_the_field() -> None:
    for bad in (0.5, 0, -1, 1001, float("nan"), float("inf"), True, "2"):
        with pytest.raises(dil.DilationError, match="time-dilation"):
            dil.check_factor(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(("value", "message"), [
    ("0.5", "out of range"), ("1001", "out of range"), ('"auto"', "auto is for the command line"),
    ("true", "expected a number"), ('"4"', "expected a number"), ("nan", "expected a number"),
])
def test_scenario_key_errors_name_the_field(value: str, message: str) -> None:
    text = f'time-dilation = {value}\n[guest]\nram-size = "64MiB"\n'
    with pytest.raises(ScenarioError, match=rf"scenario\.time-dilation = .*{message}"):
        parse_scenario(text)


def test_scenario_key_parses() -> None:
    sc = parse_scenario('time-dilation = 2.5\n[guest]\nram-size = "64MiB"\n')
    assert sc.time_dilation == 2.5 and not sc.dilated
    assert parse_scenario('[guest]\nram-size = "64MiB"\n').time_dilation == 1.0


def _close(a: typing.Any, b: typing.Any) -> bool:
    """Equal, floats to 1e-12 relative (x K / K may differ in the last bit)."""
    if dataclasses.is_dataclass(a):
        return type(a) is type(b) and all(
            _close(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, float) and isinstance(b, float):
        return a == pytest.approx(b, rel=1e-12, abs=1e-12)
    return bool(a == b)


# ---------------------------------------------------------------- the interfaces


@pytest.mark.parametrize("command", ["run", "up", "deploy", "sweep", "evacuate"])
def test_every_command_that_runs_migbed_takes_the_flag(command: str) -> None:
    import argparse

    from migbed.cli.main import build_parser

    p = build_parser(command)
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    args = sub.parse_args(["-i", "x"] * (command == "deploy") + ["--time-dilation", "2.5"])
    assert args.time_dilation == 2.5
    assert sub.parse_args(["-i", "x"] * (command == "deploy") + ["--time-dilation", "AUTO"]).time_dilation == "auto"


@pytest.mark.parametrize("argv", [
    ["run", "--time-dilation", "0.5"], ["run", "--time-dilation", "1001"], ["run", "--time-dilation", "nan"],
    ["run", "--time-dilation", "x"], ["sweep", "--time-dilation", "0"], ["evacuate", "--time-dilation", "-2"],
    ["qemu-compare", "tiny", "--time-dilation", "2"],
])
def test_bad_flags_exit_2_naming_it(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from migbed.cli.main import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--time-dilation" in err and "Traceback" not in err
    if argv[0] == "qemu-compare":
        assert "real QEMU" in err


def test_the_flag_becomes_the_scenario_key_every_command_passes_on() -> None:
    from migbed.cli import args as cli_args
    from migbed.cli.main import build_parser

    args = build_parser("run").parse_args(["run", "--scenario", "tiny", "--time-dilation", "4"])
    exp = cli_args.resolve_experiment(args)
    assert exp.scenario.time_dilation == 4.0 and exp.overrides[-1] == "time-dilation=4.0"
    assert parse_scenario(exp.scenario.source_text).time_dilation == 4.0  # what the source gets


def test_containers_and_lab_hosts_shape_the_dilated_rate(tmp_path: typing.Any) -> None:
    from migbed.env import compose, deploy

    text = 'time-dilation = 8\n[guest]\nram-size = "64MiB"\n[link]\nrate = "100Gbit"\nlatency = "50ms"\n'
    path = tmp_path / "fast.toml"
    path.write_text(text)
    [argv] = deploy.tc_commands(path)  # lab hosts (Ansible runs these argv)
    assert argv[argv.index("rate") + 1] == "12500000000bit" and argv[argv.index("latency") + 1] == "400000us"
    name, shape = compose.scenario_link(str(path))  # `migbed up`'s containers
    assert shape is not None and shape.rate_bps == 12_500_000_000 and "time-dilation 8" in name
    sc = parse_scenario(text)
    assert dil.shaped_link(dataclasses.replace(sc, time_dilation=1.0)).rate == 100e9


def test_auto_picks_the_smallest_whole_k_that_fits_half_the_host() -> None:
    sc = parse_scenario('[guest]\nram-size = "64MiB"\n[migration]\nmax-bandwidth = "100GiB/s"\n'
                        '[link]\nrate = "100Gbit"\n')
    chosen = dil.auto_factor(sc, 3e9)  # the link sets it (the final copy runs at it): 12.5 / 1.5 = 8.3
    assert chosen.factor == 9 and "the link's 100 Gbit/s" in chosen.reason and "K = 8 would need" in chosen.reason
    assert dil.auto_factor(sc, 25e9).factor == 1  # fits undilated
    assert dil.auto_factor(dataclasses.replace(sc, link=scn.LinkConfig()), 1e9).factor == 215  # max-bandwidth
    slow = dataclasses.replace(sc, migration=dataclasses.replace(sc.migration, max_bandwidth=1e9))
    assert dil.auto_factor(slow, 3e9).factor == 9  # a lower max-bandwidth: the link still sets K
    with pytest.raises(dil.DilationError, match="more than 1000"):
        dil.auto_factor(sc, 1e7)
    with pytest.raises(dil.DilationError):
        dil.auto_factor(sc, 0.0)


def test_the_target_checks_a_dilated_setup_against_the_scenario_limits() -> None:
    from migbed.core import limits as lim
    from migbed.services.target.validate import validate_setup
    from migbed.wire.errors import ProtocolError

    def setup(k: float, tick: float, heartbeat: float = 0.0) -> pb.Setup:
        return pb.Setup(protocol_version=pb.PROTOCOL_VERSION_1, session_id="s",
                        guest=pb.GuestShape(ram_bytes=1 << 24, page_size=4096), vcpu_tick_s=tick,
                        heartbeat_timeout_s=heartbeat, time_dilation=k)

    validate_setup(setup(4, 4 * lim.VCPU_TICK_S[1], 4 * lim.HEARTBEAT_TIMEOUT_S[1]))
    with pytest.raises(ProtocolError, match=r"setup\.vcpu_tick_s = 0\.004: allowed"):
        validate_setup(setup(0, 0.004))  # undilated: 4 ms is beyond the 1 ms limit
    with pytest.raises(ProtocolError, match=r"setup\.time_dilation = 2000"):
        validate_setup(setup(2000, 0.001))
    with pytest.raises(ProtocolError, match=r"setup\.heartbeat_timeout_s"):
        validate_setup(setup(2, 0.001, 3 * lim.HEARTBEAT_TIMEOUT_S[1]))
