"""One incoming migration on the target: its lifecycle, and what each message means.

The main stream's messages are handled one at a time, in order, by `handle()`, which
dispatches each to the part whose job it is (the table in `__init__`); a device chunk is
written into its device inline and `handle()` returns only when the device has taken it, so
a load that takes time holds the whole stream. Every message is checked before it touches
state; a bad one raises ProtocolError, which ends the stream with a gRPC status naming the
field. What goes back to the source is queued on `outbox`.

  ram.py             RamPages, MultifdSync: guest RAM, on the main stream and the channels
  inline_devices.py  DeviceData, InitDataSent on the main stream; the switchover ACK
  device_state.py    QEMU 10's multifd device state: a loader per device, in parallel
  completion.py      StopCopy, Complete: the rest loads, vm_start, Shut, Resumed
  verify.py          Digests -> Verified
  progress.py        DeviceLoadProgress on the return path, the target's sign of life
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from migbed.core.clock import boot_id, now_ns
from migbed.core.guest import GuestMemory
from migbed.wire import migration_pb2 as pb
from migbed.wire.errors import ProtocolError

from .completion import Completion
from .device_state import MultifdDeviceLoads
from .devices import LoadingDevice
from .inline_devices import InlineDeviceLoads
from .outbox import Outbox
from .parts import Parts
from .progress import PROGRESS_PERIOD_S, ProgressReports
from .ram import RamReceiver
from .validate import refuse
from .verify import Verification

log = logging.getLogger("migbed.target")
# Once Complete is accepted, the source may only verify, ping or give up.
_AFTER_COMPLETE = ("digests", "ping", "abort")


class TargetSession:
    def __init__(self, setup: pb.Setup, metrics: Any = None) -> None:
        """`setup` must have passed validate_setup (and admission) first."""
        self.session_id = setup.session_id
        self.parts = Parts.from_setup(setup, metrics)
        self.ram = RamReceiver(self.parts)
        self.inline = InlineDeviceLoads(self.parts)
        self.device_state = MultifdDeviceLoads(self.parts, lambda: self.result, self.fail)
        self.completion = Completion(self.parts, self.ram, self.device_state)
        self.verification = Verification(self.parts, self.completion)
        self.progress = ProgressReports(self.parts)
        self.stop_event = threading.Event()  # interrupts the prefault
        self._tasks: list[asyncio.Task[None]] = []
        self.result = "running"
        self.failure: ProtocolError | None = None
        self.cancel_reason = ""
        # What each SourceMessage means: the part that handles it.
        self._handlers: dict[str, Callable[[Any], Awaitable[None]]] = {
            "ram": self.ram.store, "multifd_sync": self.ram.sync,
            "device_data": self.inline.device_data,
            "init_data_sent": self.inline.init_data_sent,
            "stop_copy": self.completion.stop_copy, "complete": self.completion.complete,
            "digests": self._digests, "ping": self._ping,
            "setup": self._second_setup, "abort": self._abort,
        }

    # The parts the server and the stream readers reach.
    @property
    def setup(self) -> pb.Setup:
        return self.parts.setup

    @property
    def scenario(self) -> str:
        return self.parts.scenario

    @property
    def memory(self) -> GuestMemory:
        return self.parts.memory

    @property
    def devices(self) -> list[LoadingDevice]:
        return self.parts.devices

    @property
    def outbox(self) -> Outbox:
        return self.parts.outbox

    @property
    def completed(self) -> bool:
        return self.completion.completed

    # ------------------------------------------------------------ lifecycle

    async def prepare(self) -> None:
        """Make the guest's RAM and the devices' buffers resident before accepting (off the
        event loop, interruptible by stop_event), so page faults stay out of the stream."""
        def touch() -> None:
            if not self.memory.prefault(stop=self.stop_event):
                return
            for dev in self.devices:
                for region in (dev.state.buffer, dev.state.context, dev.state.config):
                    region[::4096] = 0  # one write per page: the kernel zero-fills the rest

        await asyncio.to_thread(touch)
        if self.stop_event.is_set():  # cancelled, failed or shut down meanwhile
            self.check_failed()
            raise refuse("ABORTED", f"session ended while preparing ({self.result})")

    def start(self, accepted: pb.SetupAccepted | None = None) -> None:
        for dev in self.devices:
            dev.resume()
        self._tasks.append(asyncio.get_running_loop().create_task(self._report_progress()))
        if self.parts.multifd_device_state and self.ram.multifd is not None:
            self._tasks += self.device_state.start(self.ram.multifd)
        msg = accepted or pb.SetupAccepted()
        msg.session_id, msg.target_boot_id = self.session_id, boot_id()
        msg.devices_needing_ack = sum(d.needs_ack for d in self.devices)
        self.parts.send(pb.TargetMessage(setup_accepted=msg))
        self.inline.maybe_ack()  # no device needs it: the ACK goes at once (QEMU does too)

    def fail(self, e: BaseException) -> None:
        """The session ends with this error (the first one wins); a bug is logged and
        reported as INTERNAL, for this session only. An error after the session ended is
        the aftermath of its end (e.g. the main stream's reader finding its call aborted
        because a device's loader or a multifd channel failed, which was logged once
        already): debug only, never a second error or traceback."""
        if self.result != "running" or self.failure is not None:
            log.debug("session %s, already %s: then %r", self.session_id, self.result, e)
            return
        if not isinstance(e, ProtocolError):
            log.error("session %s", self.session_id, exc_info=e)
            e = refuse("INTERNAL", f"{type(e).__name__}: {e}")
        if self.failure is None:
            self.failure = e
        self.close("failed")

    def check_failed(self) -> None:
        """Raise what ended the session, if something did."""
        if self.outbox.overflowed and self.failure is None:
            self.failure = refuse("RESOURCE_EXHAUSTED", f"return path: {self.outbox.limit} "
                                  "messages queued and not read by the source")
        if self.failure is not None:
            raise self.failure
        if self.result == "cancelled":  # by Control.Cancel here: tell the source so
            raise refuse("ABORTED", "session cancelled on the target: "
                         f"{self.cancel_reason or 'no reason given'}")

    def close(self, result: str) -> None:
        """End the session: stop tasks and the guest (idempotent: the first end's result
        stays)."""
        if self.result == "running":
            self.result = result
        self.stop_event.set()
        self.parts.switchover_started.set()  # a device loader waiting for it ends (result set)
        for t in self._tasks:
            t.cancel()
        self.completion.stop()
        self.ram.close()
        self.outbox.close()

    def last_device_activity(self) -> float:
        """When a device last took a chunk or loaded (time.monotonic), 0 if never."""
        return max((d.last_activity for d in self.devices if d.loading or d.backlog_bytes
                    or d.loaded_bytes), default=0.0)

    async def _report_progress(self) -> None:
        """The return path's reports every period, for the session's life; a multifd
        channel lost fails the migration at once, not at the next sync."""
        try:
            while True:
                self.ram.check_channels()
                self.progress.next_period()
                await asyncio.sleep(self.parts.real_seconds(PROGRESS_PERIOD_S))
        except ProtocolError as e:
            self.fail(e)

    # ------------------------------------------------------------ the main stream

    async def handle(self, msg: pb.SourceMessage) -> None:
        body = msg.WhichOneof("body")
        if self.completed and body not in _AFTER_COMPLETE:
            raise refuse("FAILED_PRECONDITION", f"{body} after complete")
        handler = self._handlers.get(body or "")
        if handler is None:
            raise refuse("INVALID_ARGUMENT", "empty or unknown message body")
        await handler(getattr(msg, body or ""))

    async def _ping(self, p: pb.Ping) -> None:
        self.parts.send(pb.TargetMessage(pong=pb.Pong(
            seq=p.seq, source_send_ns=p.source_send_ns, target_recv_ns=now_ns())))

    async def _digests(self, m: pb.Digests) -> None:
        self.result = await self.verification.verify(m)  # final even if the source hangs up now
        await self.verification.let_guest_run()
        self.close(self.result)

    async def _second_setup(self, m: pb.Setup) -> None:
        raise refuse("FAILED_PRECONDITION", "a second setup on one stream")

    async def _abort(self, m: pb.Abort) -> None:
        raise refuse("ABORTED", f"source aborted: {m.reason[:200]}")
