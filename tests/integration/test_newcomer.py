"""What a newcomer trips on (issue 22): a progress bar goes to a terminal, never into a log.

Each subcommand with a bar runs twice as a user runs it, in its own process: with its output
piped into a file (no carriage return, no bar), and on a pseudo-terminal (the bar is drawn).
`migbed run` and `migbed qemu-compare` share the runs' bar (experiments/comparison.py
run_plan), `migbed evacuate` and `migbed deploy --evacuate` the evacuation's
(fleet/run.py run_policies), `migbed sweep` its own (experiments/sweep.py run_sweep).
"""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

TIMEOUT_S = 240


def piped(argv: list[str], cwd: Path) -> str:
    proc = subprocess.run([sys.executable, "-m", "migbed", *argv], cwd=cwd, capture_output=True,
                          timeout=TIMEOUT_S, check=False)
    out = (proc.stdout + proc.stderr).decode(errors="replace")
    assert proc.returncode == 0, out[-3000:]
    return out


def on_a_terminal(argv: list[str], cwd: Path) -> str:
    """The command with stdout and stderr on a pseudo-terminal; everything it wrote."""
    leader, follower = pty.openpty()
    # A terminal of 40 x 120 (a fresh pty is 0 x 0: tqdm would draw a bar of no width)
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "migbed", *argv], cwd=cwd, stdin=subprocess.DEVNULL,
                            stdout=follower, stderr=follower)
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            data = os.read(leader, 65536)
        except OSError:  # the follower side closed: the process is done writing
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    assert proc.wait(timeout=30) == 0, b"".join(chunks)[-3000:]
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.parametrize("command", [
    ["run", "--scenario", "tiny", "--policy", "legacy", "--repeat", "2", "--no-report"],
    ["evacuate", "--scenario", "tiny", "--guests", "2", "--targets", "1", "--policy", "legacy"],
])
def test_progress_bars_only_on_a_terminal(command: list[str], tmp_path: Path) -> None:
    logged = piped([*command, "--out", str(tmp_path / "piped")], tmp_path)
    assert "\r" not in logged and "it/s" not in logged and "|" not in logged, (
        f"a progress bar went into the log:\n{logged[-2000:]}")
    shown = on_a_terminal([*command, "--out", str(tmp_path / "tty")], tmp_path)
    # A bar: redrawn in place (a carriage return not ending a line) with tqdm's frame.
    assert "\r\n" in shown and shown.replace("\r\n", "\n").count("\r") >= 2 and "|" in shown, (
        f"no progress bar on the terminal:\n{shown[-2000:]}")
