"""One incoming migration on the target: validate, store, load, ACK, resume, verify.

The gRPC servicer (server.py) feeds SourceMessages in and sends out what this queues on
`outbox`. Every message is checked before it touches state; a bad one raises
ProtocolError, which ends the stream with a gRPC status naming the field.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
from typing import Any

import numpy as np

from migbed.core.clock import boot_id, now_ns
from migbed.core.device import TargetDevice, VfioState
from migbed.core.guest import GuestMemory
from migbed.core.loadcost import LoadCost
from migbed.core.workload import guest_workload
from migbed.runtime.vcpu import VCpu
from migbed.wire import migration_pb2 as pb
from migbed.wire.channel import CHUNK_BYTES
from migbed.wire.errors import ProtocolError
from services.target.loader import DeviceLoader

log = logging.getLogger("migbed.target")

MAX_RAM_BYTES = 64 << 30
MAX_DEVICES = 16
MAX_DEVICE_BYTES = 16 << 30
PROGRESS_PERIOD_S = 0.05
RESUMED_GUEST_GRACE_S = 0.2  # the resumed guest runs this long before the session ends
_KIND = {pb.IMAGE_KIND_INITIAL: "initial", pb.IMAGE_KIND_MIDDLE: "middle",
         pb.IMAGE_KIND_FINAL: "final"}


class TargetSession:
    def __init__(self, setup: pb.Setup, metrics: Any = None) -> None:
        self._validate_setup(setup)
        self.setup = setup
        self.session_id = setup.session_id
        self.outbox: asyncio.Queue[pb.TargetMessage | None] = asyncio.Queue()
        self.metrics = metrics  # a measure.metrics.TargetMetrics, or None
        self._min_one_way_ns: int | None = None  # target recv - source send, over pings
        g = setup.guest
        self.memory = GuestMemory(g.ram_bytes, g.page_size, setup.guest_seed, fill=False)
        self.devices = [TargetDevice(d.name, d.initial_bytes, d.stop_copy_size) for d in setup.devices]
        self.next_seq = [0] * len(self.devices)
        self.init_marker_seen = [d.initial_bytes == 0 for d in setup.devices]
        self.needs_ack = [d.initial_bytes > 0 for d in setup.devices]
        self.loaders = [
            DeviceLoader(dev, LoadCost(d.load_setup_time_s, d.load_rate_bytes_per_s,
                                       d.stop_copy_load_time_s), self._device_approved)
            for dev, d in zip(self.devices, setup.devices, strict=True)
        ]
        self.ack_sent = False
        self.stopped = False  # StopCopy seen
        self.completed = False
        self.ram_pages_received = 0
        self.bytes_received = {"precopy": 0, "downtime": 0}
        self.vcpu: VCpu | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.result: str = "running"
        self.cancel_reason = ""

    # ------------------------------------------------------------ validation

    @staticmethod
    def _validate_setup(s: pb.Setup) -> None:
        if s.protocol_version != pb.PROTOCOL_VERSION_1:
            raise ProtocolError("FAILED_PRECONDITION",
                                f"setup.protocol_version = {s.protocol_version}: this target speaks 1")
        if not s.session_id or len(s.session_id) > 128:
            raise ProtocolError("INVALID_ARGUMENT", "setup.session_id: 1 to 128 characters")
        g = s.guest
        if g.page_size not in (4096, 65536, 2 << 20):
            raise ProtocolError("INVALID_ARGUMENT",
                                f"setup.guest.page_size = {g.page_size}: allowed 4096, 65536, 2097152")
        if not (1 << 20) <= g.ram_bytes <= MAX_RAM_BYTES or g.ram_bytes % g.page_size:
            raise ProtocolError("INVALID_ARGUMENT",
                                f"setup.guest.ram_bytes = {g.ram_bytes}: a multiple of page_size "
                                f"from 1 MiB to {MAX_RAM_BYTES}")
        if len(s.devices) > MAX_DEVICES:
            raise ProtocolError("INVALID_ARGUMENT",
                                f"setup.devices: {len(s.devices)} devices, at most {MAX_DEVICES}")
        for i, d in enumerate(s.devices):
            w = f"setup.devices[{i}]"
            if d.initial_bytes > MAX_DEVICE_BYTES or d.stop_copy_size > MAX_DEVICE_BYTES:
                raise ProtocolError("INVALID_ARGUMENT", f"{w}: state larger than {MAX_DEVICE_BYTES}")
            if not 0 < d.load_rate_bytes_per_s < math.inf:  # also refuses NaN
                raise ProtocolError("INVALID_ARGUMENT",
                                    f"{w}.load_rate_bytes_per_s must be finite, > 0")
            if not (0 <= d.load_setup_time_s <= 600 and 0 <= d.stop_copy_load_time_s <= 600):
                raise ProtocolError("INVALID_ARGUMENT", f"{w}: load times must be 0..600 s")
        if s.heartbeat_timeout_s and not 0.2 <= s.heartbeat_timeout_s <= 60:
            raise ProtocolError("INVALID_ARGUMENT", f"setup.heartbeat_timeout_s = "
                                f"{s.heartbeat_timeout_s:g}: 0 (default) or 0.2 .. 60")
        if not 0 <= s.dirty_rate_bytes_per_s <= MAX_RAM_BYTES:  # the resumed guest's workload
            raise ProtocolError("INVALID_ARGUMENT", f"setup.dirty_rate_bytes_per_s = "
                                f"{s.dirty_rate_bytes_per_s:g}: 0 .. {MAX_RAM_BYTES}")
        if not (1e-4 <= s.vcpu_tick_s <= 1e-3):
            raise ProtocolError("INVALID_ARGUMENT", "setup.vcpu_tick_s: 0.0001 .. 0.001")

    def _device(self, index: int, what: str) -> int:
        if index >= len(self.devices):
            raise ProtocolError("INVALID_ARGUMENT",
                                f"{what}.device = {index}: this session has {len(self.devices)} device(s)")
        return index

    # ------------------------------------------------------------ lifecycle

    async def prepare(self) -> None:
        """Allocate the guest's RAM and the devices' state buffers for real before accepting
        (off the event loop: other sessions' streams keep flowing), so page faults stay out
        of the stream - and out of the downtime, where the stop-copy context is written."""
        def touch() -> None:
            self.memory.prefault()
            for dev in self.devices:
                for state in (dev.buffer, dev.context):
                    state[::4096] = 0  # one write per page: the kernel zero-fills the rest

        await asyncio.to_thread(touch)

    def start(self) -> None:
        for dev in self.devices:
            dev.fsm.set_state(VfioState.RESUMING)
        for ld in self.loaders:
            ld.start()
            assert ld.task is not None
            self._tasks.append(ld.task)
        self._tasks.append(asyncio.get_running_loop().create_task(self._report_progress()))
        accepted = pb.SetupAccepted(session_id=self.session_id, target_boot_id=boot_id(),
                                    devices_needing_ack=sum(self.needs_ack))
        self.send(pb.TargetMessage(setup_accepted=accepted))
        self._device_approved()  # no device needs it: the ACK goes at once (QEMU does too)

    def send(self, msg: pb.TargetMessage) -> None:
        self.outbox.put_nowait(msg)

    def _device_approved(self) -> None:
        if self.ack_sent or not self.setup.switchover_ack:
            return
        if all(ld.initial_loaded or not need for ld, need in zip(self.loaders, self.needs_ack, strict=True)):
            self.ack_sent = True
            self.send(pb.TargetMessage(switchover_ack=pb.SwitchoverAck(target_ack_ns=now_ns())))

    async def _report_progress(self) -> None:
        last: list[tuple[int, int, bool]] = [(-1, -1, False)] * len(self.loaders)
        while True:
            for i, ld in enumerate(self.loaders):
                st = ld.status()
                key = (st.loaded_bytes, st.backlog_bytes, st.initial_loaded)
                if key == last[i] and st.setup_remaining_s == 0:
                    continue
                last[i] = key
                self.send(pb.TargetMessage(load_progress=pb.DeviceLoadProgress(
                    device=i, loaded_bytes=st.loaded_bytes, backlog_bytes=st.backlog_bytes,
                    initial_loaded=st.initial_loaded,
                    initial_loaded_ns=st.initial_loaded_ns, initial_load_s=st.initial_load_s)))
                if self.metrics is not None:
                    self.metrics.on_load_progress(self.setup.scenario, self.devices[i].name, st.loaded_bytes,
                                                  st.backlog_bytes, st.setup_remaining_s, st.initial_loaded)
            await asyncio.sleep(PROGRESS_PERIOD_S)

    def close(self, result: str) -> None:
        """End the session: stop tasks and the guest, drop the state (frees the memory)."""
        self.result = result
        for t in self._tasks:
            t.cancel()
        if self.vcpu is not None:
            self.vcpu.stop()
        self.outbox.put_nowait(None)

    # ------------------------------------------------------------ the stream

    async def handle(self, msg: pb.SourceMessage) -> None:
        body = msg.WhichOneof("body")
        if self.completed and body not in ("digests", "ping", "abort"):
            raise ProtocolError("FAILED_PRECONDITION", f"{body} after complete")
        if body == "ram":
            self._ram(msg.ram)
        elif body == "device_data":
            self._device_data(msg.device_data)
        elif body == "init_data_sent":
            m = msg.init_data_sent
            i = self._device(m.device, "init_data_sent")
            if m.seq != self.next_seq[i]:
                raise ProtocolError("DATA_LOSS", f"init_data_sent.seq = {m.seq}: device {i} is at "
                                    f"seq {self.next_seq[i]} (chunks missing)")
            if self.init_marker_seen[i]:
                raise ProtocolError("INVALID_ARGUMENT", f"init_data_sent for device {i} twice")
            self.init_marker_seen[i] = True
            self.loaders[i].put_marker()
        elif body == "ping":
            p = msg.ping
            recv = now_ns()
            one_way = recv - p.source_send_ns
            if self._min_one_way_ns is None or one_way < self._min_one_way_ns:
                self._min_one_way_ns = one_way
            self.send(pb.TargetMessage(pong=pb.Pong(seq=p.seq, source_send_ns=p.source_send_ns,
                                                    target_recv_ns=recv)))
        elif body == "stop_copy":
            self.stopped = True
        elif body == "complete":
            await self._complete(msg.complete)
        elif body == "digests":
            await self._verify(msg.digests)
        elif body == "setup":
            raise ProtocolError("FAILED_PRECONDITION", "a second setup on one stream")
        elif body == "abort":
            raise ProtocolError("ABORTED", f"source aborted: {msg.abort.reason[:200]}")
        else:
            raise ProtocolError("INVALID_ARGUMENT", "empty or unknown message body")

    def _ram(self, m: pb.RamPages) -> None:
        n = len(m.pages)
        ps = self.memory.page_size
        if n == 0 or n * ps > CHUNK_BYTES * 4:
            raise ProtocolError("INVALID_ARGUMENT", f"ram.pages: {n} pages; 1 to {CHUNK_BYTES * 4 // ps}")
        data = m.data  # each read of a bytes field copies it (1 MiB): read it once
        if len(data) != n * ps:
            raise ProtocolError("INVALID_ARGUMENT",
                                f"ram.data: {len(data)} bytes for {n} pages of {ps} (truncated?)")
        idx = np.array(m.pages, dtype=np.int64)
        if int(idx.max()) >= self.memory.pages:
            raise ProtocolError("OUT_OF_RANGE",
                                f"ram.pages: page {int(idx.max())} beyond the guest's {self.memory.pages}")
        self.memory.store_pages(idx, data)
        self.ram_pages_received += n
        self._count("ram", len(data))

    def _device_data(self, m: pb.DeviceData) -> None:
        i = self._device(m.device, "device_data")
        kind = _KIND.get(m.kind)
        if kind is None:
            raise ProtocolError("INVALID_ARGUMENT", f"device_data.kind = {m.kind}: INITIAL, MIDDLE or FINAL")
        if m.seq != self.next_seq[i]:
            what = "duplicated" if m.seq < self.next_seq[i] else "out of order (a gap)"
            raise ProtocolError("DATA_LOSS", f"device_data.seq = {m.seq} for device {i}: expected "
                                f"{self.next_seq[i]}, {what}")
        data = m.data  # each read of a bytes field copies it: read it once
        if not data or len(data) > CHUNK_BYTES:
            raise ProtocolError("INVALID_ARGUMENT",
                                f"device_data.data: {len(data)} bytes; 1 to {CHUNK_BYTES}")
        dev = self.devices[i]
        if m.offset + len(data) > dev.size:
            raise ProtocolError("OUT_OF_RANGE", f"device_data [{m.offset}, {m.offset + len(data)}) "
                                f"beyond device {dev.name}'s {dev.size} bytes")
        if kind == "initial" and self.init_marker_seen[i]:
            raise ProtocolError("FAILED_PRECONDITION", f"initial data for device {i} after INIT_DATA_SENT")
        if kind == "final" and not self.stopped:
            raise ProtocolError("FAILED_PRECONDITION", "final (stop-copy) data before stop_copy")
        self.next_seq[i] += 1
        self.loaders[i].put(kind, m.offset, data)
        self._count("device", len(data))

    def _count(self, kind: str, n: int) -> None:
        stage = "downtime" if self.stopped else "precopy"
        self.bytes_received[stage] += n
        if self.metrics is not None:
            self.metrics.on_received_bytes(self.setup.scenario, stage, kind, n)

    def _guest_downtime_s(self, source_last_tick_ns: int, first_tick_ns: int) -> float:
        """The target's own view of guest downtime. One kernel: one CLOCK_MONOTONIC. Across
        hosts the offset is taken as the smallest ping one-way time, which counts the wire's
        one-way delay as offset (the source's record has the symmetric NTP estimate)."""
        offset = 0 if self.setup.source_boot_id == boot_id() else (self._min_one_way_ns or 0)
        return (first_tick_ns - offset - source_last_tick_ns) / 1e9

    async def _complete(self, m: pb.Complete) -> None:
        if not self.stopped:
            raise ProtocolError("FAILED_PRECONDITION", "complete before stop_copy")
        if list(m.device_next_seq) != self.next_seq:
            raise ProtocolError("DATA_LOSS", f"complete.device_next_seq = {list(m.device_next_seq)}, "
                                f"received {self.next_seq}")
        if m.ram_pages_sent != self.ram_pages_received:
            raise ProtocolError("DATA_LOSS", f"complete.ram_pages_sent = {m.ram_pages_sent}, "
                                f"received {self.ram_pages_received}")
        self.completed = True
        received_ns = now_ns()
        self.send(pb.TargetMessage(received=pb.Received(target_recv_ns=received_ns)))
        # The final loads, then the devices leave RESUMING (the driver validates) and run.
        await asyncio.gather(*(ld.drain() for ld in self.loaders))
        loads_done = now_ns()
        for dev in self.devices:
            dev.fsm.set_state(VfioState.RUNNING)
        self.memory.begin_snapshot()
        s = self.setup
        wl = guest_workload(s.guest.ram_bytes, s.guest.page_size, s.dirty_rate_bytes_per_s,
                            s.working_set_bytes or s.guest.ram_bytes, s.uniform_dirtying,
                            s.guest_seed + 1)
        self.vcpu = VCpu(self.memory, wl, s.vcpu_tick_s)
        self.vcpu.start()
        await asyncio.to_thread(self.vcpu.wait_first_tick, 5.0)
        self.send(pb.TargetMessage(resumed=pb.Resumed(
            target_first_tick_ns=self.vcpu.first_tick_ns, target_loads_done_ns=loads_done,
            device_initial_load_s=[ld.status().initial_load_s for ld in self.loaders])))
        if self.metrics is not None:
            self.metrics.on_resumed(self.setup.scenario, self.setup.policy,
                                    self._guest_downtime_s(m.source_last_tick_ns, self.vcpu.first_tick_ns),
                                    (loads_done - received_ns) / 1e9)

    async def _verify(self, m: pb.Digests) -> None:
        if self.vcpu is None:
            raise ProtocolError("FAILED_PRECONDITION", "digests before the guest resumed")
        if len(m.devices) != len(self.devices):
            raise ProtocolError("INVALID_ARGUMENT",
                                f"digests.devices: {len(m.devices)}, expected {len(self.devices)}")
        ram = await asyncio.to_thread(self.memory.snapshot_digest)
        devs = [await asyncio.to_thread(d.digest) for d in self.devices]
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
        await asyncio.sleep(RESUMED_GUEST_GRACE_S)
        self.memory.end_snapshot()
        self.close(self.result)
