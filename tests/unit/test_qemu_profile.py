"""QEMU version profiles: each behaviour that changed, and the scenario keys that select them."""

from __future__ import annotations

import pytest

from migbed.core.qemu_profile import DEFAULT_VERSION, PROFILES, qemu_profile
from migbed.core.scenario import QEMU_VERSIONS, ScenarioError, parse_scenario

BASE = """
[guest]
ram-size = "16MiB"
[migration]
{extra}
"""


def test_every_scenario_version_has_a_profile() -> None:
    assert set(PROFILES) == set(QEMU_VERSIONS)
    assert parse_scenario(BASE.format(extra="")).migration.qemu_version == DEFAULT_VERSION


def test_devices_serialised_behind_ram_before_9_0() -> None:
    # qemu_savevm_state_iterate stopped at the first unfinished handler until commit
    # 4e1871c450 (9.0).
    assert qemu_profile("8.1").devices_wait_for_ram
    assert not qemu_profile("9.2").devices_wait_for_ram
    assert not qemu_profile("10.0").devices_wait_for_ram


def test_avail_switchover_bandwidth_from_8_2() -> None:
    assert not qemu_profile("8.1").avail_switchover_bandwidth
    assert qemu_profile("9.2").avail_switchover_bandwidth
    with pytest.raises(ScenarioError, match=r"avail-switchover-bandwidth.*8\.2"):
        parse_scenario(BASE.format(extra='qemu-version = "8.1"\n'
                                         'avail-switchover-bandwidth = "1GiB/s"'))


def test_multifd_device_state_from_10_0() -> None:
    assert [v for v, p in PROFILES.items() if p.multifd_device_state] == ["10.0", "10.1"]
    with pytest.raises(ScenarioError, match=r"10\.0"):
        parse_scenario(BASE.format(extra='qemu-version = "9.2"\nmultifd = true\n'
                                         'device-state-transfer = "multifd"'))


@pytest.mark.parametrize(("extra", "resolved"), [
    ("multifd = true", "multifd"),  # QEMU 10.0's x-migration-multifd-transfer = auto
    ('multifd = true\ndevice-state-transfer = "auto"', "multifd"),
    ('multifd = true\ndevice-state-transfer = "main"', "main"),  # explicit off
    ('multifd = true\nqemu-version = "9.2"', "main"),  # before 10.0 there is none
    ("", "main"),  # no multifd channels
])
def test_device_state_transfer_auto_follows_qemu(extra: str, resolved: str) -> None:
    mig = parse_scenario(BASE.format(extra=extra)).migration
    assert mig.device_state_transfer == resolved


def test_device_state_transfer_refusals_name_the_field() -> None:
    with pytest.raises(ScenarioError, match=r"device-state-transfer = \"multifd\" needs "
                                            r"migration.multifd = true"):
        parse_scenario(BASE.format(extra='device-state-transfer = "multifd"'))
    with pytest.raises(ScenarioError, match=r"device-state-transfer.*auto.*main.*multifd"):
        parse_scenario(BASE.format(extra='device-state-transfer = "grpc"'))


def test_switchover_test_is_strict_up_to_10_0() -> None:
    # "(!pending_size || pending_size < threshold_size)" until 10.1's "<=" (7aaa1fc072).
    assert [v for v, p in PROFILES.items() if p.threshold_inclusive] == ["10.1"]


def test_unknown_version_is_named() -> None:
    with pytest.raises(ValueError, match=r"allowed 8\.1, 9\.2, 10\.0"):
        qemu_profile("7.2")
