"""Each switchover policy's decision on constructed observations (no network)."""

import dataclasses

import pytest

from migbed.core.policy import (
    BASES,
    POLICIES,
    POLICY_BASES,
    POLICY_REGISTRY,
    Decision,
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
                                 measured_load_rate=rate, initial_loaded=loaded),
                      initial_image_bytes=10_000)


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


def exact(ram: int, *devices: DeviceView, **kw) -> Observation:  # type: ignore[no-untyped-def]
    """An exact check as the source builds it: pending = RAM + each device's MIG_DATA_SIZE
    + initial + dirty bytes (vfio_state_pending_exact)."""
    pending = ram + sum(d.stop_copy_bytes + d.initial_bytes_left + d.dirty_bytes for d in devices)
    return obs(pending=pending, devices=devices, **kw)


def test_time_aware_counts_observed_device_time() -> None:
    p = make_policy("time-aware")
    fast = dev(stop_copy=1_000, rate=1e5)  # 10 ms of load at the measured rate
    slow = dev(stop_copy=1_000, rate=1e4)  # 100 ms
    # RAM 1000 B + the device's 1000 B at 100 kB/s: 20 ms of data, then its load.
    assert p.decide(exact(1_000, fast, ack=True)).go  # 20 + 10 ms < 100 ms
    fresh = make_policy("time-aware")
    d = fresh.decide(exact(1_000, slow, ack=True))
    # Inline on the main channel the destination reads nothing while it loads: the data
    # time and the load time add up.
    assert not d.go and d.predicted_downtime_s == pytest.approx(0.02 + 0.1)
    # The device's stop-copy (an unknown driver: MIG_DATA_SIZE, which no pre-copy reduces)
    # alone takes 110 ms > 100 ms: once the rest has settled it switches at that floor.
    again = fresh.decide(exact(1_000, slow, ack=True))
    assert again.go and "switching at that floor" in again.reason
    # The backlog the target has not loaded yet is loaded first, at the same rate.
    behind = dev(stop_copy=1_000, rate=1e5, backlog=5_000)
    assert p.predict(exact(1_000, behind, ack=True)) == pytest.approx(0.02 + 0.06)
    # Two devices on the main channel load one after the other.
    assert p.predict(exact(1_000, fast, fast, ack=True)) == pytest.approx(0.03 + 0.02)
    # With parallel device state (multifd) each loads beside the transfer.
    par = exact(1_000, fast, fast, ack=True, parallel_device_state=True)
    assert p.predict(par) == pytest.approx(0.03)
    # No ACK: waits like switchover-ack whatever the prediction.
    assert p.decide(exact(1_000, fast, ack=False)).action == "wait"


def test_time_aware_without_a_measured_rate_does_not_guess() -> None:
    # The ACK can outrun the destination's next load report: no rate yet, wait for it.
    p = make_policy("time-aware")
    not_yet = dev(rate=0.0)
    d = p.decide(exact(1_000, not_yet, ack=True))
    assert d.action == "wait" and "no load reported yet" in d.reason
    # A destination that took the initial data and loaded none of it defers its loads to
    # vm_start (a generic device with load-trigger "on-stop"): nothing will be measured.
    # time-aware says so and decides as switchover-ack does.
    deferred = DeviceView("vf0", 0, 0, 2_000, TargetLoad(backlog_bytes=5_000, initial_loaded=True),
                          "generic", 5_000)
    for threshold, go in ((10_000, True), (1_000, False)):
        d = make_policy("time-aware").decide(exact(1_000, deferred, ack=True, threshold=threshold))
        assert d.go == go and d.reason.startswith("no prediction")
        assert "loads on leaving RESUMING" in d.reason
    # A device with nothing to send in pre-copy: nothing is loaded before the switchover.
    empty = DeviceView("vf0", 0, 0, 2_000, TargetLoad(), "generic", 0)
    d = make_policy("time-aware").decide(exact(1_000, empty, ack=True))
    assert d.go and "sends nothing in pre-copy" in d.reason


MB = 1_000_000
# mlx5-like inputs: a 300 MB initial image, 20 MB more state, 2 GB/s of load, 1250 MB/s.
LINK = dict(bandwidth=1250e6, downtime_limit_s=0.3, threshold=1250e6 * 0.3, ack=True)


def vf(driver: str, dirty: int = 1 * MB, initial_left: int = 0, whole: int = 320 * MB,
       rate: float = 2e9, backlog: int = 0, image: int = 300 * MB) -> DeviceView:
    return DeviceView("vf0", initial_left, dirty, whole,
                      TargetLoad(loaded_bytes=image, backlog_bytes=backlog, busy_s=image / rate,
                                 measured_load_rate=rate, initial_loaded=True),
                      driver, image)


def test_mlx5_whole_state_data_size_is_read_as_its_driver_documents() -> None:
    # mlx5vf_pci_get_data_size answers the whole state (320 MB) however much pre-copy sent.
    # Read as the uAPI's "stop-copy length" (an unknown driver, or generic's semantics) it
    # predicts 320 MB to send and load; read as mlx5 documents it, the final image is the
    # increment (dirty_bytes) plus the state beyond the initial image (320 - 300 MB).
    ta = make_policy("time-aware")
    o = exact(5 * MB, vf("mlx5"), **LINK)
    assert ta.decide(o).go
    assert ta.predict(o) == pytest.approx((5 + 21) / 1250 + 21 / 2000, abs=1e-3)
    # generic's "what is left" holds the unsent pre-copy bytes; an unknown driver's is read
    # as QEMU reads it, beside them (vfio_state_pending_exact).
    for unknown, sent in (("generic", 320), ("", 321), ("a-driver-migbed-does-not-know", 321)):
        o2 = exact(5 * MB, vf(unknown), **LINK)
        assert ta.predict(o2) == pytest.approx((5 + sent) / 1250 + sent / 2000, abs=1e-3)
        assert not make_policy("time-aware").decide(o2).go
    # QEMU's own rule on the same check: 326 MB pending against a 375 MB threshold fits;
    # at 512 MiB/s (161 MB) it never does, while time-aware's prediction still fits.
    slow = dict(LINK, bandwidth=512 * 2**20, threshold=512 * 2**20 * 0.3)
    assert not make_policy("switchover-ack").decide(exact(5 * MB, vf("mlx5"), **slow)).go
    assert make_policy("time-aware").decide(exact(5 * MB, vf("mlx5"), **slow)).go
    # Unsent initial bytes go in the stop-copy too.
    late = exact(5 * MB, vf("mlx5", initial_left=100 * MB), **LINK)
    assert make_policy("time-aware").predict(late) == pytest.approx(
        (5 + 121) / 1250 + 121 / 2000, abs=1e-3)


@pytest.mark.parametrize("driver", ["hisi_acc", "pds", "qat", "xe"])
def test_a_device_loading_on_leaving_resuming_cannot_be_predicted(driver: str) -> None:
    # hisi_acc_vf_load_state, pds_vfio_set_lm_state_cmd, qat_vf_load_device_data and xe's
    # restore run on RESUMING -> STOP at the destination's vm_start: nothing of the device
    # has loaded before, so no rate is measured. time-aware says so and decides as
    # switchover-ack does.
    # Everything written is buffered (the backlog), nothing loaded.
    d = DeviceView("vf0", 0, 0, 320 * MB, TargetLoad(backlog_bytes=300 * MB), driver, 300 * MB)
    fits = exact(5 * MB, d, **dict(LINK, threshold=10**12))
    above = exact(5 * MB, d, **dict(LINK, threshold=1))
    for o, go in ((fits, True), (above, False)):
        got = make_policy("time-aware").decide(o)
        assert got.go == go == make_policy("switchover-ack").decide(o).go
        assert "no prediction" in got.reason and "loads on leaving RESUMING" in got.reason


def test_above_an_unreducible_floor_it_switches_once_the_rest_settles() -> None:
    # virtio: every image is the full context (virtiovf_read_device_context_chunk), so the
    # final image is the whole 320 MB again: 256 ms to send + 160 ms to load > 300 ms. No
    # amount of pre-copy gets under the limit; time-aware goes once what pre-copy does
    # reduce (RAM, unread images) fits the limit and stopped falling, and says so.
    p = make_policy("time-aware")
    draining = [p.decide(exact(5 * MB, vf("virtio", dirty=left), **LINK))
                for left in (300 * MB, 150 * MB, 40 * MB, 0, 0)]
    assert [d.action for d in draining] == ["wait"] * 4 + ["go"]
    assert "switching at that floor" in draining[-1].reason
    assert draining[-1].predicted_downtime_s == pytest.approx(
        (5 + 320) / 1250 + 320 / 2000, abs=1e-3)
    # The same rest right after the ACK: not yet known to have stopped falling.
    assert not make_policy("time-aware").decide(exact(5 * MB, vf("virtio", dirty=0), **LINK)).go


def test_the_load_rate_leaves_the_first_loads_setup_out_once_later_loads_show_it() -> None:
    # The destination's rate is bytes / busy time of every load, and the first held the
    # device's 1.48 s setup: 300 MB / 1.63 s = 184 MB/s. Once later loads carried enough,
    # their own rate (2 GB/s) is used.
    p = make_policy("time-aware")
    first = TargetLoad(loaded_bytes=300 * MB, busy_s=1.63, measured_load_rate=300 * MB / 1.63,
                       initial_loaded=True)
    later = TargetLoad(loaded_bytes=600 * MB, busy_s=1.78, measured_load_rate=600 * MB / 1.78,
                       initial_loaded=True)
    tiny = TargetLoad(loaded_bytes=301 * MB, busy_s=1.6305, measured_load_rate=301 * MB / 1.6305,
                      initial_loaded=True)
    view = vf("virtio", dirty=0)
    o = [exact(5 * MB, dataclasses.replace(view, target=t), **LINK) for t in (first, tiny, later)]
    assert p.predict(o[0]) == pytest.approx(0.26 + 320 * MB / first.measured_load_rate, abs=1e-3)
    # 1 MB more is too little to measure: still the reported rate.
    assert p.predict(o[1]) == pytest.approx(0.26 + 320 * MB / tiny.measured_load_rate, abs=1e-3)
    assert p.predict(o[2]) == pytest.approx(0.26 + 0.16, abs=1e-3)


def test_time_aware_observes_only_what_qemu_can_know() -> None:
    # No oracle: the only target-side inputs a DeviceView can carry are TargetLoad's, and
    # TargetLoad holds nothing a destination cannot measure (no configured setup time,
    # load rate or fixed costs). Source-side: precopy info, MIG_DATA_SIZE, the initial
    # image's size (vfio_save_setup's PRECOPY_INFO) and the bound driver's name.
    assert {f.name for f in dataclasses.fields(TargetLoad)} == {
        "loaded_bytes", "backlog_bytes", "busy_s", "measured_load_rate", "loading",
        "initial_loaded", "initial_load_s"}
    assert {f.name for f in dataclasses.fields(DeviceView)} == {
        "name", "initial_bytes_left", "dirty_bytes", "stop_copy_bytes", "target", "driver",
        "initial_image_bytes"}
    # ...and from the driver, only its documented semantics: the policy module reads the
    # profiles' data_size, pre_copy, incremental, image_cut and load, never `defaults`.
    import inspect

    import migbed.core.policy as policy_module
    assert "defaults" not in inspect.getsource(policy_module)


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


def test_qemus_rules_rest_on_the_data_whatever_they_decide() -> None:
    # legacy, initial-bytes-sent and switchover-ack: every go, wait and cancel is QEMU's
    # rule on the pending data (with the initial bytes, the ACK and its timeout).
    decisions = [
        make_policy("legacy").decide(obs(pending=9_999)),
        make_policy("legacy").decide(obs(pending=10_000)),
        make_policy("initial-bytes-sent").decide(obs(devices=(dev(1),))),
        make_policy("initial-bytes-sent").decide(obs(devices=(dev(0),))),
        make_policy("switchover-ack").decide(obs(ack=False)),
        make_policy("switchover-ack").decide(obs(ack=True)),
        make_policy("switchover-ack", 2.0, "cancel").decide(obs(ack_wait_s=2.0)),
        make_policy("switchover-ack", 2.0, "legacy").decide(obs(ack_wait_s=2.0)),
    ]
    assert [d.action for d in decisions] == ["go", "wait", "wait", "go", "wait", "go", "cancel", "go"]
    assert {d.basis for d in decisions} == {"data"}


def test_time_aware_names_the_rule_it_decided_by() -> None:
    # Before the ACK it is switchover-ack's rule, on the data.
    assert make_policy("time-aware").decide(exact(5 * MB, vf("mlx5"), **dict(LINK, ack=False))).basis == "data"
    # A device whose first load report is still due: the prediction waits for it.
    waiting = make_policy("time-aware").decide(exact(1_000, dev(rate=0.0), ack=True))
    assert (waiting.action, waiting.basis) == ("wait", "prediction")
    # A prediction above the limit (a 2000 B backlog at 10 kB/s) with no floor in the way:
    # it waits on the prediction.
    slow = make_policy("time-aware").decide(exact(1_000, dev(stop_copy=100, rate=1e4, backlog=2_000), ack=True))
    assert (slow.action, slow.basis) == ("wait", "prediction")
    # Above a floor, while the rest may still fall: it waits on the floor.
    draining = make_policy("time-aware").decide(exact(5 * MB, vf("virtio", dirty=0), **LINK))
    assert (draining.action, draining.basis) == ("wait", "floor")
    # Nothing to predict from: switchover-ack's rule, said so, whether it goes or waits.
    d = DeviceView("vf0", 0, 0, 320 * MB, TargetLoad(backlog_bytes=300 * MB), "qat", 300 * MB)
    for threshold in (10**12, 1):
        blind = make_policy("time-aware").decide(exact(5 * MB, d, **dict(LINK, threshold=threshold)))
        assert blind.basis == "data (no prediction)"


def test_a_decision_basis_is_one_of_the_closed_set() -> None:
    assert POLICY_BASES == ("data", "data (no prediction)", "prediction", "floor")
    assert set(BASES) - set(POLICY_BASES) == {"cap"}  # a cap is no policy's decision
    for wrong in ("cap", "Data", ""):
        with pytest.raises(ValueError, match="decision basis"):
            Decision("go", "because", 0.0, wrong)  # type: ignore[arg-type]


def test_decision_basis_names_what_a_go_rested_on() -> None:
    fits = make_policy("time-aware").decide(exact(5 * MB, vf("mlx5"), **LINK))
    legacy = make_policy("legacy").decide(exact(5 * MB, vf("mlx5"), **LINK))
    blind = make_policy("time-aware").decide(exact(
        5 * MB, DeviceView("vf0", 0, 0, 4096, TargetLoad(backlog_bytes=4096), "qat", 1024), **LINK))
    floor = make_policy("time-aware")
    for _ in range(3):
        at_floor = floor.decide(exact(5 * MB, vf("virtio", dirty=0), **LINK))
    assert [d.basis for d in (fits, legacy, blind, at_floor)] == [
        "prediction", "data", "data (no prediction)", "floor"]
    assert all(d.go for d in (fits, legacy, blind, at_floor))
