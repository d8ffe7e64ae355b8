"""Fixtures of the load tests: real service processes, cleaned up even when a test fails."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/faultlab.py

from faultlab import Lab


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


@pytest.fixture
def lab(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Lab]:
    lb = Lab(tmp_path / "logs")
    try:
        yield lb
    finally:
        lb.close()
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            print(lb.logs())  # shown with the failure: what the services said
