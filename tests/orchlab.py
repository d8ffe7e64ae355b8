"""A real orchestrator under test: a `migbed run|sweep|evacuate` process, the services it
started (found in the process table by `--exit-with-parent PID`), the run ids it announced
and the records it (or its orphaned source) wrote. Shared by tests/faults and the soak.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "migbed"]
STARTED = re.compile(r"migbed: run (\S+) started")

# A run that never ends by itself: the device's setup takes 600 s, switchover-ack waits for
# it (no timeout), so the run sits in pre-copy until it is cancelled or something dies.
NEVER_ENDING = """\
name = "never-ending"
[guest]
ram-size = "16MiB"
dirty-rate = "4MiB/s"
working-set = "4MiB"
[[device]]
name = "vf0"
initial-bytes = "4MB"
stop-copy-size = "1MB"
load-setup-time = "600s"
[migration]
warmup = "100ms"
heartbeat-timeout = "2s"
avail-switchover-bandwidth = "128MiB/s"
"""


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def alive(pid: int) -> bool:
    """Running (a zombie, dead but not yet reaped, is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def bound_services(parent_pid: int) -> list[int]:
    """Every live `migbed serve` started with `--exit-with-parent parent_pid`."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        argv = cmdline(int(entry.name))
        if "serve" in argv and "--exit-with-parent" in argv and \
                argv[argv.index("--exit-with-parent") + 1] == str(parent_pid) and alive(int(entry.name)):
            out.append(int(entry.name))
    return sorted(out)


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """The pids still alive after `timeout` s (empty: all gone)."""
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in pids if alive(p)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def journal(path: Path) -> list[dict]:
    """The whole lines of a JSONL journal, parsed (a torn last line would fail the parse)."""
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


@dataclass
class Orchestrator:
    """A running `migbed ...` command, its output captured to files."""

    argv: list[str]
    folder: Path
    proc: subprocess.Popen[bytes] = field(init=False)

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen([*CLI, *self.argv], stdout=out, stderr=err, cwd=ROOT,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def stdout_path(self) -> Path:
        return self.folder / "cli.stdout"

    @property
    def stderr_path(self) -> Path:
        return self.folder / "cli.stderr"

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def started(self) -> list[str]:
        """The run ids it announced ("migbed: run X started")."""
        return STARTED.findall(self.stdout())

    def wait_started(self, count: int = 1, timeout: float = 120.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while len(self.started()) < count:
            if self.proc.poll() is not None:
                raise AssertionError(f"exited {self.proc.returncode} before {count} run(s) started:\n"
                                     f"{self.stdout()}\n{self.stderr()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{count} run(s) not started within {timeout:g}s:\n{self.stdout()}")
            time.sleep(0.05)
        return self.started()

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait(self, timeout: float = 120.0) -> int:
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def transcript(self) -> str:
        return f"exit {self.proc.returncode}\n--- stdout\n{self.stdout()}\n--- stderr\n{self.stderr()}"


def source_of(parent_pid: int) -> tuple[int, str]:
    """(pid, --listen address) of the source service `parent_pid` started."""
    for pid in bound_services(parent_pid):
        argv = cmdline(pid)
        if "source" in argv:
            return pid, argv[argv.index("--listen") + 1]
    raise AssertionError(f"no source service of pid {parent_pid}")


def wait_running(parent_pid: int, count: int, timeout: float = 120.0) -> list[str]:
    """Wait until the source that `parent_pid` started has `count` runs in flight (Status)."""
    from testkit.harness import sessions

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            running = sessions(source_of(parent_pid)[1], timeout=2.0)
        except Exception:  # not started yet, or not serving yet
            running = []
        if len(running) >= count:
            return running
        time.sleep(0.1)
    raise AssertionError(f"{count} run(s) not in flight within {timeout:g}s")
