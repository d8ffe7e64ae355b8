"""Fixtures for the tests that run real containers (marked ``docker``).

Without a Docker engine these tests skip on a developer's machine but FAIL in CI (CI=true,
or MIGBED_REQUIRE_ALL=1 as bin/test sets it):
CI has the engine, so its absence there is a broken setup, not a reason to pass.
"""

from __future__ import annotations

import os

import docker
import docker.errors
import pytest

from migbed.env import images


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.docker)


@pytest.fixture(scope="session")
def image_set(docker_client: docker.DockerClient) -> images.ImageSet:
    """Every image built (or found) once per session: the first build is the slow part."""
    return images.ensure_images(grafana=False)
