"""`migbed predict` follows the driver profiles as the engine does (migbed/model/precopy.py)."""

from __future__ import annotations

import pytest

from migbed.core.scenario import parse_scenario
from migbed.model.predict import predict

BASE = """
name = "model-drivers"
[guest]
ram-size = "64MiB"
dirty-rate = "8MiB/s"
working-set = "16MiB"
{devices}
[migration]
downtime-limit = "300ms"
max-bandwidth = "1GiB/s"
avail-switchover-bandwidth = "{avail}"
max-iterations = 50
max-time = "60s"
"""


# Every timing input set, so only the driver's semantics differ between devices.
INPUTS = {"initial-bytes": '"100MB"', "stop-copy-size": '"10MB"', "load-setup-time": '"1s"',
          "load-rate": '"2GB/s"', "stop-copy-load-time": '"0ms"', "stop-copy-save-time": '"0ms"',
          "suspend-time": '"0ms"', "resume-time": '"0ms"', "tracker-report-rate": '"0B/s"'}


def dev(driver: str, name: str = "vf0", **over: str) -> str:
    keys = INPUTS | {k.replace("_", "-"): f'"{v}"' for k, v in over.items()}
    body = "\n".join(f"{k} = {v}" for k, v in keys.items())
    return f'[[device]]\nname = "{name}"\ndriver = "{driver}"\n{body}\n'


def outcomes(devices: str, avail: str = "1250MB/s") -> dict:
    sc = parse_scenario(BASE.format(devices=devices, avail=avail))
    return predict(sc, ["legacy", "switchover-ack"]).outcomes


def test_whole_state_data_size_keeps_both_policies_above_the_threshold() -> None:
    # mlx5's MIG_DATA_SIZE stays the whole state (110 MB) however much pre-copy sent; a
    # threshold of 176 MB/s x 300 ms = 53 MB never fits it: both policies are capped.
    # generic reports what is left (10 MB once the initial image is sent): it fits.
    mlx5 = outcomes(dev("mlx5"), avail="176MB/s")
    gen = outcomes(dev("generic"), avail="176MB/s")
    assert {o.forced_by_cap for o in mlx5.values()} == {"max-iterations"}
    assert {o.forced_by_cap for o in gen.values()} == {""}
    assert {o.basis for o in mlx5.values()} == {"cap"} and {o.basis for o in gen.values()} == {"data"}


def test_async_save_overlaps_and_sync_save_does_not() -> None:
    mlx5 = outcomes(dev("mlx5", "vf0", stop_copy_save_time="300ms")
                    + dev("mlx5", "vf1", stop_copy_save_time="300ms"))["switchover-ack"]
    virtio = outcomes(dev("virtio", "vf0", stop_copy_save_time="300ms")
                      + dev("virtio", "vf1", stop_copy_save_time="300ms"))["switchover-ack"]
    assert mlx5.save_s == pytest.approx(0.3, abs=0.05)  # both saves at once, beside RAM
    assert virtio.save_s == pytest.approx(0.6, abs=0.01)  # inside vm_stop, one after the other
    assert mlx5.downtime_s < virtio.downtime_s - 0.2


def test_on_stop_loads_at_vm_start_under_every_policy() -> None:
    # hisi_acc/pds/qat load on RESUMING -> STOP: the ACK cannot take the 1 s setup out.
    for o in outcomes(dev("qat")).values():
        assert o.downtime_s > 1.0
    ack = outcomes(dev("mlx5"))["switchover-ack"]
    assert ack.downtime_s < 0.5  # mlx5 loads during pre-copy: the ACK waits for it


def test_resume_time_is_inside_the_downtime() -> None:
    base = outcomes(dev("mlx5"))["switchover-ack"].downtime_s
    slow = outcomes(dev("mlx5", resume_time="200ms"))["switchover-ack"].downtime_s
    assert slow == pytest.approx(base + 0.2, abs=0.02)


def test_a_device_without_precopy_sends_everything_in_stop_copy() -> None:
    pds = outcomes(dev("pds"))["legacy"]
    assert pds.downtime_bytes >= 110e6
    assert pds.ack_s == 0.0  # no device needs to approve: the ACK is immediate
