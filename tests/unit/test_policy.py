"""Each switchover policy's decision on constructed observations (no network)."""

import pytest

from migbed.core.policy import (
    POLICIES,
    POLICY_REGISTRY,
    DeviceView,
    Observation,
    TargetLoad,
    cap_reached,
    make_policy,
)


def obs(pending: int = 1_000, threshold: float = 10_000, ack: bool = False, **kw) -> Observation:  # type: ignore[no-untyped-def]
    base = dict(elapsed_s=1.0, pending_bytes=pending, pending_exact=True,
                threshold_bytes=threshold, bandwidth=100_000.0, downtime_limit_s=0.1,
                dirty_sync_count=3, ack_received=ack)
    base.update(kw)
    return Observation(**base)  # type: ignore[arg-type]


def dev(initial_left: int = 0, loaded: bool = False, stop_copy: int = 2_000,
        rate: float = 1e6, backlog: int = 0) -> DeviceView:
    return DeviceView("vf0", initial_left, 0, stop_copy,
                      TargetLoad(loaded_bytes=0, backlog_bytes=backlog, busy_s=0.0,
                                 measured_load_rate=rate, initial_loaded=loaded))


def test_legacy_is_data_only() -> None:
    p = make_policy("legacy")
    assert p.decide(obs(pending=9_999)).go
    assert not p.decide(obs(pending=10_000)).go
    assert p.decide(obs(pending=0, threshold=0)).go  # QEMU: pending == 0 always switches
    assert p.decide(obs(devices=(dev(initial_left=10**9),), pending=1)).go
    assert not p.needs_ack


def test_initial_bytes_sent_waits_for_every_device() -> None:
    p = make_policy("initial-bytes-sent")
    assert not p.decide(obs(devices=(dev(0), dev(1)))).go
    assert p.decide(obs(devices=(dev(0), dev(0)))).go
    assert not p.decide(obs(pending=10**9, devices=(dev(0),))).go


def test_switchover_ack_needs_data_and_ack() -> None:
    p = make_policy("switchover-ack")
    assert p.needs_ack
    assert p.decide(obs(ack=False)).action == "wait"
    assert p.decide(obs(ack=True)).go
    assert not p.decide(obs(ack=True, pending=10**9)).go


@pytest.mark.parametrize(("action", "expected"), [("cancel", "cancel"), ("legacy", "go")])
def test_switchover_ack_timeout(action: str, expected: str) -> None:
    p = make_policy("switchover-ack", ack_timeout_s=2.0, on_timeout=action)
    assert p.decide(obs(ack_wait_s=1.9)).action == "wait"
    assert p.decide(obs(ack_wait_s=2.0)).action == expected


def test_time_aware_counts_observed_device_time() -> None:
    p = make_policy("time-aware")
    fast = dev(stop_copy=10_000, rate=1e6)  # 10 ms of load at the measured rate
    slow = dev(stop_copy=10_000, rate=1e5)  # 100 ms
    assert p.decide(obs(ack=True, devices=(fast,))).go  # 10 ms data + 10 ms load < 100 ms
    d = p.decide(obs(ack=True, devices=(slow,)))
    # Inline on the main channel the destination reads nothing while it loads: the data
    # time (1000 B / 100 kB/s = 10 ms) and the load time add up.
    assert not d.go and d.predicted_downtime_s == pytest.approx(0.01 + 0.1)
    # The backlog the target has not loaded yet is loaded first, at the same rate.
    behind = dev(stop_copy=10_000, rate=1e6, backlog=50_000)
    assert p.predict(obs(ack=True, devices=(behind,))) == pytest.approx(0.01 + 0.06)
    # Two devices on the main channel load one after the other.
    assert p.predict(obs(ack=True, devices=(fast, fast))) == pytest.approx(0.01 + 0.02)
    # With parallel device state (multifd) they load beside each other and the RAM.
    par = obs(ack=True, devices=(fast, fast), parallel_device_state=True, pending=20_000)
    assert p.predict(par) == pytest.approx(0.01)
    # No ACK: waits like switchover-ack whatever the prediction.
    assert p.decide(obs(ack=False, devices=(fast,))).action == "wait"


def test_time_aware_without_a_measured_rate_does_not_guess() -> None:
    p = make_policy("time-aware")
    unknown = dev(rate=0.0)
    assert not p.decide(obs(ack=True, devices=(unknown,))).go


def test_time_aware_observes_only_what_the_target_reports() -> None:
    # No oracle: the only target-side inputs a DeviceView can carry are TargetLoad's, and
    # TargetLoad holds nothing a destination cannot measure (no configured setup time,
    # load rate or fixed costs).
    import dataclasses
    assert {f.name for f in dataclasses.fields(TargetLoad)} == {
        "loaded_bytes", "backlog_bytes", "busy_s", "measured_load_rate", "loading",
        "initial_loaded", "initial_load_s"}
    assert {f.name for f in dataclasses.fields(DeviceView)} == {
        "name", "initial_bytes_left", "dirty_bytes", "stop_copy_bytes", "target"}


def test_registry_is_the_one_list() -> None:
    assert tuple(POLICY_REGISTRY) == POLICIES
    for name, info in POLICY_REGISTRY.items():
        assert make_policy(name).needs_ack == info.needs_ack and info.description


def test_threshold_inclusive_profile() -> None:
    p = make_policy("legacy")
    assert not p.decide(obs(pending=10_000, threshold=10_000)).go
    assert p.decide(obs(pending=10_000, threshold=10_000, threshold_inclusive=True)).go


def test_caps() -> None:
    assert cap_reached(obs(dirty_sync_count=30), 30, 0) == "max-iterations"
    assert cap_reached(obs(elapsed_s=121), 0, 120) == "max-time"
    assert cap_reached(obs(), 0, 0) == ""


def test_unknown_policy_is_named() -> None:
    with pytest.raises(ValueError, match="allowed: legacy"):
        make_policy("fastest")
