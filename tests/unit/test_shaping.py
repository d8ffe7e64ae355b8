"""shaping.py's pure part: [link] units and the tc argv it produces."""

from __future__ import annotations

import pytest

from migbed.orchestration.shaping import (
    FRAME_EFFICIENCY,
    MIN_BURST_BYTES,
    LinkShape,
    NetemUnavailable,
    ShapingError,
    clear_commands,
    parse_duration,
    parse_link,
    parse_rate,
    parse_size,
    shaping_commands,
)


@pytest.mark.parametrize(
    ("text", "bps"),
    [
        ("100Mbit", 100_000_000),
        ("1Gbit", 10**9),
        ("5Gbit", 5 * 10**9),
        ("2.5gbit", 2_500_000_000),
        ("800kbit", 800_000),
        ("10MBps", 80_000_000),
        ("1000", 1000),
        (10**9, 10**9),
    ],
)
def test_parse_rate(text: str | int, bps: int) -> None:
    assert parse_rate(text) == bps


def test_parse_size_and_duration() -> None:
    assert parse_size("1MB") == 1_000_000
    assert parse_size("1MiB") == 1_048_576
    assert parse_size("64KiB") == 65_536
    assert parse_size(1500) == 1500
    assert parse_duration("50ms") == pytest.approx(0.05)
    assert parse_duration("250us") == pytest.approx(0.00025)
    assert parse_duration(2) == 2.0


@pytest.mark.parametrize("bad", ["fast", "10Mbyte", "1 Gbits/s x", ""])
def test_bad_rate_is_refused(bad: str) -> None:
    with pytest.raises(ShapingError):
        parse_rate(bad)


def test_plain_link_is_one_tbf_replace() -> None:
    shape = parse_link({"rate": "1Gbit", "burst": "1MB", "latency": "50ms"})
    assert shaping_commands("eth0", shape, netem_available=False) == [
        [
            "tc",
            "qdisc",
            "replace",
            "dev",
            "eth0",
            "root",
            "tbf",
            "rate",
            "1000000000bit",
            "burst",
            "1000000",
            "latency",
            "50000us",
        ]
    ]


def test_default_burst_is_5ms_of_rate_but_at_least_64KiB() -> None:
    assert LinkShape(rate_bps=10**9).effective_burst_bytes == 625_000
    assert LinkShape(rate_bps=5 * 10**9).effective_burst_bytes == 3_125_000
    # 100 Mbit x 5 ms = 62.5 kB, below the floor
    assert LinkShape(rate_bps=100 * 10**6).effective_burst_bytes == MIN_BURST_BYTES
    argv = shaping_commands("eth0", LinkShape(rate_bps=10**8), netem_available=False)[0]
    assert argv[argv.index("burst") + 1] == str(MIN_BURST_BYTES)
    assert argv[argv.index("latency") + 1] == "50000us"


@pytest.mark.parametrize(
    "extra", [{"delay": "10ms"}, {"loss": "1%"}, {"delay": "5ms", "loss": 0.01}]
)
def test_delay_and_loss_are_refused_without_netem(extra: dict[str, object]) -> None:
    shape = parse_link({"rate": "1Gbit", **extra})
    with pytest.raises(NetemUnavailable, match="netem"):
        shaping_commands("eth0", shape, netem_available=False)


def test_delay_and_loss_chain_netem_under_tbf_where_netem_exists() -> None:
    shape = parse_link({"rate": "100Mbit", "delay": "10ms", "loss": "0.5%"})
    root, child = shaping_commands("eth0", shape, netem_available=True)
    assert root[:8] == ["tc", "qdisc", "replace", "dev", "eth0", "root", "handle", "1:"]
    assert "tbf" in root
    assert child[5:8] == ["parent", "1:1", "handle"]
    assert child[child.index("delay") + 1] == "10000us"
    assert child[child.index("loss") + 1] == "0.5%"


def test_zero_delay_needs_no_netem() -> None:
    shape = parse_link({"rate": "1Gbit", "delay": "0ms", "loss": 0})
    assert len(shaping_commands("eth0", shape, netem_available=False)) == 1


@pytest.mark.parametrize(
    "table",
    [
        {},
        {"rate": "0bit"},
        {"rate": "1Gbit", "burst": "100B"},
        {"rate": "1Gbit", "jitter": "1ms"},
        {"rate": "1Gbit", "loss": "150%"},
    ],
)
def test_invalid_links_are_refused(table: dict[str, object]) -> None:
    with pytest.raises(ShapingError):
        parse_link(table)


def test_expected_goodput_uses_frame_efficiency() -> None:
    assert abs(FRAME_EFFICIENCY - 0.9564) < 1e-4
    assert LinkShape(rate_bps=10**8).expected_goodput_bps() == pytest.approx(95_640_687, rel=1e-6)


def test_clear() -> None:
    assert clear_commands("eth0") == [["tc", "qdisc", "del", "dev", "eth0", "root"]]
