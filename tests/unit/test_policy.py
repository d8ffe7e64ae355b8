"""Each switchover policy's decision on constructed observations (no network)."""

import pytest

from migbed.core.policy import (
    DeviceView,
    Observation,
    cap_reached,
    make_policy,
)


def obs(pending: int = 1_000, threshold: float = 10_000, ack: bool = False, **kw) -> Observation:  # type: ignore[no-untyped-def]
    base = dict(elapsed_s=1.0, pending_bytes=pending, pending_exact=True,
                threshold_bytes=threshold, bandwidth=100_000.0, downtime_limit_s=0.1,
                dirty_sync_count=3, ack_received=ack)
    base.update(kw)
    return Observation(**base)  # type: ignore[arg-type]


def dev(initial_left: int = 0, loaded: bool = False, **kw) -> DeviceView:  # type: ignore[no-untyped-def]
    base = dict(name="vf0", initial_bytes_left=initial_left, dirty_bytes=0, stop_copy_bytes=2_000,
                target_backlog_bytes=0, target_setup_remaining_s=0.0, target_load_rate=1e6,
                target_stop_copy_load_s=0.0, target_initial_loaded=loaded)
    base.update(kw)
    return DeviceView(**base)  # type: ignore[arg-type]


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


def test_time_aware_counts_device_time() -> None:
    p = make_policy("time-aware")
    fast = dev(stop_copy_bytes=10_000, target_load_rate=1e6)  # 10 ms of load
    slow = dev(stop_copy_bytes=10_000, target_load_rate=1e6, target_stop_copy_load_s=0.2)
    assert p.decide(obs(ack=True, devices=(fast,))).go  # 10 ms data + 10 ms load < 100 ms
    d = p.decide(obs(ack=True, devices=(slow,)))
    # The final image loads as it arrives: 200 ms fixed + 10 ms of bytes, while the 10 ms
    # of data is in flight, not after it.
    assert not d.go and d.predicted_downtime_s == pytest.approx(0.2 + 0.01)
    # Behind a large data transfer the device's load starts when its bytes arrive.
    big = obs(ack=True, pending=1_000_000 + 10_000, devices=(slow,), downtime_limit_s=20.0)
    assert p.predict(big) == pytest.approx(10.0 + 0.2 + 0.01)
    # Setup still pending on the target counts too.
    busy = dev(target_setup_remaining_s=0.5)
    assert not p.decide(obs(ack=True, devices=(busy,))).go
    # No ACK: waits like switchover-ack whatever the prediction.
    assert p.decide(obs(ack=False, devices=(fast,))).action == "wait"


def test_time_aware_without_target_report_does_not_guess() -> None:
    p = make_policy("time-aware")
    unknown = dev(target_load_rate=0.0)
    assert not p.decide(obs(ack=True, devices=(unknown,))).go


def test_caps() -> None:
    assert cap_reached(obs(dirty_sync_count=30), 30, 0) == "max-iterations"
    assert cap_reached(obs(elapsed_s=121), 0, 120) == "max-time"
    assert cap_reached(obs(), 0, 0) == ""


def test_unknown_policy_is_named() -> None:
    with pytest.raises(ValueError, match="allowed: legacy"):
        make_policy("fastest")
