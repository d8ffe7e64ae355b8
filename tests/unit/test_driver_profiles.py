"""Driver profiles (migbed/core/drivers.py) and what they change in the device and in QEMU's
view of it (migbed/core/device.py, migbed/core/vfio_migration.py). Pure: no I/O, no clock."""

from __future__ import annotations

import numpy as np
import pytest

from migbed.core import drivers as drv
from migbed.core.device import SourceDevice, VfioState
from migbed.core.scenario import DeviceConfig, ScenarioError, parse_scenario
from migbed.core.vfio_migration import VfioMigration
from migbed.services.source.devices import SaveTimes, blocked_s

S = VfioState
BLOCK = 4096


def _dev(driver: str, initial: int = 64 * BLOCK, stop: int = 10_000, save: float = 0.0) -> SourceDevice:
    return SourceDevice(DeviceConfig("vf0", initial_bytes=initial, stop_copy_size=stop,
                                     block_size=BLOCK, stop_copy_save_time=save,
                                     driver=driver), seed=3)


def _read_all(dev: SourceDevice | VfioMigration, n: int = 1 << 20) -> int:
    total = 0
    while True:
        chunks = dev.save_block(n) if isinstance(dev, VfioMigration) else dev.read(n)
        if not chunks:
            return total
        total += sum(len(c.data) for c in chunks)


# ---------------------------------------------------------------- profiles


def test_every_profile_is_consistent_and_cited() -> None:
    assert drv.DEFAULT_DRIVER == "generic" and "mlx5" in drv.DRIVERS
    for p in drv.DRIVERS.values():
        if p.real:
            for f in ("pre_copy", "data_size", "image_cut", "stop_copy_save", "load", "resume",
                      "dirty_tracking"):
                assert p.cites.get(f), f"{p.name}: {f} has no citation"
            assert p.load != drv.LOAD_FROM_SCENARIO
        for key, d in p.defaults.items():
            assert d.source.startswith(("published:", "guess:")), (p.name, key)
        assert drv.describe(p)[0].startswith(p.name)


def test_a_bogus_driver_is_refused_naming_the_field_and_the_drivers() -> None:
    text = '[guest]\nram-size = "16MiB"\n[[device]]\nname = "vf0"\ninitial-bytes = "1MB"\ndriver = "bogus"\n'
    with pytest.raises(ScenarioError) as e:
        parse_scenario(text)
    msg = str(e.value)
    assert "device[0].driver" in msg and "'bogus'" in msg
    assert all(name in msg for name in drv.DRIVERS)


def test_driver_defaults_and_fixed_load_trigger() -> None:
    base = '[guest]\nram-size = "16MiB"\n[[device]]\nname = "vf0"\ninitial-bytes = "1MB"\n'
    mlx5 = parse_scenario(base + 'driver = "mlx5"\n').devices[0]
    assert mlx5.driver == "mlx5" and mlx5.load_trigger == "image-complete"
    assert mlx5.load_setup_time == drv.MLX5.defaults["load-setup-time"].value
    assert mlx5.tracker_report_rate > 0 and mlx5.resume_time > 0
    # an input overrides the profile's default
    assert parse_scenario(base + 'driver = "mlx5"\nload-setup-time = "2s"\n').devices[0].load_setup_time == 2
    generic = parse_scenario(base + 'load-trigger = "per-chunk"\n').devices[0]
    assert generic.driver == "generic" and generic.load_trigger == "per-chunk"
    assert generic.tracker_report_rate == 0 and generic.resume_time == 0
    with pytest.raises(ScenarioError, match=r"device\[0\]\.load-trigger = 'per-chunk': driver 'mlx5'"):
        parse_scenario(base + 'driver = "mlx5"\nload-trigger = "per-chunk"\n')


# ---------------------------------------------------------------- MIG_DATA_SIZE


def test_mlx5_data_size_is_the_whole_state_whatever_precopy_sent() -> None:
    # mlx5vf_pci_get_data_size queries without MLX5VF_QUERY_INC: the whole device state.
    dev = _dev("mlx5")
    dev.set_state(S.PRE_COPY)
    whole = 64 * BLOCK + 10_000
    assert dev.stop_copy_size() == whole
    _read_all(dev)
    assert dev.initial_sent and dev.stop_copy_size() == whole


def test_generic_data_size_is_what_is_left() -> None:
    dev = _dev("generic")
    dev.set_state(S.PRE_COPY)
    assert dev.stop_copy_size() == 64 * BLOCK + 10_000
    _read_all(dev)
    assert dev.stop_copy_size() == 10_000


# ---------------------------------------------------------------- image cadence


def test_mlx5_cuts_an_image_only_in_precopy_info() -> None:
    dev = _dev("mlx5")
    dev.set_state(S.PRE_COPY)
    assert dev.precopy_info() == (64 * BLOCK, 0)  # dirty bytes hidden until initial is read
    dev.dirty_blocks(np.array([5]))  # not read yet: goes with the initial image
    assert _read_all(dev) == 64 * BLOCK
    dev.dirty_blocks(np.array([1, 2]))
    assert dev.read(1 << 20) == []  # ENOMSG: a read never cuts an image
    assert dev.images_cut == 0
    assert dev.precopy_info() == (0, 2 * BLOCK)  # the ioctl cuts one: now readable
    assert dev.images_cut == 1
    dev.dirty_blocks(np.array([3]))
    assert dev.precopy_info() == (0, 3 * BLOCK)  # unread rest + the increment, no new cut
    assert dev.images_cut == 1
    assert _read_all(dev) == 2 * BLOCK
    assert dev.read(1 << 20) == []
    assert dev.precopy_info() == (0, BLOCK) and dev.images_cut == 2
    dev.set_state(S.PRE_COPY_P2P)
    dev.dirty_blocks(np.array([7]))  # stopped: no change
    assert _read_all(dev) == BLOCK
    assert dev.precopy_info() == (0, 0) and dev.images_cut == 2  # no SAVE in PRE_COPY_P2P


def test_generic_cuts_an_image_on_read() -> None:
    dev = _dev("generic")
    dev.set_state(S.PRE_COPY)
    _read_all(dev)
    dev.dirty_blocks(np.array([1, 2]))
    assert dev.precopy_info() == (0, 2 * BLOCK)
    assert dev.images_cut == 0
    assert _read_all(dev) == 2 * BLOCK and dev.images_cut == 1


# ---------------------------------------------------------------- QEMU's side


def test_qemu_asks_precopy_info_only_in_setup_and_exact() -> None:
    dev = _dev("mlx5")
    v = VfioMigration(dev)
    v.save_setup()
    assert dev.state == S.PRE_COPY and v.precopy_info_calls == 1
    assert v.stop_copy_size == 64 * BLOCK + 10_000
    assert v.pending_estimate() == 64 * BLOCK  # the cache, counted down as it is read
    assert sum(len(c.data) for c in v.save_block(10 * BLOCK)) == 10 * BLOCK
    assert v.pending_estimate() == 54 * BLOCK and v.precopy_info_calls == 1
    assert not v.init_data_sent_due()
    _read_all(v)
    assert v.pending_estimate() == 0 and v.init_data_sent_due() and not v.init_data_sent_due()
    dev.dirty_blocks(np.array([1, 2]))
    assert v.pending_estimate() == 0  # the estimate does not see new dirty state
    assert v.save_block(1 << 20) == []  # and mlx5 has nothing readable (ENOMSG)
    assert dev.images_cut == 0 and v.precopy_info_calls == 1
    # vfio_state_pending_exact: MIG_DATA_SIZE (the whole state) + fresh initial + dirty
    assert v.pending_exact() == (64 * BLOCK + 10_000) + 2 * BLOCK
    assert v.precopy_info_calls == 2 and dev.images_cut == 1
    assert v.pending_estimate() == 2 * BLOCK
    assert _read_all(v) == 2 * BLOCK and v.pending_estimate() == 0


def test_enomsg_zeroes_qemus_estimate() -> None:
    # vfio_update_estimated_pending_data: a read of 0 bytes zeroes both cached sizes.
    dev = _dev("mlx5")
    v = VfioMigration(dev)
    v.save_setup()
    _read_all(v)
    dev.dirty_blocks(np.array([1]))
    v.pending_exact()
    v.precopy_dirty_size += 5 * BLOCK  # as if the ioctl had said more than it saved
    _read_all(v)
    assert v.pending_estimate() == 0


def test_a_device_without_precopy_sends_everything_in_stop_copy() -> None:
    dev = SourceDevice(DeviceConfig("vf0", initial_bytes=8 * BLOCK, stop_copy_size=1000,
                                    block_size=BLOCK, stop_copy_save_time=0.5), seed=1)
    object.__setattr__(dev, "driver", drv.DriverProfile(
        "nopre", True, "test", pre_copy=False, initial_bytes="", dirty_while_initial=False,
        data_size=drv.REMAINING, image_cut=drv.CUT_NEVER, stop_copy_save=drv.SAVE_SYNC,
        load=drv.LOAD_ON_STOP, resume=False, dirty_tracking=drv.TRACKING_IOMMU))
    v = VfioMigration(dev)
    v.save_setup()
    assert dev.state == S.RUNNING and v.pending_estimate() == 0
    assert dev.begin_stop_copy(10.0) == 0.0 and dev.state == S.STOP  # vfio_vmstate_change
    # its turn in vfio_save_complete_precopy: STOP -> STOP_COPY, a synchronous save
    assert dev.save_wait(20.0) == 0.5 and dev.state == S.STOP_COPY
    assert dev.save_wait(20.5) == 0.0
    chunks = dev.read(1 << 20, now=20.5)
    assert {c.kind for c in chunks} == {"final"}
    assert sum(len(c.data) for c in chunks) == 8 * BLOCK + 1000 and dev.stop_copy_done


# ---------------------------------------------------------------- the stop-copy save


def test_async_save_starts_at_the_stop_and_is_readable_when_done() -> None:
    # mlx5: the arc to STOP_COPY issues SAVE through mlx5_cmd_exec_cb; vm_stop does not wait.
    dev = _dev("mlx5", save=0.2)
    dev.set_state(S.PRE_COPY)
    dev.read(10 * BLOCK)  # an initial image begun in pre-copy
    assert dev.begin_stop_copy(100.0) == 0.0
    assert dev.save_times == (100.0, 100.2)
    early = dev.read(1 << 20, now=100.1)  # the rest of the open image is readable at once
    assert {c.kind for c in early} == {"initial"} and not dev.stop_copy_done
    assert dev.read(1 << 20, now=100.1) == []  # the final image is not, yet
    assert dev.save_wait(100.1) == pytest.approx(0.1)
    assert {c.kind for c in dev.read(1 << 20, now=100.2)} == {"final"} and dev.stop_copy_done


def test_generic_saves_at_its_turn() -> None:
    dev = _dev("generic", save=0.2)
    dev.set_state(S.PRE_COPY)
    assert dev.begin_stop_copy(100.0) == 0.0 and dev.save_times == (None, None)
    assert dev.save_wait(105.0) == pytest.approx(0.2)  # starts when its turn asks
    assert dev.save_times == (105.0, 105.2)


def test_blocked_time_counts_overlapping_waits_once() -> None:
    a, b = SaveTimes(waits=[(0.0, 1.0), (2.0, 3.0)]), SaveTimes(waits=[(0.5, 1.5)])
    assert blocked_s([a, b]) == pytest.approx(2.5)
    assert blocked_s([]) == 0.0
