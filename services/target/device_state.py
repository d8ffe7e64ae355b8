"""QEMU 10's multifd device state on the target: each device's stop-copy state on its own
MigrateDeviceState stream, loaded on that stream's task (its own pacer), in parallel with
the other devices, from the switchover on (hw/vfio/migration-multifd.c's load threads)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from migbed.core import limits as lim
from migbed.wire import migration_pb2 as pb
from migbed.wire.channel import CHUNK_BYTES

from .devices import LoadingDevice, Pacer
from .parts import Parts
from .progress import PROGRESS_PERIOD_S
from .validate import (
    check_image,
    check_image_bytes,
    check_range,
    check_whole,
    refuse,
    stop_copy_region,
)


class DeviceStateStreams:
    def __init__(self, parts: Parts, session_result: Callable[[], str]) -> None:
        self.p = parts
        self.session_result = session_result  # "running" until the session ends
        self.opened: set[int] = set()  # devices whose MigrateDeviceState stream opened
        self.done: set[int] = set()  # ... and loaded to their last chunk

    def open(self, index: int) -> LoadingDevice:
        """MigrateDeviceState's first chunk names this session and device `index`."""
        if not self.p.multifd_device_state:
            raise refuse("FAILED_PRECONDITION", "device_state_chunk: this session sends "
                         "device state on the main stream (setup.device_state_transfer = MAIN)")
        dev = self.p.device(index, "device_state_chunk")
        if dev.index in self.opened:
            raise refuse("ALREADY_EXISTS", f"device_state_chunk.device = {index}: this "
                         "device's state stream is already open")
        self.opened.add(dev.index)
        return dev

    async def load_chunk(self, dev: LoadingDevice, c: pb.DeviceStateChunk, seq: int,
                         pacer: Pacer) -> None:
        """One chunk of `dev`'s stop-copy state, the `seq`th on its stream; `pacer` is
        that stream's, so its loads hold that stream only."""
        self._check_running()
        data = self._check_chunk(dev, c, seq)
        await self._switchover_start()
        if data:
            kind = dev.model.image.kind if dev.model.image else stop_copy_region(dev, c.offset)
            check_range("device_state_chunk", dev, kind, c.offset, len(data))
            check_image("device_state_chunk", dev, kind, c.image_bytes, len(data))
            self.p.count_received("device", len(data), "downtime")  # stop-copy state only
            await dev.write(kind, c.offset, data, c.image_bytes, pacer)
        if c.last:
            check_whole("device_state_chunk.last", dev)
            await dev.finish(pacer)
            self.done.add(dev.index)

    def _check_chunk(self, dev: LoadingDevice, c: pb.DeviceStateChunk, seq: int) -> bytes:
        """What can be checked before the switchover; returns the chunk's data."""
        if c.device != dev.index:
            raise refuse("INVALID_ARGUMENT", f"device_state_chunk.device = {c.device}: this "
                         f"stream is device {dev.index}'s")
        if c.seq != seq:
            raise refuse("DATA_LOSS", f"device_state_chunk.seq = {c.seq}: expected {seq}")
        data = c.data  # each read of a bytes field copies it: read it once
        if len(data) > CHUNK_BYTES or (not data and not c.last):
            raise refuse("INVALID_ARGUMENT", f"device_state_chunk.data: {len(data)} bytes; "
                         f"1 to {CHUNK_BYTES} (0 only in the last chunk)")
        if data:  # the same region for every kind but config: checked before the wait
            check_range("device_state_chunk", dev, stop_copy_region(dev, c.offset), c.offset,
                        len(data))
            check_image_bytes("device_state_chunk", c.image_bytes)
        return data

    def _check_running(self) -> None:
        result = self.session_result()
        if result != "running":
            raise refuse("ABORTED", f"device_state_chunk: session "
                         f"{self.p.setup.session_id!r} has ended ({result})")

    async def _switchover_start(self) -> None:
        """QEMU 10 starts a device's load thread when the main stream reaches the
        switchover point (vfio_multifd_switchover_start): the pre-copy data ahead of it on
        the main stream is in the device before any of this stream is."""
        await self.p.switchover_started.wait()
        self._check_running()

    async def wait_all_loaded(self) -> None:
        """Completion waits for every device to load its stop-copy state. A device whose
        stream shows no life for the heartbeat timeout fails it."""
        silence = self.p.setup.heartbeat_timeout_s or lim.HEARTBEAT_TIMEOUT_S[1]
        since = time.monotonic()
        devices = self.p.devices
        while len(self.done) < len(devices):
            now = time.monotonic()
            quiet = [d for d in devices if d.index not in self.done
                     and not d.loading and now - max(d.last_activity, since) > silence]
            if quiet:
                raise refuse("DEADLINE_EXCEEDED", f"MigrateDeviceState for device "
                             f"{quiet[0].index} ({quiet[0].name}): nothing for {silence:g}s "
                             "after complete (setup.heartbeat_timeout_s)")
            await asyncio.sleep(self.p.real_seconds(PROGRESS_PERIOD_S))
