"""shaping.py's pure part: a scenario's [link] -> the tc argv that shapes the source."""

from __future__ import annotations

import pytest

from migbed.core.scenario import LinkConfig, ScenarioError, parse_scenario
from migbed.env.shaping import (
    FRAME_EFFICIENCY,
    MIN_BURST_BYTES,
    LinkShape,
    NetemUnavailable,
    ShapingError,
    clear_commands,
    link_shape,
    shaping_commands,
)


def _link(**kw: str) -> LinkShape | None:
    """A [link] table through the scenario parser, as a run reads it."""
    body = "".join(f'{k} = "{v}"\n' for k, v in kw.items())
    return link_shape(parse_scenario(f'[guest]\nram-size = "16MiB"\n[link]\n{body}').link)


def test_explicit_link_is_one_tbf_replace() -> None:
    shape = _link(rate="1Gbit", burst="1MB", latency="50ms")
    assert shape is not None
    assert shaping_commands("eth0", shape, netem_available=False) == [
        [
            "tc", "qdisc", "replace", "dev", "eth0", "root",
            "tbf", "rate", "1000000000bit", "burst", "1000000", "latency", "50000us",
        ]
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("rate", "bps"), [("100Mbit", 10**8), ("1Gbit", 10**9), ("5Gbit", 5 * 10**9)]
)
def test_rates_from_scenario_units(rate: str, bps: int) -> None:
    shape = _link(rate=rate)
    assert shape is not None
    assert shape.rate_bps == bps
    argv = shaping_commands("eth0", shape, netem_available=False)[0]
    assert argv[argv.index("rate") + 1] == f"{bps}bit"


def test_no_link_or_zero_rate_means_unshaped() -> None:
    assert link_shape(LinkConfig()) is None
    assert link_shape(parse_scenario('[guest]\nram-size = "16MiB"\n').link) is None


def test_default_burst_is_5ms_of_rate_but_at_least_64KiB() -> None:
    assert LinkShape(rate_bps=10**9).effective_burst_bytes == 625_000
    assert LinkShape(rate_bps=5 * 10**9).effective_burst_bytes == 3_125_000
    # 100 Mbit x 5 ms = 62.5 kB, below the floor
    assert LinkShape(rate_bps=100 * 10**6).effective_burst_bytes == MIN_BURST_BYTES
    shape = _link(rate="100Mbit")
    assert shape is not None
    argv = shaping_commands("eth0", shape, netem_available=False)[0]
    assert argv[argv.index("burst") + 1] == str(MIN_BURST_BYTES)
    assert argv[argv.index("latency") + 1] == "50000us"


@pytest.mark.parametrize(
    "shape",
    [
        LinkShape(rate_bps=10**9, delay_s=0.01),
        LinkShape(rate_bps=10**9, loss=0.01),
        LinkShape(rate_bps=10**9, delay_s=0.005, loss=0.001),
    ],
)
def test_delay_and_loss_are_refused_without_netem(shape: LinkShape) -> None:
    with pytest.raises(NetemUnavailable, match="netem"):
        shaping_commands("eth0", shape, netem_available=False)


@pytest.mark.parametrize("key", ["delay", "loss"])
def test_scenario_parser_refuses_delay_and_loss_too(key: str) -> None:
    with pytest.raises(ScenarioError, match="netem"):
        _link(rate="1Gbit", **{key: "10ms" if key == "delay" else "1%"})


def test_delay_and_loss_chain_netem_under_tbf_where_netem_exists() -> None:
    shape = LinkShape(rate_bps=10**8, delay_s=0.01, loss=0.005)
    root, child = shaping_commands("eth0", shape, netem_available=True)
    assert root[:8] == ["tc", "qdisc", "replace", "dev", "eth0", "root", "handle", "1:"]
    assert "tbf" in root
    assert child[5:8] == ["parent", "1:1", "handle"]
    assert child[child.index("delay") + 1] == "10000us"
    assert child[child.index("loss") + 1] == "0.5%"


def test_zero_delay_and_loss_need_no_netem() -> None:
    shape = LinkShape(rate_bps=10**9, delay_s=0.0, loss=0.0)
    assert len(shaping_commands("eth0", shape, netem_available=False)) == 1


@pytest.mark.parametrize(
    "kw",
    [
        {"rate_bps": 0},
        {"rate_bps": 10**9, "burst_bytes": 100},
        {"rate_bps": 10**9, "latency_s": 0.0},
        {"rate_bps": 10**9, "loss": 1.5},
        {"rate_bps": 10**9, "delay_s": -1.0},
    ],
)
def test_invalid_shapes_are_refused(kw: dict[str, float]) -> None:
    with pytest.raises(ShapingError):
        LinkShape(**kw)  # type: ignore[arg-type]


def test_expected_goodput_uses_frame_efficiency() -> None:
    assert abs(FRAME_EFFICIENCY - 0.9564) < 1e-4
    assert LinkShape(rate_bps=10**8).expected_goodput_bps() == pytest.approx(95_640_687, rel=1e-6)


def test_clear() -> None:
    assert clear_commands("eth0") == [["tc", "qdisc", "del", "dev", "eth0", "root"]]
