"""The shaped link holds its rate: goodput between two containers at 100 Mbit and 1 Gbit.

Two containers from the runtime image on a private bridge network the test makes; tbf on the
sender's eth0 (shaping.apply_in_container, the same code `migbed up` uses); the receiver
measures with migbed.env.goodput. Expected: rate x 1448/1514 within 5 %.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import docker
import docker.errors
import pytest
from docker.models.containers import Container

from migbed.env import images
from migbed.env.shaping import (
    LinkShape,
    NetemUnavailable,
    apply_in_container,
    netem_available,
)

SUBNET = "172.30.8"  # a /24 of our own, distinct from compose.yaml's default 172.30.0
SECONDS = 4.0
TRIES = 3


@pytest.fixture(scope="module")
def pair(docker_client: docker.DockerClient, image_set: images.ImageSet) -> Iterator[tuple[Container, Container]]:
    tag = f"migbed-goodput-test-{os.getpid()}"
    ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=f"{SUBNET}.0/24")])
    net = docker_client.networks.create(tag, driver="bridge", ipam=ipam)
    made: list[Container] = []
    try:
        for name, caps in (("sender", ["NET_ADMIN"]), ("receiver", [])):
            # Only this network: eth0 is then the interface to the peer, the one to shape.
            c = docker_client.containers.create(
                image_set.runtime,
                ["sleep", "infinity"],
                name=f"{tag}-{name}",
                cap_add=caps,
                labels={"migbed.test": tag},
                network=tag,
            )
            made.append(c)
            c.start()
        sender, receiver = made
        receiver.exec_run(
            ["python", "-m", "migbed.env.goodput", "recv", "--listen", "0.0.0.0:5201"],
            detach=True,
        )
        yield sender, receiver
    finally:
        for c in made:
            c.remove(force=True)
        net.remove()


def measure(sender: Container, receiver: Container) -> dict[str, float]:
    res = sender.exec_run(
        ["python", "-m", "migbed.env.goodput", "send", "--to", f"{receiver.name}:5201",
         "--seconds", str(SECONDS)]
    )  # fmt: skip
    out = res.output.decode()
    assert res.exit_code == 0, out
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("rate_bps", [100 * 10**6, 10**9], ids=["100Mbit", "1Gbit"])
def test_goodput_matches_tbf_rate(pair: tuple[Container, Container], rate_bps: int) -> None:
    sender, receiver = pair
    shape = LinkShape(rate_bps=rate_bps)
    shown = apply_in_container(sender, shape)
    assert "tbf" in shown, shown
    want = shape.expected_goodput_bps()
    # CPU starvation (2 shared cores) can only lower goodput: every try stays under the
    # bound, the best of up to TRIES reaches it.
    got: list[float] = []
    for _ in range(TRIES):
        got.append(measure(sender, receiver)["goodput_bps"])
        assert got[-1] <= want * 1.05
        if got[-1] >= want * 0.95:
            break
    shown = ", ".join(f"{g / 1e6:.2f}" for g in got)
    print(f"rate {rate_bps / 1e6:g} Mbit: goodput {shown} Mbit/s, expected {want / 1e6:.2f}")
    assert max(got) == pytest.approx(want, rel=0.05)


def test_unshaped_is_faster_than_shaped(pair: tuple[Container, Container]) -> None:
    """Clearing the shape really removes it (so the shaped numbers above are tbf's doing)."""
    sender, receiver = pair
    assert "tbf" not in apply_in_container(sender, None)
    assert measure(sender, receiver)["goodput_bps"] > 1.5e9


def test_delay_is_refused_not_ignored_without_netem(pair: tuple[Container, Container]) -> None:
    """A real probe in the container: this kernel has no netem, so a delay is an error."""
    sender, _ = pair
    if netem_available(sender):
        pytest.skip("this kernel has netem: delay/loss can be applied here")
    apply_in_container(sender, LinkShape(rate_bps=10**8))
    with pytest.raises(NetemUnavailable, match="netem"):
        apply_in_container(sender, LinkShape(rate_bps=10**8, delay_s=0.01))
    # Nothing half-applied: the previous shape is still there.
    shown = sender.exec_run(["tc", "qdisc", "show", "dev", "eth0"]).output.decode()
    assert "tbf" in shown and "rate 100Mbit" in shown, shown
