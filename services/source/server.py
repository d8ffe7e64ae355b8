"""The source service: the Control API an orchestrator calls to start and watch migrations.

A thin shell over engine.Migration. Start validates the scenario and the policy before
anything runs (INVALID_ARGUMENT naming the field otherwise); Watch streams progress and
then the run record; Cancel ends a migration, leaving its guest running.
"""

from __future__ import annotations

import asyncio
import gc
import re
import ssl
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

import grpc

from migbed import __version__
from migbed.core.bounded import InputError, parse_labels_json
from migbed.core.clock import boot_id
from migbed.core.scenario import ScenarioError, parse_scenario
from migbed.core.start import StartInputError, check_policy, check_target_address, status_text
from migbed.measure.record import Event, ProgressSample, RunRecord
from migbed.measure.record_wire import record_to_pb, sample_to_pb
from migbed.wire import migration_pb2 as pb
from migbed.wire import migration_pb2_grpc as pbg

from .engine import Migration

KEEP_FINISHED = 200
_RUN_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class _Run:
    def __init__(self, migration: Migration) -> None:
        # Dropped when the run ends: it holds the guest's RAM, and up to KEEP_FINISHED
        # finished runs stay listed (for Watch and Cancel) by their record and samples.
        self.migration: Migration | None = migration
        self.samples: list[pb.ProgressSample] = []
        self.changed = asyncio.Event()
        self.record: RunRecord | None = None
        self.task: asyncio.Task[RunRecord] | None = None
        self.ended_at = 0.0  # time.monotonic() when its record was made


class SourceService(pbg.ControlServicer):
    def __init__(self, metrics: Any = None, channel_credentials: grpc.ChannelCredentials | None = None,
                 max_running: int = 16, multifd_ssl: ssl.SSLContext | None = None) -> None:
        self.runs: OrderedDict[str, _Run] = OrderedDict()
        self.metrics = metrics
        self.credentials = channel_credentials
        self.max_running = max_running
        self.multifd_ssl = multifd_ssl

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
        except InputError as e:
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
        run = _Run(migration)
        self.runs[request.run_id] = run
        run.task = asyncio.get_running_loop().create_task(self._run(run))
        self._trim()
        return pb.StartReply(run_id=request.run_id)

    async def _run(self, run: _Run) -> RunRecord:
        assert run.migration is not None
        record = await run.migration.run()
        run.record = record
        run.ended_at = time.monotonic()
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
        finished = [k for k, r in self.runs.items() if r.record is not None]
        for k in finished[: max(0, len(finished) - KEEP_FINISHED)]:
            del self.runs[k]

    async def Watch(self, request: pb.WatchRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[pb.WatchEvent]:
        run = self.runs.get(request.run_id)
        if run is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no run {request.run_id!r} on this source")
        assert run is not None
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
            await run.changed.wait()

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

    async def shutdown(self, reason: str = "source service shutting down") -> None:
        """Cancel every run (each guest restarted here) and wait up to 10 s for their ends."""
        for r in self.runs.values():
            if r.record is None and r.migration is not None:
                r.migration.cancel(reason)
        tasks = [r.task for r in self.runs.values() if r.task is not None and not r.task.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=10)
