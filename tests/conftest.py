"""Shared fixtures: real source and target processes, cleaned up even when a test fails."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import docker
import docker.errors
import pytest

from migbed.experiments.localstack import Service, local_stack
from testkit.harness import Lab


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, Service]]:
    """One source and one target service, shared by the integration tests."""
    logs: Path = tmp_path_factory.mktemp("stack-logs")
    with local_stack(logs) as pair:
        yield pair


@pytest.fixture
def registered_policy(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """tests/shared_policy.py registered here and named in MIGBED_POLICY_MODULES for the
    processes the test starts; removed from the registry afterwards."""
    from migbed.core.policy import unregister_policy

    monkeypatch.setenv("MIGBED_POLICY_MODULES", "shared_policy")
    here = str(Path(__file__).parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")])))
    module = importlib.import_module("shared_policy")
    try:
        yield module
    finally:
        unregister_policy(module.NAME)
        sys.modules.pop("shared_policy", None)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


@pytest.fixture
def lab(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Lab]:
    """Services of a fault, bad-input, security or load test, each its own processes."""
    lb = Lab(tmp_path / "logs")
    try:
        yield lb
    finally:
        lb.close()
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            print(lb.logs())  # shown with the failure: what the services said


def required_missing(what: str, reason: str) -> None:
    """A part a test needs is missing: a failure under CI=true (CI's environment) or
    MIGBED_REQUIRE_ALL=1 (bin/test), a skip on a developer's machine."""
    if os.environ.get("CI", "").lower() == "true" or os.environ.get("MIGBED_REQUIRE_ALL") == "1":
        pytest.fail(f"{what} is required in CI (and by bin/test): {reason}", pytrace=False)
    pytest.skip(f"no {what}: {reason}")


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    """The Docker engine (the container and lab-host tests)."""
    try:
        c = docker.from_env(version="auto")
        c.ping()
    except docker.errors.DockerException as e:
        required_missing("Docker engine", str(e))
    yield c
    c.close()
