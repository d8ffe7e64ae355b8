"""The Control channel's liveness, both ways (pure rules; the services and the orchestrator
apply them).

**The source, seen by its watcher.** An orchestrator follows each run on Control.Watch. A
source whose process is frozen (SIGSTOP, a hung host) or whose host vanished without a reset
(a cut link) sends nothing, yet its connection stays open: the kernel of a frozen process's
host still acknowledges TCP, so a watcher would wait for ever. The source therefore sends a
WatchHeartbeat as the first event of every Watch and again whenever HEARTBEAT_INTERVAL_S
passed with nothing else sent (progress samples come every 100 ms while a run moves, but not
while the guest boots, and not from a finished run's Watch). A watcher that receives nothing
at all for `lost_after_s` declares the source lost.

The bound is the run's own tolerance of a silent source plus a margin: the target ends the
session of a source that sent nothing for the scenario's `heartbeat-timeout` (10 s by
default, 0.2-60 s), so declaring the source lost sooner would call "lost" a source the
migration itself still waits for. LOST_AFTER_MARGIN_S more lets the target decide first (the
orchestrator then asks it what happened). LOST_AFTER_MIN_S keeps a floor for short
heartbeat timeouts: a source stalled by load is slow, not lost (docs/faults.md gives the
longest silences measured on a loaded 2-core machine).

**The watcher, seen by the source.** A run an orchestrator starts belongs to it: once the
orchestrator is gone (SIGKILL, its host lost) nobody records the run or acts on it. QEMU's
manager has the same rule for the phases its client drives: libvirt registers
`qemuMigrationSrcCleanup` as a close callback on the client's connection
(`virCloseCallbacksSet`, in `qemuMigrationSrcBegin`), and when that connection closes while
the job waits for the client, the job is dropped. So an orchestrator asks for a watcher grace
at Start; once a Watch of the run ended without delivering the record (its caller died or
gave up) and no Watch has been open for that long, the source cancels the run (the guest
keeps running there, as on any cancel). A run whose record no Watch delivered is an orphan:
at its end if its watcher had already left without it (nobody is left to take it), or once it
ended and had no watcher for the grace (it was never watched). The source appends an orphan's
record to its `--orphan-records` file at once, so that a finished run's record outlives the
source process itself (a SIGKILLed source keeps nothing in memory: the soak found a record
lost that way while it waited out the grace), and keeps it for a later Watch (`migbed watch
SOURCE RUN_ID`): a Watch attaching after that still gets it, labelled as the source's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

HEARTBEAT_INTERVAL_S = 1.0  # the source's promise: an event at least this often
LOST_AFTER_MIN_S = 15.0
LOST_AFTER_MARGIN_S = 5.0
LOST_AFTER_MAX_S = 120.0  # a source's claim is clipped to this (bounded input)
WATCHER_GRACE_S = 10.0  # the grace the orchestrators (`migbed run`, sweep, evacuate) ask for
WATCHER_GRACE_MAX_S = 3600.0


def lost_after_s(heartbeat_timeout_s: float) -> float:
    """How long a silent Watch means the source is lost, for a run whose migration stream
    tolerates `heartbeat_timeout_s` of silence (what the source announces)."""
    return max(LOST_AFTER_MIN_S, heartbeat_timeout_s + LOST_AFTER_MARGIN_S)


def accepted_lost_after(claimed: float) -> float:
    """What a watcher uses of a source's claim: within [LOST_AFTER_MIN_S, LOST_AFTER_MAX_S]
    (a NaN or an absurd value from a confused source never means "never lost")."""
    if not math.isfinite(claimed):
        return LOST_AFTER_MIN_S
    return min(LOST_AFTER_MAX_S, max(LOST_AFTER_MIN_S, claimed))


def check_watcher_grace(value: float) -> float:
    """StartRequest.watcher_grace_s: 0 (no tie to a watcher) to WATCHER_GRACE_MAX_S."""
    if not math.isfinite(value) or not 0.0 <= value <= WATCHER_GRACE_MAX_S:
        raise ValueError(f"watcher_grace_s: {value!r} s; allowed 0 (the run goes on unwatched) "
                         f"to {WATCHER_GRACE_MAX_S:g} s")
    return value


@dataclass
class WatcherLedger:
    """Who watches one run, on the source. Times are time.monotonic() seconds."""

    grace_s: float  # 0: the run is not tied to a watcher
    since: float  # when the run was last watched (or started, if it never was)
    watchers: int = 0
    vanished: str = ""  # the last watcher that left without the record ('' if none did)
    delivered: bool = False  # a Watch delivered the record
    ended: bool = False  # the run has its record
    cancelled: bool = False  # this ledger's rule cancelled the run
    orphaned: bool = False  # the record was handed to the orphan writer

    def attached(self) -> None:
        self.watchers += 1

    def detached(self, now: float, peer: str, delivered: bool) -> None:
        self.watchers = max(0, self.watchers - 1)
        if delivered:
            self.delivered = True
        if self.watchers == 0:
            self.since = now
            if not self.delivered:
                self.vanished = peer or "a watcher"

    def cancel_due(self, now: float) -> str:
        """The reason to cancel the run now ('' if none): its watcher vanished before the
        run ended, and nobody has watched it for the grace."""
        if (not self.grace_s or self.ended or self.cancelled or self.watchers
                or not self.vanished or now - self.since < self.grace_s):
            return ""
        self.cancelled = True
        return (f"its orchestrator stopped watching (the Watch from {self.vanished} ended "
                f"before the run did) and no Watch attached within {self.grace_s:g}s")

    def orphan_due(self, now: float) -> bool:
        """Whether the run's record is now an orphan (once): it ended, no Watch delivered
        it, no Watch is open, and its watcher left without it (or it was never watched for
        the grace)."""
        if (not self.grace_s or not self.ended or self.delivered or self.orphaned
                or self.watchers or (not self.vanished and now - self.since < self.grace_s)):
            return False
        self.orphaned = True
        return True

    def undelivered(self) -> bool:
        """At shutdown: a record of a tied run that no Watch delivered, not yet handed on."""
        if not self.grace_s or not self.ended or self.delivered or self.orphaned:
            return False
        self.orphaned = True
        return True
