"""migbed simulate: the datacenter file's checks, the course cut from the model, and the
simulation's mechanics on datacenters small enough to check by hand."""

from __future__ import annotations

import math
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from migbed.cli.main import main
from migbed.core.scenario import resolve_scenario
from migbed.core.units import FRAME_EFFICIENCY
from migbed.datacenter.course import CourseCache
from migbed.datacenter.report import summarise, write_results
from migbed.datacenter.simulator import simulate_datacenter
from migbed.datacenter.spec import (
    DatacenterError,
    builtin_datacenter_text,
    builtin_datacenters,
    parse_datacenter,
)
from migbed.datacenter.topology import Network, drained_hosts
from migbed.fleet.planner import Interval, max_in_flight

BASE = """
name = "t"
[topology]
racks = 2
hosts-per-rack = 3
nic = "10Gbit"
oversubscription = 1
[[guests]]
scenario = "tiny"
per-host = 4
[drain]
hosts = [0]
[limits]
per-source = 2
per-cluster = 5
[simulation]
policies = ["legacy", "switchover-ack"]
"""


def dc(text: str = BASE, **replace: str) -> str:
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


# ---------------------------------------------------------------- the file


def test_every_builtin_datacenter_parses() -> None:
    assert {"rack-4to1", "wave-10k"} <= set(builtin_datacenters())
    for name in builtin_datacenters():
        parse_datacenter(builtin_datacenter_text(name), name)


def test_rates_are_goodput_and_oversubscription_sets_the_uplink() -> None:
    spec = parse_datacenter(BASE)
    assert spec.topology.nic == pytest.approx(10e9 / 8 * FRAME_EFFICIENCY)
    assert spec.topology.uplink == pytest.approx(3 * spec.topology.nic)
    spec = parse_datacenter(dc(**{'nic = "10Gbit"': 'nic = "2400MB/s"'}))
    assert spec.topology.nic == 2400e6


@pytest.mark.parametrize(("old", "new", "named"), [
    ("racks = 2", "racks = 0", "topology.racks = 0"),
    ("racks = 2", 'racks = "two"', "topology.racks"),
    ('nic = "10Gbit"', 'nic = "10 parsecs"', "topology.nic"),
    ("oversubscription = 1", "", "exactly one of uplink"),
    ("oversubscription = 1", "oversubscription = 0.5", "topology.oversubscription"),
    ("hosts-per-rack = 3", "hosts-per-rack = 3\nbogus = 1", "unknown key(s) bogus"),
    ('scenario = "tiny"', 'scenario = "no-such"', "guests[0].scenario = 'no-such'"),
    ("per-host = 4", "per-host = 4\nset = [\"guest.ram-size=1\"]", "guests[0].scenario"),
    ("per-host = 4", "per-host = 100000", "guests[0].per-host"),
    ("hosts = [0]", "hosts = [9]", "drain.hosts"),
    ("hosts = [0]", "hosts = [0]\nshare = 0.5", "exactly one of racks"),
    ("hosts = [0]", "hosts = [0, 1, 2, 3, 4, 5]", "at least one host left"),
    ("hosts = [0]", "hosts = [0]\nmaintenance = \"1min\"", "belong to rolling"),
    ("per-source = 2", "per-source = 0", "limits.per-source"),
    ('policies = ["legacy", "switchover-ack"]', 'policies = ["fastest"]', "simulation.policies"),
    ("[simulation]", "[simulation]\ndowntime-objective = \"-1s\"", "simulation.downtime-objective"),
])
def test_bad_files_are_refused_naming_the_field(old: str, new: str, named: str) -> None:
    with pytest.raises(DatacenterError) as e:
        parse_datacenter(dc(**{old: new}))
    assert named in str(e.value)


def test_bounded_input() -> None:
    with pytest.raises(DatacenterError, match="nested"):
        parse_datacenter("a = " + "[" * 50 + "]" * 50)
    with pytest.raises(DatacenterError, match="at most 100000"):
        parse_datacenter(dc(**{"racks = 2": "racks = 10000", "hosts-per-rack = 3": "hosts-per-rack = 1000"}))
    with pytest.raises(DatacenterError, match="not valid TOML"):
        parse_datacenter("[topology")


def test_the_cli_names_a_bad_file_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "dc.toml"
    bad.write_text(dc(**{"racks = 2": "racks = -1"}))
    assert main(["simulate", str(bad), "--out", str(tmp_path / "out")]) == 2
    assert "topology.racks = -1" in capsys.readouterr().err
    assert main(["simulate", str(tmp_path / "missing.toml")]) == 2


# ---------------------------------------------------------------- topology and course


def test_paths_cross_uplinks_only_between_racks() -> None:
    net = Network(parse_datacenter(dc(**{'oversubscription = 1': 'oversubscription = 1\nspine = "40Gbit"'})).topology)
    assert net.path(0, 1) == (net.nic_out(0), net.nic_in(1))
    assert net.path(0, 4) == (net.nic_out(0), net.uplink_up(0), net.spine_link, net.uplink_down(1), net.nic_in(4))
    spec = parse_datacenter(dc(**{"hosts = [0]": "rolling = true\nsequence = \"across-racks\""}))
    assert drained_hosts(spec.topology, spec.drain) == [0, 3, 1, 4, 2, 5]


@pytest.mark.parametrize("policy", ["legacy", "switchover-ack"])
@pytest.mark.parametrize("bandwidth", [40e6, 300e6, 2e9])
def test_a_course_at_its_own_bandwidth_takes_the_models_times(policy: str, bandwidth: float) -> None:
    cache = CourseCache([resolve_scenario("mlx5-like")])
    c = cache.exact(0, policy, bandwidth)
    m = c.model
    assert c.precopy_bytes / min(c.precopy_cap, bandwidth) + c.precopy_idle_s == pytest.approx(m.stop_s, abs=0.01)
    downtime = c.save_s + c.downtime_bytes / bandwidth + c.downtime_fixed_s
    assert downtime == pytest.approx(m.downtime_s, rel=1e-6)


def test_bandwidth_classes_round_by_at_most_half_a_step() -> None:
    cache = CourseCache([resolve_scenario("tiny")], step=0.02)
    for bw in (1.3e6, 77e6, 913e6, 2.5e9):
        k = cache.bandwidth_class(bw)
        assert abs(cache.class_bandwidth(k) / bw - 1) <= 0.0101
    cache.course(0, "legacy", 100e6)
    cache.course(0, "legacy", 100.5e6)  # same class: no second model run
    assert cache.model_runs == 1
    for bw in (2.2e6, 99e6, 100e6, 101.2e6, 3.3e9):  # a course knows its class's bounds
        c = cache.course(0, "legacy", bw)
        assert c.low <= bw < c.high and c.high / c.low == pytest.approx(1.02)


# ---------------------------------------------------------------- the simulation


def test_one_migration_alone_takes_the_models_times() -> None:
    spec = parse_datacenter(dc(**{"per-host = 4": "per-host = 1", "per-cluster = 5": "per-cluster = 1"}))
    [leg, ack] = simulate_datacenter(spec)
    cache = CourseCache([spec.mix[0].scenario])
    for res in (leg, ack):
        model = cache.exact(0, res.policy, spec.topology.nic).model
        assert res.migrations == 1
        assert res.total_time[0] == pytest.approx(model.total_time_s, rel=0.02)
        assert res.guest_downtime[0] == pytest.approx(model.guest_downtime_s, rel=0.02)
        assert res.drain_time_s == pytest.approx(res.end[0])


def test_migrations_share_the_source_nic_and_respect_the_limits() -> None:
    # 4 guests at P=2 off one host onto 5 targets: two rounds of two, each pair sharing the NIC.
    spec = parse_datacenter(dc(**{"per-cluster = 5": "per-cluster = 5", "10Gbit": "1Gbit"}))
    [leg, _] = simulate_datacenter(spec)
    assert leg.migrations == 4
    peak, per_source = max_in_flight(Interval(str(leg.source[i]), leg.start[i], leg.end[i]) for i in range(4))
    assert peak == 2 and per_source == {"0": 2}
    alone = CourseCache([spec.mix[0].scenario]).exact(0, "legacy", spec.topology.nic / 2)
    # Both of a pair start together on half the NIC each: the course of half the NIC.
    assert leg.bandwidth[0] == pytest.approx(spec.topology.nic / 2, rel=0.02)
    assert leg.total_time[0] == pytest.approx(alone.model.total_time_s, rel=0.05)
    assert leg.drain_time_s >= 2 * min(leg.total_time)


def test_a_rack_behind_an_oversubscribed_uplink_gets_its_share() -> None:
    spec = parse_datacenter(dc(**{"hosts = [0]": "racks = [0]", "oversubscription = 1": "oversubscription = 3",
                                  "per-cluster = 5": "per-cluster = 100"}))
    [leg, _] = simulate_datacenter(spec)
    # 3 hosts x 2 in flight share an uplink of one NIC: a sixth each.
    assert leg.bandwidth[0] == pytest.approx(spec.topology.nic / 6, rel=0.02)
    assert leg.migrations == 12


def test_a_rolling_wave_drains_every_host_once_and_targets_without_slots_stall_it() -> None:
    wave = dc(**{"hosts = [0]": 'rolling = true\nmax-unavailable = 2\nmaintenance = "30s"',
                 "oversubscription = 1": "oversubscription = 1\nslots = 6"})
    [leg, _] = simulate_datacenter(parse_datacenter(wave))
    assert leg.not_started == 0 and leg.migrations >= 6 * 4
    assert len({leg.source[i] for i in range(leg.migrations)}) == 6  # every host drained
    full = parse_datacenter(dc(**{"oversubscription = 1": "oversubscription = 1\nslots = 4"}))
    [leg, _] = simulate_datacenter(full)  # no target has a free slot
    assert leg.migrations == 0 and leg.not_started == 4


def test_results_and_objective_breaches(tmp_path: Path) -> None:
    spec = parse_datacenter(dc(**{"[simulation]": '[simulation]\ndowntime-objective = "100ms"'}))
    results = simulate_datacenter(spec)
    paths = write_results(spec, results, tmp_path)
    summary = {s["policy"]: s for s in (summarise(spec, r) for r in results)}
    # tiny: legacy pays the 400 ms device setup in its downtime, switchover-ack does not.
    assert summary["legacy"]["downtime_objective_breaches"] == 4
    assert summary["switchover-ack"]["downtime_objective_breaches"] == 0
    assert all(p.is_file() for p in paths)
    lines = (tmp_path / "migrations.csv").read_text().splitlines()
    assert len(lines) == 1 + 8 and all(math.isfinite(float(x.split(",")[13])) for x in lines[1:])


def test_the_cli_writes_every_view(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "dc.toml"
    f.write_text(BASE)
    assert main(["simulate", str(f), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    for name in ("summary.json", "migrations.csv", "series.csv", "cdf.png", "gantt.png", "utilisation.png"):
        assert (tmp_path / "out" / name).is_file(), name
    assert "switchover-ack" in capsys.readouterr().out
    assert main(["simulate", "--list"]) == 0


def test_policies_in_parallel_give_the_same_results_as_one_after_another() -> None:
    spec = parse_datacenter(dc(**{"hosts = [0]": "racks = [0]", "per-cluster = 5": "per-cluster = 4"}))
    serial = simulate_datacenter(spec, parallel=False)
    counted: list[int] = []
    forked = simulate_datacenter(spec, counted.append, parallel=True)
    for a, b in zip(serial, forked, strict=True):
        assert a.policy == b.policy and a.migrations == b.migrations == 12
        assert list(a.end) == list(b.end) and list(a.guest_downtime) == list(b.guest_downtime)
    assert sum(counted) == 24


def test_set_changes_one_key_and_bad_ones_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from migbed.datacenter.spec import resolve_datacenter

    spec = resolve_datacenter("rack-4to1", ["limits.per-source=5", "drain.racks=[0, 1]", "name=x"])
    assert spec.limits.per_source == 5 and spec.drain.racks == (0, 1) and spec.name == "x"
    with pytest.raises(DatacenterError, match=r"KEY is name or topology\.KEY"):
        resolve_datacenter("rack-4to1", ["guests.per-host=3"])
    with pytest.raises(DatacenterError, match=r"limits\.per-source = 0"):
        resolve_datacenter("rack-4to1", ["limits.per-source=0"])
    assert main(["simulate", "rack-4to1", "--set", "limits.bogus=1", "--out", str(tmp_path)]) == 2
    assert "limits: unknown key(s) bogus" in capsys.readouterr().err


def test_a_receive_rate_of_its_own() -> None:
    spec = parse_datacenter(dc(**{'nic = "10Gbit"': 'nic = "1Gbit"\nnic-in = "10Gbit"'}))
    caps = Network(spec.topology).capacities()
    assert caps[0] == spec.topology.nic and caps[6] == spec.topology.nic_in > spec.topology.nic


def test_a_traced_migration_alone_matches_the_model_on_its_own_bandwidth() -> None:
    from migbed.datacenter.simulator import Simulation

    spec = parse_datacenter(dc(**{'scenario = "tiny"': 'scenario = "sharing-check"', "per-host = 4": "per-host = 1",
                                  "per-cluster = 5": "per-cluster = 1"}))
    cache = CourseCache([m.scenario for m in spec.mix])
    sim = Simulation(spec, "switchover-ack", cache, trace_every=1)
    sim.run()
    [tr] = sim.traces
    assert [r for _, r in tr.rates] == [pytest.approx(spec.topology.nic)] * len(tr.rates)
    ref = cache.on_schedule(tr.kind, "switchover-ack", [(t - tr.t0, r) for t, r in tr.rates])
    assert tr.total_time == pytest.approx(ref.total_time_s, rel=0.01)
    assert tr.guest_downtime == pytest.approx(ref.guest_downtime_s, rel=0.01)


def test_a_mix_of_guests_with_their_device_drivers() -> None:
    spec = parse_datacenter(dc(**{'scenario = "tiny"\nper-host = 4': 'scenario = "tiny"\nper-host = 2\n'
                                  '[[guests]]\nscenario = "cover-letter"\nper-host = 1\n'
                                  '[[guests]]\nscenario = "tiny"\nper-host = 1\nset = ["device.vf0.driver=mlx5"]'}))
    assert [d.driver for m in spec.mix for d in m.scenario.devices] == ["generic", "mlx5", "mlx5"]
    results = simulate_datacenter(spec, parallel=False)
    assert all(r.migrations == 4 and r.not_started == 0 for r in results)
    assert sorted(set(results[0].kind)) == [0, 1, 2]


def test_a_share_of_hosts_is_spread_over_the_racks_and_drained() -> None:
    spec = parse_datacenter(dc(**{"hosts = [0]": "share = 0.5", "per-cluster = 5": "per-cluster = 6"}))
    assert drained_hosts(spec.topology, spec.drain) == [0, 2, 4]
    [leg, _] = simulate_datacenter(spec, parallel=False)
    assert leg.migrations == 12 and {leg.source[i] for i in range(12)} == {0, 2, 4}
    assert not {leg.target[i] for i in range(12)} & {0, 2, 4}  # a drained host receives nothing


def test_transfers_end_when_their_bytes_are_through_at_the_shared_rates() -> None:
    import simpy

    from migbed.datacenter.simulator import Transfers

    env = simpy.Environment()
    net = Transfers(env, [10.0])
    ends: dict[str, float] = {}
    ids = iter(range(100))

    def send(name: str, nbytes: float, delay: float) -> Generator[simpy.Event, Any, None]:
        yield env.timeout(delay)
        yield net.start(next(ids), (0,), nbytes)
        ends[name] = env.now

    env.process(send("a", 100.0, 0.0))
    env.process(send("b", 300.0, 0.0))
    env.process(send("c", 50.0, 30.0))
    env.run()
    # a and b share 10/s: a's 100 bytes end at 20 s; b alone at 10/s until c joins at 30 s
    # (b has 300 - 100 - 100 = 100 left), then 5/s each: c's 50 end at 40 s, b's last 50 at 45 s.
    assert ends == pytest.approx({"a": 20.0, "c": 40.0, "b": 45.0})
    assert net.total_rate == pytest.approx(0.0) and not net.live
