"""One incoming migration on the target: check, store, load, ACK, vm_start + Shut, verify.

The main stream's messages are handled one at a time, in order, by `handle()`; a device
chunk is written into its device inline and `handle()` returns only when the device has
taken it, so a load that takes time holds the whole stream (RAM and later devices wait;
the source feels it through the transport's flow control). Every message is checked
before it touches state; a bad one raises ProtocolError, which ends the stream with a
gRPC status naming the field. What goes back to the source is queued on `outbox`.
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from migbed.core import limits as lim
from migbed.core.clock import boot_id, now_ns
from migbed.core.guest import GuestMemory
from migbed.core.loadmodel import ImageError
from migbed.core.workload import guest_workload
from migbed.dataplane.receiver import MultifdSession
from migbed.dataplane.sender import MultifdError
from migbed.runtime.gcpause import DOWNTIME_GC_PAUSE
from migbed.runtime.vcpu import VCpu
from migbed.services.target.devices import LoadingDevice, Pacer
from migbed.services.target.validate import dilation
from migbed.wire import migration_pb2 as pb
from migbed.wire.channel import CHUNK_BYTES
from migbed.wire.errors import ProtocolError

log = logging.getLogger("migbed.target")

PROGRESS_PERIOD_S = 0.05  # while a device loads, the return path says so this often
KEEPALIVE_PERIODS = 4  # an unchanged device's progress is repeated this often (200 ms)
RESUMED_GUEST_GRACE_S = 0.2  # the resumed guest runs this long before the session ends
_KIND = {pb.IMAGE_KIND_INITIAL: "initial", pb.IMAGE_KIND_MIDDLE: "middle",
         pb.IMAGE_KIND_FINAL: "final", pb.IMAGE_KIND_CONFIG: "config"}


def _error(code: str, message: str) -> ProtocolError:
    return ProtocolError(code, lim.clip(message))


class Outbox:
    """The return path's queue: bounded, so a source that never reads it cannot make the
    target grow; `None` from get() means the session is over."""

    def __init__(self, limit: int = lim.MAX_OUTBOX_MESSAGES) -> None:
        self._items: collections.deque[pb.TargetMessage] = collections.deque()
        self._ready = asyncio.Event()
        self._closed = False
        self.limit = limit
        self.overflowed = False

    def put(self, msg: pb.TargetMessage) -> None:
        if self._closed:
            return
        if len(self._items) >= self.limit:  # the source does not read: end the session
            self.overflowed = True
            self.close()
            return
        self._items.append(msg)
        self._ready.set()

    def close(self) -> None:
        self._closed = True
        self._ready.set()

    async def get(self) -> pb.TargetMessage | None:
        while not self._items:
            if self._closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    def drain(self) -> list[pb.TargetMessage]:
        out = list(self._items)
        self._items.clear()
        return out


class TargetSession:
    def __init__(self, setup: pb.Setup, metrics: Any = None) -> None:
        """`setup` must have passed validate_setup (and admission) first."""
        self.setup = setup
        # A dilated run (setup.time_dilation = K) stretches the target's emulated periods
        # as the source stretched the scenario's (migbed/core/dilation.py).
        self.progress_period_s = PROGRESS_PERIOD_S * dilation(setup)
        self.session_id = setup.session_id
        self.scenario = setup.scenario
        self.metrics = metrics  # a measure.metrics.TargetMetrics, or None
        self.outbox = Outbox()
        g = setup.guest
        self.memory = GuestMemory(g.ram_bytes, g.page_size, setup.guest_seed, fill=False)
        self.devices = [LoadingDevice(i, d) for i, d in enumerate(setup.devices)]
        self.multifd_device_state = (setup.device_state_transfer
                                     == pb.DEVICE_STATE_TRANSFER_MULTIFD)
        self.pacer = Pacer()  # the main stream's reader
        # The main stream reached the switchover (StopCopy) or the session ended: QEMU 10
        # starts loading multifd device state there (vfio_multifd_switchover_start).
        self.switchover_started = asyncio.Event()
        self.stop_event = threading.Event()  # interrupts the prefault
        self.ack_sent = False
        self.stopped = False  # StopCopy seen
        self._gc_paused = False  # this session holds the downtime's GC pause
        self.completed = False
        self.ram_pages_received = 0
        self.multifd: MultifdSession | None = None  # the channels, when multifd is on
        self.multifd_pages: Callable[[], int] = lambda: 0  # pages the channels delivered
        self._multifd_counted = 0  # ... of which counted in bytes_received (at each sync)
        self._multifd_generation = 0  # the last MultifdSync's generation
        self.bytes_received = {"precopy": 0, "downtime": 0}
        self.device_streams_open: set[int] = set()  # MigrateDeviceState streams seen
        self.device_streams_done: set[int] = set()  # ... and loaded to their last chunk
        self.vcpu: VCpu | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.result = "running"
        self.failure: ProtocolError | None = None
        self.cancel_reason = ""

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
            raise _error("ABORTED", f"session ended while preparing ({self.result})")

    def start(self, accepted: pb.SetupAccepted | None = None) -> None:
        for dev in self.devices:
            dev.resume()
        self._tasks.append(asyncio.get_running_loop().create_task(self._report_progress()))
        msg = accepted or pb.SetupAccepted()
        msg.session_id, msg.target_boot_id = self.session_id, boot_id()
        msg.devices_needing_ack = sum(d.needs_ack for d in self.devices)
        self.send(pb.TargetMessage(setup_accepted=msg))
        self._maybe_ack()  # no device needs it: the ACK goes at once (QEMU does too)

    def send(self, msg: pb.TargetMessage) -> None:
        self.outbox.put(msg)

    def fail(self, e: BaseException) -> None:
        """The session ends with this error (the first one wins); a bug is logged and
        reported as INTERNAL, for this session only."""
        if not isinstance(e, ProtocolError):
            log.error("session %s", self.session_id, exc_info=e)
            e = _error("INTERNAL", f"{type(e).__name__}: {e}")
        if self.failure is None:
            self.failure = e
        self.close("failed")

    def check_failed(self) -> None:
        """Raise what ended the session, if something did."""
        if self.outbox.overflowed and self.failure is None:
            self.failure = _error("RESOURCE_EXHAUSTED", f"return path: {self.outbox.limit} "
                                  "messages queued and not read by the source")
        if self.failure is not None:
            raise self.failure
        if self.result == "cancelled":  # by Control.Cancel here: tell the source so
            raise _error("ABORTED", "session cancelled on the target: "
                         f"{self.cancel_reason or 'no reason given'}")

    def close(self, result: str) -> None:
        """End the session: stop tasks and the guest (idempotent: the first end's result
        stays)."""
        if self.result == "running":
            self.result = result
        self.stop_event.set()
        self.switchover_started.set()  # a device stream waiting for it ends (result set)
        for t in self._tasks:
            t.cancel()
        self._pause_gc(False)
        if self.vcpu is not None:
            self.vcpu.stop()
        if self.multifd is not None:
            self.multifd.close()  # joins its channel threads: no page lands after this
        self.outbox.close()

    def last_device_activity(self) -> float:
        """When a device last took a chunk or loaded (time.monotonic), 0 if never."""
        return max((d.last_activity for d in self.devices if d.loading or d.backlog_bytes
                    or d.loaded_bytes), default=0.0)

    def _maybe_ack(self) -> None:
        if self.ack_sent or not self.setup.switchover_ack:
            return
        if all(d.initial_loaded or not d.needs_ack for d in self.devices):
            self.ack_sent = True
            self.send(pb.TargetMessage(switchover_ack=pb.SwitchoverAck(target_ack_ns=now_ns())))

    async def _report_progress(self) -> None:
        """Each device's progress when it changes, every period while it loads, and every
        few periods anyway: the source takes the return path as the target's sign of life,
        and pongs come only as fast as the reader works through the data ahead of them."""
        last: list[pb.DeviceLoadProgress | None] = [None] * len(self.devices)
        beat = 0
        while True:
            beat = (beat + 1) % KEEPALIVE_PERIODS
            if self.multifd is not None and self.multifd.error is not None:
                # a channel lost fails the migration at once, not at the next sync
                self.fail(_error("UNAVAILABLE", f"multifd: {self.multifd.error}"))
                return
            for i, dev in enumerate(self.devices):
                p = dev.progress()
                if p == last[i] and not p.loading and beat:
                    continue
                last[i] = p
                self.send(pb.TargetMessage(load_progress=p))
                if self.metrics is not None:
                    self.metrics.on_load_progress(self.scenario, dev.name, p.loaded_bytes,
                                                  p.backlog_bytes, p.busy_s / dilation(self.setup),
                                                  p.loading, p.initial_loaded)
            await asyncio.sleep(self.progress_period_s)

    # ------------------------------------------------------------ the main stream

    async def handle(self, msg: pb.SourceMessage) -> None:
        body = msg.WhichOneof("body")
        if self.completed and body not in ("digests", "ping", "abort"):
            raise _error("FAILED_PRECONDITION", f"{body} after complete")
        handler = self._HANDLERS.get(body or "")
        if handler is None:
            raise _error("INVALID_ARGUMENT", "empty or unknown message body")
        await handler(self, getattr(msg, body or ""))

    def _device(self, index: int, what: str) -> LoadingDevice:
        if index >= len(self.devices):
            raise _error("INVALID_ARGUMENT", f"{what}.device = {index}: this session has "
                         f"{len(self.devices)} device(s)")
        return self.devices[index]

    async def _ram(self, m: pb.RamPages) -> None:
        n = len(m.pages)
        ps = self.memory.page_size
        if n == 0 or n * ps > CHUNK_BYTES * 4:
            raise _error("INVALID_ARGUMENT", f"ram.pages: {n} pages; 1 to {CHUNK_BYTES * 4 // ps}")
        data = m.data  # each read of a bytes field copies it (1 MiB): read it once
        if len(data) != n * ps:
            raise _error("INVALID_ARGUMENT",
                         f"ram.data: {len(data)} bytes for {n} pages of {ps} (truncated?)")
        idx = np.array(m.pages, dtype=np.int64)
        if int(idx.max()) >= self.memory.pages:
            raise _error("OUT_OF_RANGE",
                         f"ram.pages: page {int(idx.max())} beyond the guest's {self.memory.pages}")
        self.memory.store_pages(idx, data)
        self.ram_pages_received += n
        self._count("ram", len(data))

    def _check_chunk(self, m: pb.DeviceData, dev: LoadingDevice, kind: str | None,
                     data: bytes) -> str:
        i = dev.index
        if kind is None:
            raise _error("INVALID_ARGUMENT", f"device_data.kind = {m.kind}: INITIAL, MIDDLE, "
                         "FINAL or CONFIG")
        if m.seq != dev.next_seq:
            what = "duplicated" if m.seq < dev.next_seq else "out of order (a gap)"
            raise _error("DATA_LOSS", f"device_data.seq = {m.seq} for device {i}: expected "
                         f"{dev.next_seq}, {what}")
        if not data or len(data) > CHUNK_BYTES:
            raise _error("INVALID_ARGUMENT", f"device_data.data: {len(data)} bytes; 1 to {CHUNK_BYTES}")
        check_range("device_data", dev, kind, m.offset, len(data))
        if kind == "initial" and dev.marker_seen:
            raise _error("FAILED_PRECONDITION", f"initial data for device {i} after INIT_DATA_SENT")
        if kind in ("final", "config") and not self.stopped:
            raise _error("FAILED_PRECONDITION", f"{kind} (stop-copy) data before stop_copy")
        if self.multifd_device_state and (kind in ("final", "config") or self.stopped):
            raise _error("FAILED_PRECONDITION", f"device_data.kind = {kind.upper()} on the main "
                         "stream: with device_state_transfer = MULTIFD stop-copy state goes on "
                         "MigrateDeviceState")
        check_image("device_data", dev, kind, m.image_bytes, len(data))
        return kind

    async def _device_data(self, m: pb.DeviceData) -> None:
        dev = self._device(m.device, "device_data")
        data = m.data  # each read of a bytes field copies it: read it once
        kind = self._check_chunk(m, dev, _KIND.get(m.kind), data)
        dev.next_seq += 1
        self._count("device", len(data))
        # Loads (image-complete) in the write that reaches the image's length: whatever
        # comes between its chunks (RAM, other devices, INIT_DATA_SENT) leaves it open.
        await dev.write(kind, m.offset, data, m.image_bytes, self.pacer)

    async def _init_data_sent(self, m: pb.InitDataSent) -> None:
        dev = self._device(m.device, "init_data_sent")
        if m.seq != dev.next_seq:
            raise _error("DATA_LOSS", f"init_data_sent.seq = {m.seq}: device {dev.index} is at "
                         f"seq {dev.next_seq} (chunks missing)")
        if dev.marker_seen:
            raise _error("INVALID_ARGUMENT", f"init_data_sent for device {dev.index} twice")
        if dev.model.image is not None and dev.model.image.kind == "initial":
            raise _error("DATA_LOSS", f"init_data_sent for device {dev.index}: its "
                         f"{dev.model.open_image()} (every initial byte comes before it)")
        await dev.initial_data_sent(self.pacer)
        self._maybe_ack()

    async def _ping(self, p: pb.Ping) -> None:
        self.send(pb.TargetMessage(pong=pb.Pong(seq=p.seq, source_send_ns=p.source_send_ns,
                                                target_recv_ns=now_ns())))

    async def _stop_copy(self, m: pb.StopCopy) -> None:
        self.stopped = True
        self.switchover_started.set()
        self._pause_gc(True)  # until the guest runs here (or the session ends)

    def _pause_gc(self, paused: bool) -> None:
        if paused != self._gc_paused:
            self._gc_paused = paused
            (DOWNTIME_GC_PAUSE.hold if paused else DOWNTIME_GC_PAUSE.release)()

    def attach_multifd(self, channels: MultifdSession) -> None:
        """The session's multifd channels (a dataplane MultifdSession): RAM pages land in
        guest memory from their own threads; the main stream waits at each sync."""
        self.multifd = channels
        self.multifd_pages = lambda: int(channels.pages_received)

    async def _multifd_sync(self, m: pb.MultifdSync) -> None:
        """QEMU's RAM_SAVE_FLAG_MULTIFD_FLUSH: read no further until every channel has
        delivered this generation's SYNC (all pages sent before it are in RAM)."""
        if self.multifd is None:
            raise _error("FAILED_PRECONDITION", "multifd_sync: this session has no multifd "
                         "channels (setup.multifd_channels = 0)")
        if m.generation <= self._multifd_generation:
            raise _error("INVALID_ARGUMENT", f"multifd_sync.generation = {m.generation} must be "
                         f"> the last one, {self._multifd_generation}")
        self._multifd_generation = m.generation
        silence = self.setup.heartbeat_timeout_s or lim.HEARTBEAT_TIMEOUT_S[1]
        try:
            # Pages the channels delivered before this generation's SYNC: exactly what the
            # source wrote before it, neither fewer (lost) nor more (stray pages in RAM).
            through = await self.multifd.wait_sync(m.generation, silence)
        except TimeoutError as e:
            raise _error("DEADLINE_EXCEEDED", f"multifd_sync.generation = {m.generation}: {e}") from None
        except MultifdError as e:  # a channel failed
            raise _error("UNAVAILABLE", f"multifd channel failed: {e}") from None
        if through != m.pages_sent:
            raise _error("DATA_LOSS", f"multifd_sync.pages_sent = {m.pages_sent}, the channels "
                         f"delivered {through} before this sync")
        got = self.multifd_pages()  # may include pages of the next round already
        self._count("ram", (got - self._multifd_counted) * self.memory.page_size)
        self._multifd_counted = got

    async def _setup(self, m: pb.Setup) -> None:
        raise _error("FAILED_PRECONDITION", "a second setup on one stream")

    async def _abort(self, m: pb.Abort) -> None:
        raise _error("ABORTED", f"source aborted: {m.reason[:200]}")

    def _count(self, kind: str, n: int, stage: str = "") -> None:
        stage = stage or ("downtime" if self.stopped else "precopy")
        self.bytes_received[stage] += n
        if self.metrics is not None:
            self.metrics.on_received_bytes(self.scenario, stage, kind, n)

    # ------------------------------------------------------------ QEMU 10: device streams

    def open_device_stream(self, index: int) -> LoadingDevice:
        """MigrateDeviceState's first chunk names this session and device `index`."""
        if not self.multifd_device_state:
            raise _error("FAILED_PRECONDITION", "device_state_chunk: this session sends device "
                         "state on the main stream (setup.device_state_transfer = MAIN)")
        dev = self._device(index, "device_state_chunk")
        if dev.index in self.device_streams_open:
            raise _error("ALREADY_EXISTS", f"device_state_chunk.device = {index}: this device's "
                         "state stream is already open")
        self.device_streams_open.add(dev.index)
        return dev

    async def device_state_chunk(self, dev: LoadingDevice, c: pb.DeviceStateChunk,
                                 seq: int, pacer: Pacer) -> None:
        """One chunk of a device's stop-copy state on its own stream, loaded on that
        stream's task (its own pacer): in parallel with the other devices."""
        if self.result != "running":
            raise _error("ABORTED", f"device_state_chunk: session {self.session_id!r} has "
                         f"ended ({self.result})")
        if c.device != dev.index:
            raise _error("INVALID_ARGUMENT", f"device_state_chunk.device = {c.device}: this "
                         f"stream is device {dev.index}'s")
        if c.seq != seq:
            raise _error("DATA_LOSS", f"device_state_chunk.seq = {c.seq}: expected {seq}")
        data = c.data
        if len(data) > CHUNK_BYTES or (not data and not c.last):
            raise _error("INVALID_ARGUMENT", f"device_state_chunk.data: {len(data)} bytes; "
                         f"1 to {CHUNK_BYTES} (0 only in the last chunk)")
        if data:  # the same region for every kind but config: checked before the wait
            check_range("device_state_chunk", dev, _region(dev, c.offset), c.offset, len(data))
            check_image_bytes("device_state_chunk", c.image_bytes)
        await self._switchover_start()
        if data:
            kind = dev.model.image.kind if dev.model.image else _region(dev, c.offset)
            check_range("device_state_chunk", dev, kind, c.offset, len(data))
            check_image("device_state_chunk", dev, kind, c.image_bytes, len(data))
            self._count("device", len(data), "downtime")  # stop-copy state only
            await dev.write(kind, c.offset, data, c.image_bytes, pacer)
        if c.last:
            check_whole("device_state_chunk.last", dev)
            await dev.finish(pacer)
            self.device_streams_done.add(dev.index)

    async def _switchover_start(self) -> None:
        """QEMU 10 starts a device's load thread when the main stream reaches the
        switchover point (vfio_multifd_switchover_start): the pre-copy data ahead of it on
        the main stream is in the device before any of this stream is."""
        await self.switchover_started.wait()
        if self.result != "running":
            raise _error("ABORTED", f"device_state_chunk: session {self.session_id!r} has "
                         f"ended ({self.result})")

    # ------------------------------------------------------------ completion

    async def _complete(self, m: pb.Complete) -> None:
        if not self.stopped:
            raise _error("FAILED_PRECONDITION", "complete before stop_copy")
        seqs = [d.next_seq for d in self.devices]
        if list(m.device_next_seq) != seqs:
            raise _error("DATA_LOSS", f"complete.device_next_seq = {list(m.device_next_seq)}, "
                         f"received {seqs}")
        if not self.multifd_device_state:  # else the device streams go on with them
            for dev in self.devices:
                check_whole("complete", dev)
        pages = self.ram_pages_received + self.multifd_pages()
        if m.ram_pages_sent != pages:
            raise _error("DATA_LOSS", f"complete.ram_pages_sent = {m.ram_pages_sent}, "
                         f"received {pages}")
        self.completed = True
        received_ns = now_ns()
        self.send(pb.TargetMessage(received=pb.Received(target_recv_ns=received_ns)))
        if self.multifd_device_state:
            await self._wait_device_streams()
        else:
            for dev in self.devices:  # one reader: the devices load one after another
                await dev.finish(self.pacer)
        loads_done = now_ns()
        for dev in self.devices:
            dev.run()
        await self._resume(loads_done)
        if self.metrics is not None:
            k = dilation(self.setup)  # the series are in virtual time, K a label
            self.metrics.on_resumed(self.scenario, self.setup.policy,
                                    (loads_done - received_ns) / 1e9 / k, k)

    async def _wait_device_streams(self) -> None:
        """QEMU 10: each device loads its stop-copy state on its own; completion waits for
        them all. A device whose stream shows no life for the heartbeat timeout fails it."""
        silence = self.setup.heartbeat_timeout_s or lim.HEARTBEAT_TIMEOUT_S[1]
        since = time.monotonic()
        while len(self.device_streams_done) < len(self.devices):
            now = time.monotonic()
            quiet = [d for d in self.devices if d.index not in self.device_streams_done
                     and not d.loading and now - max(d.last_activity, since) > silence]
            if quiet:
                raise _error("DEADLINE_EXCEEDED", f"MigrateDeviceState for device "
                             f"{quiet[0].index} ({quiet[0].name}): nothing for {silence:g}s "
                             "after complete (setup.heartbeat_timeout_s)")
            await asyncio.sleep(self.progress_period_s)

    async def _resume(self, loads_done: int) -> None:
        self.memory.begin_snapshot()
        s = self.setup
        wl = guest_workload(s.guest.ram_bytes, s.guest.page_size, s.dirty_rate_bytes_per_s,
                            s.working_set_bytes or s.guest.ram_bytes, s.uniform_dirtying,
                            s.guest_seed + 1)
        self.vcpu = VCpu(self.memory, wl, s.vcpu_tick_s)
        # QEMU's process_incoming_migration_bh: vm_start, then MIG_RP_MSG_SHUT (from
        # migration_incoming_state_destroy); the guest's first progress comes after.
        self.vcpu.start()
        self.send(pb.TargetMessage(shut=pb.Shut(target_loads_done_ns=loads_done)))
        await asyncio.to_thread(self.vcpu.wait_first_tick, 5.0)
        self.send(pb.TargetMessage(resumed=pb.Resumed(
            target_first_tick_ns=self.vcpu.first_tick_ns, target_loads_done_ns=loads_done,
            device_initial_load_s=[d.initial_load_s for d in self.devices])))
        self._pause_gc(False)  # the downtime is over here

    async def _digests(self, m: pb.Digests) -> None:
        if self.vcpu is None:
            raise _error("FAILED_PRECONDITION", "digests before the guest resumed")
        if len(m.devices) != len(self.devices):
            raise _error("INVALID_ARGUMENT",
                         f"digests.devices: {len(m.devices)}, expected {len(self.devices)}")
        ram = await asyncio.to_thread(self.memory.snapshot_digest)
        devs = [await asyncio.to_thread(d.state.digest) for d in self.devices]
        problems = []
        if not hmac.compare_digest(ram, m.ram):
            problems.append("RAM differs")
        for d, mine, theirs in zip(self.devices, devs, m.devices, strict=True):
            if not hmac.compare_digest(mine, theirs):
                problems.append(f"device {d.name} differs")
        ok = not problems
        self.result = "verified" if ok else "mismatch"  # final even if the source hangs up now
        self.send(pb.TargetMessage(verified=pb.Verified(ok=ok, ram=ram, devices=devs,
                                                        detail="; ".join(problems))))
        await asyncio.sleep(RESUMED_GUEST_GRACE_S * dilation(self.setup))
        self.memory.end_snapshot()
        self.close(self.result)

    _HANDLERS: dict[str, Any] = {
        "ram": _ram, "device_data": _device_data, "init_data_sent": _init_data_sent,
        "ping": _ping, "stop_copy": _stop_copy, "complete": _complete, "digests": _digests,
        "setup": _setup, "abort": _abort, "multifd_sync": _multifd_sync,
    }


def _region(dev: LoadingDevice, offset: int) -> str:
    """A device-state chunk's kind by its offset: the final image or the config state. A
    chunk that continues the device's open image (begun in pre-copy on the main stream) is
    of that image's kind instead."""
    return "config" if offset >= dev.state.data_size else "final"


# (least, most, what limits it) image_bytes of an image of each kind, from the Setup's shape
_IMAGE_BYTES: dict[str, Callable[[LoadingDevice], tuple[int, int, str]]] = {
    "initial": lambda d: (d.state.initial_bytes, d.state.initial_bytes, "initial_bytes"),
    "middle": lambda d: (1, d.state.initial_bytes, "initial_bytes: dirty state buffer"),
    "final": lambda d: (1, d.state.data_size, "initial_bytes + stop_copy_size"),
    "config": lambda d: (1, d.state.state_bytes, "device_state_bytes"),
}
_IMAGE_ERROR_CODE = {"kind": "FAILED_PRECONDITION", "image_bytes": "INVALID_ARGUMENT",
                     "data": "OUT_OF_RANGE"}


def check_image_bytes(what: str, image_bytes: int) -> None:
    if image_bytes == 0:
        raise _error("INVALID_ARGUMENT", f"{what}.image_bytes = 0: required, the length of "
                     "the image the chunk belongs to")


def check_image(what: str, dev: LoadingDevice, kind: str, image_bytes: int, n: int) -> None:
    """A chunk's image length (mlx5's header record_size) fits its kind on this device and
    the chunk fits the device's open image, if one is open."""
    check_image_bytes(what, image_bytes)
    lo, hi, limit = _IMAGE_BYTES[kind](dev)
    if not lo <= image_bytes <= hi:
        allowed = f"exactly {lo}" if lo == hi else f"1 to {hi}"
        raise _error("OUT_OF_RANGE", f"{what}.image_bytes = {image_bytes} for a {kind.upper()} "
                     f"image of device {dev.name}: allowed {allowed} ({limit})")
    try:
        dev.model.check(kind, n, image_bytes)
    except ImageError as e:
        raise _error(_IMAGE_ERROR_CODE[e.field], f"{what}.{e}, device {dev.name}") from None


def check_whole(what: str, dev: LoadingDevice) -> None:
    """The device's stream ends here: no image may be left short of its length."""
    if dev.model.image is not None:
        raise _error("DATA_LOSS", f"{what}: device {dev.name}'s {dev.model.open_image()} "
                     "never reached its image_bytes")


def check_range(what: str, dev: LoadingDevice, kind: str, offset: int, n: int) -> None:
    """A chunk's bytes lie in its device's state, in the region its kind addresses."""
    st = dev.state
    lo, hi = (st.data_size, st.size) if kind == "config" else (0, st.data_size)
    if offset < lo or offset + n > hi:
        raise _error("OUT_OF_RANGE", f"{what} [{offset}, {offset + n}) beyond device "
                     f"{dev.name}'s {kind} state [{lo}, {hi})")
