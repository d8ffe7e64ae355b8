"""Lab hosts for the `migbed deploy` tests: containers running sshd on a Docker network.

Each lab host is a container of migbed/labhost:bookworm (deploy/labhost/) with its own address
on a network the test creates, reached over real SSH with a key made for the test. Every
container and the network are removed at the end, also when a test fails.

Without a Docker engine these tests skip on a developer's machine and FAIL in CI (CI=true)
and under bin/test (MIGBED_REQUIRE_ALL=1).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest
from deploylab import ROOT, Lab

LABHOST_IMAGE = "migbed/labhost:bookworm"
LABEL = "migbed.test"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.docker)
            item.add_marker(pytest.mark.ssh)
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def labhost_image(docker_client: docker.DockerClient) -> str:
    """Built once (a no-op when it is up to date): base image + sshd, sudo, prometheus."""
    proc = subprocess.run(
        ["bash", str(ROOT / "deploy" / "labhost" / "build.sh"), LABHOST_IMAGE],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, f"deploy/labhost/build.sh failed:\n{proc.stderr[-3000:]}"
    return LABHOST_IMAGE


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One wheelhouse for every deploy of a test: code edited while it runs changes nothing.

    (`migbed deploy` without --wheelhouse builds the same thing into .cache/; the error tests
    go that way.)
    """
    wh = tmp_path_factory.mktemp("wheelhouse")
    proc = subprocess.run(
        ["bash", str(ROOT / "images" / "fetch-wheels.sh"), str(wh)],
        capture_output=True,
        text=True,
        check=False,
        env=os.environ | {"MIGBED_PYTHON": sys.executable},
    )
    assert proc.returncode == 0, f"images/fetch-wheels.sh failed:\n{proc.stderr[-3000:]}"
    return wh


@pytest.fixture(scope="module")
def lab(
    docker_client: docker.DockerClient, labhost_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Lab]:
    tag = uuid.uuid4().hex[:8]
    d = tmp_path_factory.mktemp("lab")
    key = d / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "migbed-test", "-f", str(key)],
        check=True,
    )
    labels = {LABEL: f"deploy-{tag}"}
    network = docker_client.networks.create(f"migbed-lab-{tag}", driver="bridge", labels=labels)
    lab = Lab(d, key, d / "known_hosts", network)
    try:
        for host in ("lab-src", "lab-tgt", "lab-mon"):
            c = docker_client.containers.run(
                labhost_image,
                name=f"{host}-{tag}",
                hostname=host,
                detach=True,
                network=network.name,
                # NET_ADMIN: tc on the source host's interface. SYS_PTRACE: root on a real
                # machine has it, and Debian's init scripts need it (start-stop-daemon
                # --exec reads /proc/PID/exe of the prometheus user's process; without it
                # `service prometheus stop|restart` finds nothing to stop).
                cap_add=["NET_ADMIN", "SYS_PTRACE"],
                environment={"LAB_AUTHORIZED_KEYS": (d / "id_ed25519.pub").read_text().strip()},
                labels=labels,
            )
            c.reload()
            lab.containers[host] = c
            lab.addresses[host] = c.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"]
        network.reload()
        for host in lab.containers:  # sshd listens once the host keys are made
            deadline = time.monotonic() + 60
            while lab.sh(host, "ss -Hltn | grep -q ':22 '")[0] != 0:
                assert time.monotonic() < deadline, f"{host}: sshd did not start"
                time.sleep(0.2)
        yield lab
    finally:
        for c in lab.containers.values():
            with contextlib.suppress(docker.errors.DockerException):
                c.remove(force=True)
        with contextlib.suppress(docker.errors.DockerException):
            network.remove()
