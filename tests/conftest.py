"""Shared fixtures: real source and target processes on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from migbed.orchestration.localstack import Service, local_stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, Service]]:
    """One source and one target service, shared by the integration tests."""
    logs: Path = tmp_path_factory.mktemp("stack-logs")
    with local_stack(logs) as pair:
        yield pair
