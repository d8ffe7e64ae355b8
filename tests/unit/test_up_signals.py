"""`migbed up` told to stop while its runner runs: the signal is passed on to the runner
(whose `migbed run` cancels its runs and writes their records), `up` waits for it and exits
with the runner's code. The compose command is replaced by a child process standing in for
`compose run` with the runner attached; passing the signal on (`docker kill --signal` of
the runner container, in real life) is sent to that child here. The container path itself,
and the watchdog of a killed `up`, run for real in tests/docker/test_up_signals_in_containers.py."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

import pytest

from migbed.env.compose import Stack

RUNNER = """
import signal, sys, time
def stop(signum, frame):
    open(sys.argv[-1], "w").write(signal.Signals(signum).name)
    sys.exit(128 + signum)
signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGHUP, stop)
open(sys.argv[-1] + ".ready", "w").close()
time.sleep(60)
sys.exit(0)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_reaches_the_runner_and_up_waits_for_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sig: int) -> None:
    marker = tmp_path / "runner-got"
    before = signal.getsignal(sig)
    stack = Stack(cmd=[sys.executable, "-c", RUNNER], profiles=[])
    children: list[int] = []
    real_popen = __import__("subprocess").Popen

    def popen(argv: list[str], **kw: object):  # type: ignore[no-untyped-def]
        proc = real_popen([*argv, str(marker)], **kw)
        children.append(proc.pid)
        return proc

    monkeypatch.setattr("migbed.env.compose.subprocess.Popen", popen)
    monkeypatch.setattr(Stack, "signal_runner",
                        lambda self, token, signum, ended: os.kill(children[0], signum))
    monkeypatch.setattr("migbed.env.compose.start_watchdog", lambda project, token: None)
    monkeypatch.setattr("migbed.env.compose.stop_watchdog", lambda proc: None)

    def strike() -> None:
        ready = Path(str(marker) + ".ready")
        for _ in range(200):
            if ready.exists():
                break
            threading.Event().wait(0.05)
        os.kill(os.getpid(), sig)

    threading.Thread(target=strike, daemon=True).start()
    code = stack.run_runner([], [])
    assert code == 128 + sig
    assert marker.read_text() == signal.Signals(sig).name
    assert signal.getsignal(sig) is before  # the handlers are the process's own again
    assert stack.interrupted == sig
