"""Real-QEMU tests: QEMU >= 9.0, the kernel and the guest program must be there (bin/test
installs them). Missing means FAIL, never skip."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from migbed.qemu.install import GuestFiles, QemuSetupError, find_guest_files


@pytest.fixture(scope="session")
def guest_files() -> GuestFiles:
    try:
        return find_guest_files()
    except QemuSetupError as e:
        pytest.fail(f"real QEMU is required by these tests: {e}", pytrace=False)


def our_qemu_processes(tag: str) -> list[str]:
    """Live qemu-system processes whose command line names `tag` (QEMU's -name)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().split(") ")[-1][:1]
        except OSError:
            continue
        if argv and b"qemu-system" in argv[0] and any(tag.encode() in a for a in argv) and state != "Z":
            found.append(f"{entry.name}: {b' '.join(argv)[:160]!r}")
    return found


@pytest.fixture
def qemu_tag(request: pytest.FixtureRequest) -> str:
    """A name for this test's QEMU processes (their -name), to find any left behind."""
    return f"migbed-test-{os.getpid()}-{request.node.name[:24]}"


@pytest.fixture
def leftover_qemus() -> Callable[[str], list[str]]:
    return our_qemu_processes
