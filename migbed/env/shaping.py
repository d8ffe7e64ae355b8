"""Link shaping with ``tc``: a scenario's ``[link]`` section becomes tbf on the sender's egress.

The pure part (``LinkShape``, ``shaping_commands``, ``link_shape``) builds argv lists and knows
nothing about processes or containers; ``apply_in_container`` runs them in a container through
the Docker SDK. tc shapes egress only, so the shape goes on the *source* container's interface
(the side that sends guest RAM and device state).

This kernel has no ``netem``: a requested ``delay`` or ``loss`` raises ``NetemUnavailable``
instead of being silently dropped (a run without the delay would measure something else).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from migbed.core.dilation import shaped_link
from migbed.core.scenario import LinkConfig, load_scenario
from migbed.core.units import FRAME_EFFICIENCY

# tbf's token bucket must hold at least a few full frames and a few ms of traffic, or TCP
# falls short of the rate (migration-facts §9: burst rate x 1-10 ms holds it within 1 %).
MIN_BURST_BYTES = 64 * 1024
DEFAULT_BURST_SECONDS = 0.005
# How long a packet may wait in tbf's queue; it sets the queue limit. 50 ms keeps TCP at the
# rate without unbounded buffering.
DEFAULT_LATENCY_SECONDS = 0.050



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


# -- from a scenario (units are parsed once, by migbed.core.scenario)


def link_shape(link: LinkConfig) -> LinkShape | None:
    """A parsed scenario ``[link]`` -> LinkShape; None when the link is unshaped (rate 0).

    The scenario parser already refuses delay/loss (no netem); the check in
    ``shaping_commands`` stays for callers that build a LinkShape themselves.
    """
    if not link.rate:
        return None
    return LinkShape(
        rate_bps=round(link.rate),
        burst_bytes=link.burst or None,
        latency_s=link.latency or None,
    )


def link_from_scenario_file(path: str) -> LinkShape | None:
    """The ``[link]`` of a scenario TOML file as tc must shape it (its dilated rate when the
    scenario has a time-dilation), or None when it has none (unshaped)."""
    return link_shape(shaped_link(load_scenario(path)))


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
