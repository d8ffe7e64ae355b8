"""Driver profiles and QEMU's VFIO paths, end to end: real source and target processes over
real gRPC, one small migration each, every run verified (state equal at the stop).

Each test names the driver or QEMU function it follows (docs/fidelity.md, "Devices").
"""

from __future__ import annotations

import pytest
from driverlab import SHAPES, device, migrate

from migbed.core.drivers import DRIVERS
from migbed.experiments.localstack import Service
from migbed.measure.record import RunRecord


def test_every_driver_is_covered() -> None:
    assert set(SHAPES) == set(DRIVERS)


@pytest.mark.parametrize("driver", sorted(DRIVERS))
def test_every_driver_migrates_verified(stack: tuple[Service, Service], driver: str) -> None:
    p = DRIVERS[driver]
    r = migrate(stack, device(driver))
    markers = [e.name for e in r.events if e.name.startswith("init-data-sent")]
    # Only a PRE_COPY device sends initial data and approves the switchover
    # (vfio_switchover_ack_needed); without one the destination ACKs at once.
    assert markers == (["init-data-sent:vf0"] if p.pre_copy else [])
    # vm_start moves the device to RUNNING before the Shut: the driver's resume commands.
    if p.resume:
        assert r.device_resume_ms >= 40, r.device_resume_ms
    if p.load == "on-stop":
        # hisi_acc/pds/qat load on RESUMING -> STOP at vm_start: the 200 ms setup is paid
        # after the last byte was read, inside the downtime, whatever the ACK said.
        assert r.destination_load_ms >= 190, r.destination_load_ms
    elif p.pre_copy:
        # the initial image loads during pre-copy: the ACK kept the setup out of downtime
        assert r.destination_load_ms + r.delivery_ms < 190
    if p.dirty_tracking == "device":
        assert r.tracker_report_ms > 0
    [sc] = r.device_stop_copy
    assert sc.name == "vf0" and sc.save_ready_ms >= sc.save_start_ms > 0
    assert sc.sent_ms <= r.stop_copy_ms + 1


def test_async_saves_overlap_ram_and_each_other(stack: tuple[Service, Service]) -> None:
    # mlx5's STOP_COPY save is asynchronous (mlx5_cmd_exec_cb from the arc at vm_stop):
    # both devices' saves run at once, beside RAM's final copy. generic saves at its turn,
    # one after the other. The record's per-device times show which.
    save = 'stop-copy-save-time = "300ms"\nsuspend-time = "0ms"'
    mlx5 = migrate(stack, device("mlx5", "vf0", save) + device("mlx5", "vf1", save))
    gen = migrate(stack, device("generic", "vf0", save) + device("generic", "vf1", save))
    a, b = mlx5.device_stop_copy
    assert b.save_start_ms < a.save_ready_ms  # vf1's save began before vf0's ended
    assert a.save_start_ms < mlx5.ram_stop_copy_ms  # and both under RAM's final copy
    # the stop-copy waited for what was left of one save (300 ms less RAM's copy), not two
    assert 150 < mlx5.device_save_ms < 400
    g0, g1 = gen.device_stop_copy
    assert g0.save_start_ms >= gen.ram_stop_copy_ms  # generic: after RAM, at its turn
    assert g1.save_start_ms >= g0.save_ready_ms  # one after the other
    assert gen.device_save_ms >= 600
    assert mlx5.stop_copy_ms < gen.stop_copy_ms - 200


def test_mlx5_data_size_holds_legacy_back(stack: tuple[Service, Service]) -> None:
    # mlx5vf_pci_get_data_size reports the whole state (here 20 MB + 1 MB): with a threshold
    # of 128 MiB/s x 100 ms (13.4 MB) the exact pending (vfio_state_pending_exact) never
    # fits, so only a cap ends pre-copy. generic reports what is left (the 1 MB context
    # once pre-copy sent the rest): it switches on data.
    big = 'initial-bytes = "20MB"'
    mlx5 = migrate(stack, device("mlx5").replace('initial-bytes = "4MB"', big), "legacy",
                   max_iterations="30")
    gen = migrate(stack, device("generic").replace('initial-bytes = "4MB"', big), "legacy",
                  max_iterations="30")
    assert mlx5.forced_by_cap == "max-iterations", mlx5.decision_reason
    assert gen.forced_by_cap == "", gen.decision_reason
    assert (mlx5.decision_basis, gen.decision_basis) == ("cap", "data")


def test_81_devices_wait_for_ram_not_for_each_other(stack: tuple[Service, Service]) -> None:
    # 8.1: qemu_savevm_state_iterate stopped at RAM until its bitmap was empty, but
    # vfio_save_iterate returned 1, so devices never held each other back. 10.0: every
    # handler iterates each pass. A 256 MiB guest and a budget RAM cannot spend in its 50 ms
    # turn (ram_save_iterate's MAX_WAIT), so a device's turn comes inside RAM's first pass.
    two = device("generic", "vf0") + device("generic", "vf1")
    fast = {"ram": "256MiB", "max_bandwidth": '"4GiB/s"', "avail_switchover_bandwidth": ""}
    old = migrate(stack, two, qemu_version='"8.1"', **fast)
    new = migrate(stack, two, **fast)

    def device_bytes_in_first_pass(r: RunRecord) -> int:
        # samples before the first exact pending's sync: RAM's first pass (bulk stage)
        return max((s.device_transferred_bytes for s in r.timeline
                    if s.phase == "precopy" and s.dirty_sync_count == 1), default=0)

    assert device_bytes_in_first_pass(old) == 0
    assert device_bytes_in_first_pass(new) > 0
    t0, t1 = (old.event_time(f"init-data-sent:{n}") for n in ("vf0", "vf1"))
    assert t0 is not None and t1 is not None
    # 4 MB each, a 1 MiB read per device per pass: interleaved they finish a pass apart.
    assert abs(t1 - t0) < 50, (t0, t1)


def test_vm_start_transitions_before_the_shut(stack: tuple[Service, Service]) -> None:
    # process_incoming_migration_bh: vm_start (the devices' arcs to RUNNING, mlx5:
    # mlx5vf_cmd_resume_vhca twice) before migration_incoming_state_destroy sends the Shut:
    # with the return path the reported downtime holds them; without it, only the guest's.
    slow = device("mlx5").replace('resume-time = "50ms"', 'resume-time = "300ms"')
    rp = migrate(stack, slow)
    assert rp.device_resume_ms >= 290
    assert rp.downtime_ms >= rp.stop_copy_ms + rp.device_resume_ms
    no_rp = migrate(stack, slow, "legacy", return_path="false")
    assert no_rp.device_resume_ms >= 290
    assert no_rp.downtime_ms < no_rp.device_resume_ms  # ends at the last byte
    assert no_rp.guest_downtime_ms >= no_rp.stop_copy_ms + no_rp.device_resume_ms


def test_tracker_report_at_the_final_sync(stack: tuple[Service, Service]) -> None:
    # ram_save_complete's sync asks each device tracker for
    # VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT over guest RAM, inside the downtime. 16 MiB at
    # 160 MiB/s: 100 ms.
    r = migrate(stack, device("mlx5", extra='tracker-report-rate = "160MiB/s"'))
    assert 100 <= r.tracker_report_ms < 110
    assert r.stop_copy_ms >= r.tracker_report_ms
    # Only when every device tracks its own DMA: with an IOMMU-tracked one, none reports.
    mixed = migrate(stack, device("mlx5", extra='tracker-report-rate = "160MiB/s"')
                    + device("virtio", "vf1"))
    assert mixed.tracker_report_ms == 0
