"""Fixtures of the multifd tests: real sockets on 127.0.0.1, real threads, leak checks."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from migbed.dataplane.receiver import MultifdListener
from migbed.dataplane.tls import server_context

PAGE = 4096


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _threads() -> set[threading.Thread]:
    return set(threading.enumerate())


@pytest.fixture
def no_leaks() -> Iterator[None]:
    """After the test: no thread and no file descriptor more than before it."""
    fds, threads = _fds(), _threads()
    yield
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        extra_fds, extra_threads = _fds() - fds, _threads() - threads
        if not extra_fds and not extra_threads:
            return
        time.sleep(0.05)
    links = {}
    for fd in extra_fds:
        try:
            links[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            links[fd] = "?"
    raise AssertionError(f"leaked fds {links} and threads {[t.name for t in extra_threads]}")


@pytest.fixture(scope="session")
def ram64() -> np.ndarray:
    """A 64 MiB source RAM image of random bytes (pages x 4 KiB)."""
    rng = np.random.default_rng(7)
    return rng.integers(0, 256, size=(16384, PAGE), dtype=np.uint8)


@pytest.fixture
def listener(no_leaks: None) -> Iterator[MultifdListener]:
    with MultifdListener("127.0.0.1", hello_timeout_s=0.5) as lst:
        yield lst


@pytest.fixture(scope="session")
def tls_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two labs, two CAs: certificates of `lab` work together, `other`'s are strangers."""
    from migbed.env.certs import make_certs
    base = tmp_path_factory.mktemp("multifd-tls")
    make_certs(base / "lab")
    make_certs(base / "other")
    return base / "lab", base / "other"


@pytest.fixture
def tls_listener(no_leaks: None, tls_dirs: tuple[Path, Path]) -> Iterator[MultifdListener]:
    with MultifdListener("127.0.0.1", ssl_context=server_context(tls_dirs[0]),
                         hello_timeout_s=0.5) as lst:
        yield lst
