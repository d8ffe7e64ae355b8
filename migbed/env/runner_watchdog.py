"""A `migbed up`'s runner container never runs on for long after `up` itself dies.

`migbed up` runs its comparison in a one-shot runner container (`compose run --rm`), with
compose in a session of its own so that only `up` gets the terminal's signals and passes them
on (compose.py). If `up` is killed outright (SIGKILL, the OOM killer), nothing of it runs to
pass anything on, and compose, still attached, would wait for the whole comparison. So `up`
starts this watchdog first, in its own session too, with a pipe on its stdin whose only
writer is `up`: `up` writes DONE when its runner has ended. A pipe that closes without DONE
means `up` is gone. The watchdog then:

1. waits (up to FIND_S) for the runner container `up` asked for (compose may still be creating
   it), found by the project's label and the token label `up` gave it;
2. sends it SIGHUP: its controller hung up. The container's init hands the signal to `migbed
   run`, which handles it as any stop signal: the runs in flight are cancelled on the source
   (each guest keeps running there), their records are written to the results folder
   (`interrupted: SIGHUP`), and it exits 129; compose then removes the container (--rm);
3. sends SIGKILL if it still runs RUNNER_STOP_GRACE_S later (`migbed run` gives a source
   30 s to send a cancelled run's record, then writes one itself);
4. removes what compose did not (compose killed too) REMOVE_WAIT_S after the runner ended.

Usage (compose.py starts it): python -m migbed.env.runner_watchdog PROJECT TOKEN
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable

from docker.models.containers import Container

RUNNER_LABEL = "org.migbed.runner"  # names the runner container of one `migbed up`
PROJECT_LABEL = "com.docker.compose.project"
DONE = b"done\n"
FIND_S = 30.0
RUNNER_STOP_GRACE_S = 45.0  # `migbed run`'s RECORD_GRACE_S (30 s) and a margin
REMOVE_WAIT_S = 5.0
POLL_S = 0.2


def start_watchdog(project: str, token: str) -> subprocess.Popen[bytes]:
    """The watchdog of one runner, tied to this process by a pipe (see the module doc)."""
    return subprocess.Popen([sys.executable, "-m", "migbed.env.runner_watchdog", project, token],
                            stdin=subprocess.PIPE, start_new_session=True)


def stop_watchdog(proc: subprocess.Popen[bytes]) -> None:
    """The runner ended: the watchdog has nothing to do."""
    assert proc.stdin is not None
    with contextlib.suppress(OSError):
        proc.stdin.write(DONE)
        proc.stdin.close()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _say(text: str) -> None:
    print(f"migbed: runner watchdog: {text}", file=sys.stderr, flush=True)


def _wait(pred: Callable[[], object], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(POLL_S)
    return bool(pred())


def stop_runner(project: str, token: str) -> None:
    """Steps 1-4 of the module doc."""
    from migbed.env.images import client

    c = client()
    labels = [f"{PROJECT_LABEL}={project}", f"{RUNNER_LABEL}={token}"]

    def runners() -> list[Container]:
        found: list[Container] = c.containers.list(all=True, filters={"label": labels})
        return found

    def running() -> list[Container]:
        return [ct for ct in runners() if ct.status == "running"]

    # 1. Started (running, or already ended), not just created by a compose about to start it.
    _wait(lambda: any(ct.status != "created" for ct in runners()), FIND_S)
    for ct in running():  # 2.
        _say(f"`migbed up` is gone: SIGHUP to its runner {ct.name}")
        ct.kill(signal="SIGHUP")
    if not _wait(lambda: not running(), RUNNER_STOP_GRACE_S):  # 3.
        for ct in running():
            _say(f"runner {ct.name} still running {RUNNER_STOP_GRACE_S:g} s after SIGHUP: SIGKILL")
            ct.kill(signal="SIGKILL")
    if not _wait(lambda: not runners(), REMOVE_WAIT_S):  # 4.
        for ct in runners():
            _say(f"removing runner {ct.name} (compose did not)")
            ct.remove(force=True)


def main(argv: list[str] | None = None) -> int:
    project, token = argv if argv is not None else sys.argv[1:]
    up = os.getppid()
    if sys.stdin.buffer.read().endswith(DONE):
        return 0
    _say(f"`migbed up` (pid {up}) died without stopping its runner")
    try:
        stop_runner(project, token)
    except Exception as e:  # a Docker engine gone too: say so, nothing else to do
        _say(f"could not stop the runner: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
