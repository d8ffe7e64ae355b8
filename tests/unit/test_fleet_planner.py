"""The evacuation planner: limits, order, placement, lost targets, and the in-flight checker."""

from __future__ import annotations

import pytest

from migbed.fleet.planner import (
    EvacuationPlan,
    FleetGuest,
    Interval,
    Limits,
    PlanError,
    max_in_flight,
    order_guests,
)

MiB = 1 << 20


def guests(n: int, host: str = "src-a", sizes: list[int] | None = None) -> list[FleetGuest]:
    sizes = sizes or [64] * n
    return [FleetGuest(f"g{i}", host, "tiny", sizes[i] * MiB) for i in range(n)]


def names(placements: list) -> list[str]:  # type: ignore[type-arg]
    return [p.guest.name for p in placements]


def test_per_source_limit_holds_back_the_rest_until_one_ends() -> None:
    plan = EvacuationPlan(guests(5), ["tgt-a"], Limits(per_source=2, per_cluster=5))
    assert names(plan.ready()) == ["g0", "g1"]
    assert plan.ready() == []  # both slots of src-a taken
    plan.finished("g0", "completed")
    assert names(plan.ready()) == ["g2"]


def test_cluster_limit_spans_source_hosts() -> None:
    two_hosts = guests(3, "src-a") + [FleetGuest(f"h{i}", "src-b", "tiny", MiB) for i in range(3)]
    plan = EvacuationPlan(two_hosts, ["tgt-a"], Limits(per_source=2, per_cluster=3))
    started = names(plan.ready())
    # g0, g1 fill src-a; g2 is skipped (src-a full), h0 takes the third cluster slot.
    assert started == ["g0", "g1", "h0"]


def test_a_full_source_does_not_block_guests_of_another_source() -> None:
    mixed = [FleetGuest("a0", "src-a", "tiny", MiB), FleetGuest("a1", "src-a", "tiny", MiB),
             FleetGuest("b0", "src-b", "tiny", MiB)]
    plan = EvacuationPlan(mixed, ["tgt-a"], Limits(per_source=1, per_cluster=5))
    assert names(plan.ready()) == ["a0", "b0"]


def test_placement_balances_targets_by_in_flight_then_placed() -> None:
    plan = EvacuationPlan(guests(4), ["t1", "t2"], Limits(per_source=4, per_cluster=4))
    assert [p.target_host for p in plan.ready()] == ["t1", "t2", "t1", "t2"]


def test_per_target_limit() -> None:
    plan = EvacuationPlan(guests(4), ["t1"], Limits(per_source=4, per_cluster=4, per_target=1))
    assert names(plan.ready()) == ["g0"]


@pytest.mark.parametrize(("order", "expected"), [
    ("first-come", ["g0", "g1", "g2"]),
    ("smallest-first", ["g1", "g2", "g0"]),
    ("largest-first", ["g0", "g2", "g1"]),
])
def test_orders(order: str, expected: list[str]) -> None:
    assert [g.name for g in order_guests(guests(3, sizes=[300, 100, 200]), order)] == expected


def test_a_lost_target_gets_nothing_more_and_the_plan_goes_on_elsewhere() -> None:
    plan = EvacuationPlan(guests(4), ["t1", "t2"], Limits(per_source=2, per_cluster=2))
    first = plan.ready()
    assert [p.target_host for p in first] == ["t1", "t2"]
    plan.finished("g1", "failed")  # g1 was on t2
    assert plan.target_lost("t2") == []
    assert [p.target_host for p in plan.ready()] == ["t1"]


def test_losing_the_last_target_or_choosing_to_stop_leaves_the_queue_not_started() -> None:
    plan = EvacuationPlan(guests(3), ["t1"], Limits(per_source=1, per_cluster=1))
    plan.ready()
    assert plan.target_lost("t1") == ["g1", "g2"]
    assert plan.outcomes == {"g1": "not-started", "g2": "not-started"}
    stop = EvacuationPlan(guests(3), ["t1", "t2"], Limits(per_source=1, per_cluster=1))
    stop.ready()
    assert stop.target_lost("t2", stop_plan=True) == ["g1", "g2"]


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"per_source": 0}, "limits.per-source"),
    ({"per_cluster": 1000}, "limits.per-cluster"),
    ({"per_target": -1}, "limits.per-target"),
])
def test_bad_limits_are_named(kwargs: dict[str, int], field: str) -> None:
    with pytest.raises(PlanError, match=field):
        EvacuationPlan(guests(1), ["t1"], Limits(**kwargs))


def test_bad_plans_are_named() -> None:
    with pytest.raises(PlanError, match="guests: at least one"):
        EvacuationPlan([], ["t1"])
    with pytest.raises(PlanError, match="targets: at least one"):
        EvacuationPlan(guests(1), [])
    with pytest.raises(PlanError, match="order = 'random'"):
        EvacuationPlan(guests(1), ["t1"], order="random")
    with pytest.raises(PlanError, match="unique"):
        EvacuationPlan(guests(1) + guests(1), ["t1"])
    plan = EvacuationPlan(guests(1), ["t1"])
    with pytest.raises(PlanError, match="not in flight"):
        plan.finished("g0", "completed")


def test_max_in_flight_counts_overlaps_overall_and_per_key() -> None:
    ivs = [Interval("a", 0, 10), Interval("a", 5, 15), Interval("b", 6, 8), Interval("a", 15, 20)]
    # At t=6..8 three are open (a, a, b); a's third starts exactly when its second ends.
    assert max_in_flight(ivs) == (3, {"a": 2, "b": 1})


def test_a_plan_runs_to_the_end() -> None:
    plan = EvacuationPlan(guests(6), ["t1", "t2"], Limits(per_source=2, per_cluster=5))
    order: list[str] = []
    while not plan.done:
        for p in plan.ready():
            order.append(p.guest.name)
        plan.finished(next(iter(plan.in_flight)), "completed")
    assert order == [f"g{i}" for i in range(6)]
    assert set(plan.outcomes.values()) == {"completed"}


def test_capacity_bounds_what_a_target_receives_and_a_failure_frees_its_slot() -> None:
    plan = EvacuationPlan(guests(4), ["t1", "t2"], Limits(per_source=4, per_cluster=4),
                          capacity={"t1": 1, "t2": 2})
    assert [p.target_host for p in plan.ready()] == ["t1", "t2", "t2"]  # g3 waits: no slot left
    plan.finished("g0", "failed")  # g0 never landed on t1: its slot is free again
    assert [(p.guest.name, p.target_host) for p in plan.ready()] == [("g3", "t1")]


def test_targets_join_retire_and_guests_arrive_while_the_plan_runs() -> None:
    plan = EvacuationPlan(guests(2), ["t1"], Limits(per_source=2, per_cluster=4))
    plan.retire_target("t1")
    assert plan.ready() == []  # no usable target
    plan.add_target("t2")
    assert [p.target_host for p in plan.ready()] == ["t2", "t2"]
    plan.add_guests([FleetGuest("x0", "src-b", "tiny", MiB)])
    assert names(plan.ready()) == ["x0"]
    assert plan.queued == 0 and not plan.done


def test_a_large_plan_is_fast_and_keeps_the_order() -> None:
    many = [FleetGuest(f"g{i}", f"s{i % 500}", "tiny", MiB) for i in range(50_000)]
    targets = [f"t{i}" for i in range(2000)]
    plan = EvacuationPlan(many, targets, Limits(per_source=2, per_cluster=1000, per_target=1),
                          max_guests=100_000)
    started: list[str] = []
    while not plan.done:
        batch = plan.ready()
        started += names(batch)
        for p in batch[: max(1, len(batch) // 2)] if batch else list(plan.in_flight.values())[:500]:
            plan.finished(p.guest.name, "completed")
    assert sorted(started, key=lambda n: int(n[1:])) == [g.name for g in many]
    assert len(plan.outcomes) == len(many)
