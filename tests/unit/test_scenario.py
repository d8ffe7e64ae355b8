"""Scenario parsing: units, defaults, and a clear error for every kind of bad value."""

import pytest

from migbed.core.scenario import (
    ScenarioError,
    builtin_scenario_text,
    builtin_scenarios,
    parse_scenario,
)
from migbed.core.units import UnitError, parse_bit_rate, parse_byte_rate, parse_duration, parse_size

GOOD = """
name = "t"
[guest]
ram-size = "512MiB"
dirty-rate = "32MiB/s"
working-set = "64MiB"
[[device]]
name = "vf0"
initial-bytes = "300MB"
dirty-rate = "1MiB/s"
stop-copy-size = "20MB"
load-setup-time = "1480ms"
load-rate = "2GB/s"
[migration]
downtime-limit = "300ms"
max-bandwidth = "128MiB/s"
max-iterations = 30
max-time = "120s"
[link]
rate = "1Gbit"
"""


def test_units() -> None:
    assert parse_size("512MiB") == 512 << 20
    assert parse_size("300MB") == 300_000_000
    assert parse_size(4096) == 4096
    assert parse_byte_rate("128MiB/s") == 128 << 20
    assert parse_bit_rate("1Gbit") == 1e9 and parse_bit_rate("100Mbit/s") == 1e8
    assert parse_duration("1480ms") == pytest.approx(1.48)
    for bad in ("-1MiB", "12 parsecs", "", "MiB"):
        with pytest.raises(UnitError):
            parse_size(bad)


def test_the_issue_example_parses() -> None:
    sc = parse_scenario(GOOD)
    assert sc.guest.ram_size == 512 << 20 and sc.guest.pages == 131072
    d = sc.devices[0]
    assert (d.initial_bytes, d.stop_copy_size, d.load_setup_time) == (300_000_000, 20_000_000, 1.48)
    assert sc.migration.max_bandwidth == 128 << 20 and sc.migration.max_iterations == 30
    assert sc.link.rate == 1e9


def test_builtin_scenarios_all_parse() -> None:
    names = builtin_scenarios()
    assert "mlx5-like" in names
    for n in names:
        parse_scenario(builtin_scenario_text(n), n)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('ram-size = "512MiB"', 'ram-size = "-5MiB"', "guest.ram-size"),
        ('ram-size = "512MiB"', 'ram-size = "512 furlongs"', "unknown size unit"),
        ('ram-size = "512MiB"', 'ram-size = "128TiB"', "out of range"),
        ('working-set = "64MiB"', 'working-set = "1GiB"', "guest.working-set"),
        ('dirty-rate = "32MiB/s"', 'dirty-rate = "32MiB"', "guest.dirty-rate"),
        ('load-rate = "2GB/s"', 'load-rate = "0GB/s"', "load-rate"),
        ('downtime-limit = "300ms"', 'downtime-limit = "0ms"', "migration.downtime-limit"),
        ('downtime-limit = "300ms"', 'downtime-limit = 300', "not a duration"),
        ("max-iterations = 30", "max-iterations = -1", "migration.max-iterations"),
        ("max-iterations = 30", 'max-iterations = "lots"', "expected an integer"),
        ('max-time = "120s"', 'max-time = "120s"\nmax-bandwith = "1GiB/s"', "unknown key"),
        ('rate = "1Gbit"', 'rate = "1Gbit"\ndelay = "10ms"', "netem"),
        ('rate = "1Gbit"', 'rate = "1Gbyte"', "link.rate"),
        ('name = "vf0"', 'name = "vf 0"', r"device\[0\]\.name"),
    ],
)
def test_bad_values_name_the_field(old: str, new: str, message: str) -> None:
    assert old in GOOD  # the case really changes the scenario
    with pytest.raises(ScenarioError, match=message):
        parse_scenario(GOOD.replace(old, new, 1))


def test_missing_guest_and_bad_toml() -> None:
    with pytest.raises(ScenarioError, match="guest"):
        parse_scenario('name = "x"')
    with pytest.raises(ScenarioError, match="not valid TOML"):
        parse_scenario("[guest")


def test_duplicate_device_names() -> None:
    twice = GOOD + GOOD[GOOD.index("[[device]]"):GOOD.index("[migration]")]
    with pytest.raises(ScenarioError, match="unique"):
        parse_scenario(twice)
