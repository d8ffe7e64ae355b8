"""Link shaping with ``tc``: a scenario's ``[link]`` section becomes tbf on the sender's egress.

The pure part (``LinkShape``, ``shaping_commands``, ``parse_link``) builds argv lists and knows
nothing about processes or containers; ``apply_in_container`` runs them in a container through
the Docker SDK. tc shapes egress only, so the shape goes on the *source* container's interface
(the side that sends guest RAM and device state).

This kernel has no ``netem``: a requested ``delay`` or ``loss`` raises ``NetemUnavailable``
instead of being silently dropped (a run without the delay would measure something else).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

# tbf's token bucket must hold at least a few full frames and a few ms of traffic, or TCP
# falls short of the rate (migration-facts §9: burst rate x 1-10 ms holds it within 1 %).
MIN_BURST_BYTES = 64 * 1024
DEFAULT_BURST_SECONDS = 0.005
# How long a packet may wait in tbf's queue; it sets the queue limit. 50 ms keeps TCP at the
# rate without unbounded buffering.
DEFAULT_LATENCY_SECONDS = 0.050

# Goodput of TCP over Ethernet at MTU 1500: 1448 payload bytes (1500 - IPv4 20 - TCP 20 -
# timestamps 12) per 1514 bytes that tbf counts (the frame without FCS).
FRAME_EFFICIENCY = 1448 / 1514


class ShapingError(ValueError):
    """A [link] section that cannot be applied as asked."""


class NetemUnavailable(ShapingError):
    """delay/loss need the netem qdisc, which the running kernel lacks."""


@dataclass(frozen=True)
class LinkShape:
    """A link in base units: bits/s, bytes, seconds; ``loss`` a fraction 0-1."""

    rate_bps: int
    burst_bytes: int | None = None
    latency_s: float | None = None
    delay_s: float | None = None
    loss: float | None = None

    def __post_init__(self) -> None:
        if self.rate_bps <= 0:
            raise ShapingError(f"link rate must be positive, got {self.rate_bps} bit/s")
        if self.burst_bytes is not None and self.burst_bytes < 1514:
            raise ShapingError(f"link burst {self.burst_bytes} B is below one frame (1514 B)")
        if self.latency_s is not None and self.latency_s <= 0:
            raise ShapingError(f"link latency must be positive, got {self.latency_s} s")
        if self.delay_s is not None and self.delay_s < 0:
            raise ShapingError(f"link delay must not be negative, got {self.delay_s} s")
        if self.loss is not None and not 0 <= self.loss <= 1:
            raise ShapingError(f"link loss must be a fraction 0-1, got {self.loss}")

    @property
    def effective_burst_bytes(self) -> int:
        if self.burst_bytes is not None:
            return self.burst_bytes
        return max(MIN_BURST_BYTES, round(self.rate_bps / 8 * DEFAULT_BURST_SECONDS))

    @property
    def effective_latency_s(self) -> float:
        return self.latency_s if self.latency_s is not None else DEFAULT_LATENCY_SECONDS

    @property
    def needs_netem(self) -> bool:
        return bool(self.delay_s) or bool(self.loss)

    def expected_goodput_bps(self) -> float:
        """TCP payload rate the shaped link carries (what a goodput test should measure)."""
        return self.rate_bps * FRAME_EFFICIENCY


def _us(seconds: float) -> str:
    return f"{round(seconds * 1_000_000)}us"


def shaping_commands(dev: str, shape: LinkShape, *, netem_available: bool) -> list[list[str]]:
    """The tc argv lists that put ``shape`` on ``dev``'s egress, in order.

    Without delay/loss: one ``tc qdisc replace ... root tbf rate R burst B latency L``.
    With them (only where netem exists): tbf at the root and netem as its child, so the
    rate limit and the delay/loss both apply.
    """
    tbf = [
        "tbf",
        "rate",
        f"{shape.rate_bps}bit",
        "burst",
        str(shape.effective_burst_bytes),
        "latency",
        _us(shape.effective_latency_s),
    ]
    if not shape.needs_netem:
        return [["tc", "qdisc", "replace", "dev", dev, "root", *tbf]]
    if not netem_available:
        asked = ", ".join(
            f"{name} = {value}"
            for name, value in (("delay", shape.delay_s), ("loss", shape.loss))
            if value
        )
        raise NetemUnavailable(
            f"[link] asks for {asked}, which needs the netem qdisc, but this kernel has no "
            "netem (tc: 'qdisc kind is unknown'). Remove delay/loss from the scenario's [link] "
            "section, or run on a kernel with sch_netem; refusing rather than running an "
            "unshaped experiment."
        )
    netem = ["netem", "limit", "100000"]
    if shape.delay_s:
        netem += ["delay", _us(shape.delay_s)]
    if shape.loss:
        netem += ["loss", f"{shape.loss * 100:g}%"]
    return [
        ["tc", "qdisc", "replace", "dev", dev, "root", "handle", "1:", *tbf],
        ["tc", "qdisc", "replace", "dev", dev, "parent", "1:1", "handle", "10:", *netem],
    ]


def clear_commands(dev: str) -> list[list[str]]:
    """Back to the default qdisc (deleting the root is an error when none is set: ignore it)."""
    return [["tc", "qdisc", "del", "dev", dev, "root"]]


# netem on the container's own loopback: the probe touches no link that carries traffic.
NETEM_PROBE = [
    ["tc", "qdisc", "add", "dev", "lo", "root", "handle", "1:", "netem", "delay", "0us"],
    ["tc", "qdisc", "del", "dev", "lo", "root"],
]


# -- units (tc's conventions: rates in bit/s with decimal prefixes)

_RATE_UNITS = {
    "bit": 1,
    "kbit": 10**3,
    "mbit": 10**6,
    "gbit": 10**9,
    "tbit": 10**12,
    "bps": 8,  # bytes per second, as tc spells it
    "kbps": 8 * 10**3,
    "mbps": 8 * 10**6,
    "gbps": 8 * 10**9,
}
_SIZE_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
}
_TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}
_NUM = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-z%/]*)\s*$")


def _split(value: str, what: str) -> tuple[float, str]:
    m = _NUM.match(value)
    if not m:
        raise ShapingError(f"cannot read {what} {value!r}")
    return float(m.group(1)), m.group(2).lower()


def parse_rate(value: str | int | float) -> int:
    """'100Mbit' -> 100_000_000 bit/s; a bare number is bit/s."""
    if isinstance(value, int | float):
        return int(value)
    num, unit = _split(value, "rate")
    factor = _RATE_UNITS.get(unit or "bit")
    if factor is None:
        raise ShapingError(f"unknown rate unit in {value!r} (use bit, Kbit, Mbit, Gbit)")
    return round(num * factor)


def parse_size(value: str | int) -> int:
    """'1MB' -> 1_000_000 bytes, '1MiB' -> 1_048_576; a bare number is bytes."""
    if isinstance(value, int):
        return value
    num, unit = _split(value, "size")
    factor = _SIZE_UNITS.get(unit or "b")
    if factor is None:
        raise ShapingError(f"unknown size unit in {value!r} (use B, KB, MB, KiB, MiB)")
    return round(num * factor)


def parse_duration(value: str | int | float) -> float:
    """'50ms' -> 0.05 s; a bare number is seconds."""
    if isinstance(value, int | float):
        return float(value)
    num, unit = _split(value, "duration")
    factor = _TIME_UNITS.get(unit or "s")
    if factor is None:
        raise ShapingError(f"unknown time unit in {value!r} (use s, ms, us)")
    return num * factor


def parse_loss(value: str | int | float) -> float:
    """'1%' -> 0.01; a bare number is a fraction."""
    if isinstance(value, int | float):
        return float(value)
    text = value.strip()
    if text.endswith("%"):
        return float(text[:-1]) / 100
    return float(text)


_LINK_KEYS = {"rate", "burst", "latency", "delay", "loss"}


def parse_link(table: Mapping[str, Any]) -> LinkShape:
    """A scenario's ``[link]`` table (strings with units) -> LinkShape."""
    unknown = set(table) - _LINK_KEYS
    if unknown:
        raise ShapingError(f"unknown [link] keys: {', '.join(sorted(unknown))}")
    if "rate" not in table:
        raise ShapingError('[link] needs a rate (e.g. rate = "1Gbit")')
    return LinkShape(
        rate_bps=parse_rate(table["rate"]),
        burst_bytes=parse_size(table["burst"]) if "burst" in table else None,
        latency_s=parse_duration(table["latency"]) if "latency" in table else None,
        delay_s=parse_duration(table["delay"]) if "delay" in table else None,
        loss=parse_loss(table["loss"]) if "loss" in table else None,
    )


def link_from_scenario_file(path: str) -> LinkShape | None:
    """The ``[link]`` of a scenario TOML file, or None when it has none (unshaped)."""
    import tomllib

    with open(path, "rb") as f:
        doc = tomllib.load(f)
    table = doc.get("link")
    return None if table is None else parse_link(table)


# -- applying inside a container (Docker SDK)


class _Container(Protocol):
    name: str

    def exec_run(self, cmd: list[str], **kwargs: Any) -> Any: ...


def _exec(container: _Container, argv: list[str]) -> tuple[int, str]:
    # tc needs CAP_NET_ADMIN: run it as root in a container started with cap_add NET_ADMIN,
    # while the service itself stays unprivileged.
    res = container.exec_run(argv, user="root")
    return int(res.exit_code or 0), res.output.decode(errors="replace").strip()


def netem_available(container: _Container) -> bool:
    code, _ = _exec(container, NETEM_PROBE[0])
    if code == 0:
        _exec(container, NETEM_PROBE[1])
    return code == 0


def apply_in_container(container: _Container, shape: LinkShape | None, dev: str = "eth0") -> str:
    """Shape ``dev``'s egress in ``container`` (None clears it); returns ``tc qdisc show``."""
    if shape is None:
        _exec(container, clear_commands(dev)[0])  # "no qdisc" when already clear: fine
    else:
        netem = netem_available(container) if shape.needs_netem else False
        for argv in shaping_commands(dev, shape, netem_available=netem):
            code, out = _exec(container, argv)
            if code != 0:
                raise ShapingError(
                    f"{' '.join(argv)} failed in {container.name} (exit {code}): {out}; "
                    "does the container have cap_add NET_ADMIN?"
                )
    _, shown = _exec(container, ["tc", "qdisc", "show", "dev", dev])
    return shown
