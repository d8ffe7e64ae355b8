"""The source service: the Control API an orchestrator calls to start and watch migrations.

A thin shell over engine.Migration. Start validates the scenario and the policy before
anything runs (INVALID_ARGUMENT naming the field otherwise); Watch streams progress and
then the run record, with heartbeats while nothing else comes; Cancel ends a migration,
leaving its guest running. A run started with a watcher grace is cancelled once its
watcher vanished, and a record no Watch delivered goes to --orphan-records
(migbed/core/watch.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import re
import ssl
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

from migbed import __version__
from migbed.core.bounded import InputError, parse_labels_json
from migbed.core.clock import boot_id
from migbed.core.scenario import ScenarioError, parse_scenario
from migbed.core.start import StartInputError, check_policy, check_target_address, status_text
from migbed.core.watch import HEARTBEAT_INTERVAL_S, WatcherLedger, check_watcher_grace, lost_after_s
from migbed.measure.record import Event, ProgressSample, RunRecord
from migbed.measure.record_wire import record_to_pb, sample_to_pb
from migbed.wire import migration_pb2 as pb
from migbed.wire import migration_pb2_grpc as pbg

from .engine import Migration

KEEP_FINISHED = 200
_RUN_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
WATCHERS_POLL_S = 0.5  # how often the watcher rule is applied (core/watch.py)
ORPHAN_LABEL = "recorded-by"
log = logging.getLogger("migbed.source")


class _Run:
    def __init__(self, migration: Migration, watcher_grace_s: float) -> None:
        # Dropped when the run ends: it holds the guest's RAM, and up to KEEP_FINISHED
        # finished runs stay listed (for Watch and Cancel) by their record and samples.
        self.migration: Migration | None = migration
        self.samples: list[pb.ProgressSample] = []
        self.changed = asyncio.Event()
        self.record: RunRecord | None = None
        self.task: asyncio.Task[RunRecord] | None = None
        self.ended_at = 0.0  # time.monotonic() when its record was made
        self.ledger = WatcherLedger(watcher_grace_s, time.monotonic())
        # What a watcher is told: silent this long, the source is lost (the target ends the
        # session of a source silent for the heartbeat-timeout; core/watch.py).
        self.heartbeat = pb.WatchHeartbeat(
            interval_s=HEARTBEAT_INTERVAL_S,
            lost_after_s=lost_after_s(migration.scenario.migration.heartbeat_timeout))


class SourceService(pbg.ControlServicer):
    def __init__(self, metrics: Any = None, channel_credentials: grpc.ChannelCredentials | None = None,
                 max_running: int = 16, multifd_ssl: ssl.SSLContext | None = None,
                 orphan_records: Path | None = None, listen: str = "") -> None:
        self.runs: OrderedDict[str, _Run] = OrderedDict()
        self.metrics = metrics
        self.credentials = channel_credentials
        self.max_running = max_running
        self.multifd_ssl = multifd_ssl
        self.orphan_records = orphan_records  # where records no Watch delivered go
        self.listen = listen  # named in those records, as the source's address
        self._watchers_task: asyncio.Task[None] | None = None

    def _running(self) -> int:
        return sum(1 for r in self.runs.values() if r.record is None)

    async def Start(self, request: pb.StartRequest, context: grpc.aio.ServicerContext) -> pb.StartReply:
        async def refuse(code: grpc.StatusCode, msg: str) -> None:
            await context.abort(code, status_text(msg))

        if not _RUN_ID.match(request.run_id):
            await refuse(grpc.StatusCode.INVALID_ARGUMENT,
                         "run_id: 1 to 128 of letters, digits and . _ : -")
        if request.run_id in self.runs:
            await refuse(grpc.StatusCode.ALREADY_EXISTS, f"run_id {request.run_id!r} exists")
        try:  # bounded parsing in migbed/core/start.py (clipped values, ports 1-65535, [IPv6]:PORT)
            check_policy(request.policy)
            check_target_address(request.target_address)
        except StartInputError as e:
            await refuse(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        if self._running() >= self.max_running:
            await refuse(grpc.StatusCode.RESOURCE_EXHAUSTED,
                         f"{self._running()} migrations running; at most {self.max_running}")
        try:
            scenario = parse_scenario(request.scenario_toml)
        except ScenarioError as e:
            await refuse(grpc.StatusCode.INVALID_ARGUMENT, f"scenario: {e}")
            raise AssertionError from e
        try:  # bounded: size, no nesting, short strings (migbed/core/bounded.py)
            labels = parse_labels_json(request.labels_json)
            grace = check_watcher_grace(request.watcher_grace_s)
        except (InputError, ValueError) as e:
            await refuse(grpc.StatusCode.INVALID_ARGUMENT, str(e))
            raise AssertionError from e

        run: _Run | None = None

        def on_sample(s: ProgressSample) -> None:
            assert run is not None
            run.samples.append(sample_to_pb(s))
            run.changed.set()
            if self.metrics is not None:
                self.metrics.on_progress(scenario.name, request.policy, s, scenario.time_dilation)

        def on_event(e: Event) -> None:
            if self.metrics is not None:
                self.metrics.on_event(scenario.name, request.policy, e, scenario.time_dilation)

        migration = Migration(scenario, request.policy, request.target_address, request.run_id,
                              labels, self.credentials, on_sample, on_event, self.multifd_ssl)
        run = _Run(migration, grace)
        self.runs[request.run_id] = run
        run.task = asyncio.get_running_loop().create_task(self._run(run))
        if grace and self._watchers_task is None:
            self._watchers_task = asyncio.get_running_loop().create_task(self._apply_watcher_rule())
        self._trim()
        return pb.StartReply(run_id=request.run_id)

    async def _run(self, run: _Run) -> RunRecord:
        assert run.migration is not None
        record = await run.migration.run()
        run.record = record
        run.ended_at = time.monotonic()
        run.ledger.ended = True
        # Its watcher gone: the record goes to --orphan-records now, not at the next poll
        # (a source killed in between would lose it; core/watch.py).
        self._hand_on_if_orphan(run, run.ended_at)
        run.migration = None
        # The run's objects form reference cycles (link, pre-copy, parts call one another):
        # without a collection now they, and the guest RAM they reach, outlive the run until
        # the cyclic GC next runs, runs later (measured: one guest more per finished run).
        gc.collect()
        run.changed.set()
        if self.metrics is not None:
            self.metrics.on_result(record)
        return record

    def _trim(self) -> None:
        # A record no Watch delivered stays until it was handed to the orphan writer.
        finished = [k for k, r in self.runs.items() if r.record is not None
                    and (r.ledger.delivered or r.ledger.orphaned or not r.ledger.grace_s)]
        for k in finished[: max(0, len(finished) - KEEP_FINISHED)]:
            del self.runs[k]

    async def Watch(self, request: pb.WatchRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[pb.WatchEvent]:
        run = self.runs.get(request.run_id)
        if run is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no run {request.run_id!r} on this source")
        assert run is not None
        delivered = [False]
        peer = context.peer() or ""
        run.ledger.attached()
        # A watcher gone (it cancelled, or its connection broke) before the record: the run
        # may have lost its orchestrator (the watcher rule, core/watch.py). A done-callback,
        # not a `finally`: an RPC cancelled while this generator waits at a `yield` leaves it
        # suspended until it is collected, which may be much later.
        context.add_done_callback(
            lambda _: run.ledger.detached(time.monotonic(), peer, delivered[0]))
        yield pb.WatchEvent(heartbeat=run.heartbeat)  # the watcher knows the bound at once
        async for event in self._events(run):
            yield event
        delivered[0] = True

    @staticmethod
    async def _events(run: _Run) -> AsyncIterator[pb.WatchEvent]:
        """The run's samples as they come, a heartbeat after each HEARTBEAT_INTERVAL_S with
        nothing else to send, and its record last."""
        sent = 0
        while True:
            while sent < len(run.samples):
                yield pb.WatchEvent(progress=run.samples[sent])
                sent += 1
            if run.record is not None:
                yield pb.WatchEvent(record=record_to_pb(run.record))
                return
            run.changed.clear()
            if sent < len(run.samples) or run.record is not None:
                continue
            try:
                await asyncio.wait_for(run.changed.wait(), HEARTBEAT_INTERVAL_S)
            except TimeoutError:
                yield pb.WatchEvent(heartbeat=run.heartbeat)

    async def _apply_watcher_rule(self) -> None:
        """Cancel the runs whose watcher vanished; hand on the records nobody took."""
        while True:
            await asyncio.sleep(WATCHERS_POLL_S)
            now = time.monotonic()
            for run_id, run in list(self.runs.items()):
                reason = run.ledger.cancel_due(now)
                if reason and run.migration is not None:
                    log.warning("run %s: cancelled: %s", run_id, reason)
                    run.migration.cancel(reason)
                self._hand_on_if_orphan(run, now)

    def _hand_on_if_orphan(self, run: _Run, now: float) -> None:
        if run.record is not None and run.ledger.orphan_due(now):
            self.keep_orphan(run.record)

    def keep_orphan(self, record: RunRecord, why: str = "no Watch delivered it") -> None:
        """A record its orchestrator did not get: to --orphan-records (once per run id), and
        kept here for a later Watch either way (`migbed watch`)."""
        record = dataclasses.replace(record, source_address=record.source_address or self.listen,
                                     labels={**record.labels, ORPHAN_LABEL: f"source service ({why})"})
        if self.orphan_records is None:
            log.warning("run %s ended %s and %s; no --orphan-records file: it is kept here for "
                        "`migbed watch %s %s`", record.run_id, record.outcome, why,
                        self.listen or "SOURCE", record.run_id)
            return
        keep_record(self.orphan_records, record)

    async def Cancel(self, request: pb.CancelRequest, context: grpc.aio.ServicerContext) -> pb.CancelReply:
        run = self.runs.get(request.run_id)
        if run is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no run {request.run_id!r} on this source")
        assert run is not None
        if run.record is not None:
            return pb.CancelReply(cancelled=False, state=run.record.outcome)
        # Past the stop the run completes (its record will say so): the reply says the same.
        assert run.migration is not None
        accepted, state = run.migration.cancel(request.reason or "cancelled by the user")
        return pb.CancelReply(cancelled=accepted, state=state)

    async def Status(self, request: pb.StatusRequest, context: grpc.aio.ServicerContext) -> pb.StatusReply:
        running = [k for k, r in self.runs.items() if r.record is None]
        return pb.StatusReply(role="source", protocol_version=pb.PROTOCOL_VERSION_1,
                              sessions=running, boot_id=boot_id(), migbed_version=__version__)

    def records_since(self, since: float) -> list[RunRecord]:
        """The records made at or after `since` (time.monotonic()), oldest first."""
        return [r.record for r in self.runs.values()
                if r.record is not None and r.ended_at >= since]

    async def shutdown(self, reason: str = "source service shutting down",
                       orphan_why: str = "the service stopped before a Watch delivered it") -> None:
        """Cancel every run (each guest restarted here) and wait up to 10 s for their ends;
        then hand on the records of runs tied to a watcher that no Watch delivered."""
        if self._watchers_task is not None:
            self._watchers_task.cancel()
        for r in self.runs.values():
            if r.record is None and r.migration is not None:
                r.migration.cancel(reason)
        tasks = [r.task for r in self.runs.values() if r.task is not None and not r.task.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=10)
        # Watches still open get their records now (a moment: they are being written).
        deadline = time.monotonic() + SHUTDOWN_DELIVERY_S
        while time.monotonic() < deadline and any(
                r.ledger.watchers and not r.ledger.delivered for r in self.runs.values()
                if r.record is not None):
            await asyncio.sleep(0.05)
        for r in self.runs.values():
            if r.record is not None and r.ledger.undelivered():
                self.keep_orphan(r.record, orphan_why)


SHUTDOWN_DELIVERY_S = 1.0


def keep_record(path: Path, record: RunRecord) -> None:
    """Append `record` to the JSONL file at `path` unless a record of its run is there (the
    orchestrator wrote it first); never raises (the record is logged when it cannot)."""
    from migbed.measure.files import append_line, journal_has

    try:
        if journal_has(path, "run_id", record.run_id):
            return
        append_line(path, record.to_json())
        log.warning("run %s: %s; its record appended to %s", record.run_id, record.outcome, path)
    except OSError as e:
        log.error("run %s: its record could not be appended to %s (%s): %s", record.run_id,
                  path, e.strerror or e, record.to_json())
