"""Lab hosts for the `migbed deploy` tests: containers running sshd on a Docker network.

Each lab host is a container of migbed/labhost:bookworm (deploy/labhost/) with its own address
on a network the test creates, reached over real SSH with a key made for the test. Every
container and the network are removed at the end, also when a test fails.

Without a Docker engine these tests skip on a developer's machine and FAIL in CI (CI=true)
and under bin/test (MIGBED_REQUIRE_ALL=1).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest
from deploylab import ROOT, Lab, build_labhost, start_lab

LABHOST_IMAGE = "migbed/labhost:bookworm"


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
    return build_labhost(LABHOST_IMAGE)


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
    with start_lab(
        docker_client, labhost_image, tmp_path_factory.mktemp("lab"), ("lab-src", "lab-tgt", "lab-mon")
    ) as lab:
        yield lab
