"""An orchestrator told to stop (SIGINT, SIGTERM, SIGHUP) while its runs are in flight.

What `migbed run`, `sweep` and `evacuate` do on such a signal, the same way each: every run
in flight is cancelled on its source with the signal named as the reason (the source
restarts the guest, as QEMU does on migrate_cancel, and ends the run `cancelled`); each
record is then written as its run ends, like any other; no new run starts; the services
the command started are stopped; and it exits 128 + the signal's number (130 for SIGINT,
143 for SIGTERM, 129 for SIGHUP), as a shell reports a process ended by that signal. A
second signal changes nothing: the cancels are already under way, and each source answers
within the time a cancel takes (the command gives up on a run's record RECORD_GRACE_S
after its cancel and writes one itself, saying so).

A run past its switchover cannot be cancelled (QEMU's neither): it completes, and its
record says so.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
RECORD_GRACE_S = 30.0  # after a cancel, how long a source gets to send the run's record
INTERRUPTED_LABEL = "interrupted"  # the record's label naming the signal


def _say(text: str) -> None:
    """To stderr without Python's buffered writer: a signal handler may run while the main
    thread is inside a print (a progress bar), and a buffered write would be re-entered."""
    with contextlib.suppress(OSError):
        os.write(2, (text + "\n").encode())


class Interrupted(Exception):
    """Raised by Interruption.check() between runs once a stop signal came."""

    def __init__(self, interruption: Interruption) -> None:
        super().__init__(f"stopped by {interruption.signal_name}")
        self.exit_code = interruption.exit_code()


class Interruption:
    """The signals an orchestrator command handles, and the runs it has in flight.

    `installed()` puts the handlers in place (main thread only) for a block; `running(run_id,
    cancel)` registers a run in flight: `cancel(reason)` is called (on its own thread) when a
    signal comes, or at once if one already came."""

    def __init__(self, command: str) -> None:
        self.command = command
        self.signum = 0
        self._lock = threading.Lock()
        self._runs: dict[str, Callable[[str], None]] = {}

    @property
    def fired(self) -> bool:
        return self.signum != 0

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

    def reason(self) -> str:
        """The cancel's reason, in the record: names the signal."""
        return f"{self.command} got {self.signal_name} (pid {os.getpid()})"

    def exit_code(self) -> int:
        return 128 + self.signum

    def check(self) -> None:
        """Between runs: raise Interrupted once a stop signal came."""
        if self.fired:
            raise Interrupted(self)

    @contextlib.contextmanager
    def installed(self) -> Iterator[Interruption]:
        if threading.current_thread() is not threading.main_thread():
            yield self  # signals reach the main thread only: nothing to install here
            return
        previous = {sig: signal.signal(sig, self._on_signal) for sig in SIGNALS}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def fire(self, signum: int) -> None:
        """What a signal does (also callable directly, e.g. from tests)."""
        with self._lock:
            first = not self.signum
            if first:
                self.signum = signum
            runs = list(self._runs.items())
        name = signal.Signals(signum).name
        if not first:
            _say(f"migbed: {name} again: the cancels are under way; each run's record is "
                 "written as it ends")
            return
        _say(f"migbed: {name}: cancelling {len(runs)} run(s) in flight and starting no more; "
             "their records follow")
        for run_id, cancel in runs:
            self._cancel(run_id, cancel)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.fire(signum)

    def _cancel(self, run_id: str, cancel: Callable[[str], None]) -> None:
        threading.Thread(target=cancel, args=(self.reason(),), name=f"cancel-{run_id}",
                         daemon=True).start()

    @contextlib.contextmanager
    def running(self, run_id: str, cancel: Callable[[str], None]) -> Iterator[None]:
        with self._lock:
            self._runs[run_id] = cancel
            fired = self.fired
        if fired:  # the signal came while the run was being started
            self._cancel(run_id, cancel)
        try:
            yield
        finally:
            with self._lock:
                self._runs.pop(run_id, None)
