"""QEMU 10.0's multifd device state: each device's stop-copy state on its own stream.

With device-state-transfer = "multifd", at the switchover every device is saved on its own
(QEMU: a save thread per device, vfio_multifd_save_complete_precopy_thread) and its state
travels on its own MigrateDeviceState stream, where the target loads it on a task of its
own as it arrives, in parallel with the other devices and with the RAM on the main stream.
Pre-copy device data stays on the main stream, as in QEMU.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc

from migbed.wire import migration_pb2 as pb
from migbed.wire import migration_pb2_grpc as pbg
from migbed.wire.channel import CHUNK_BYTES
from migbed.wire.errors import describe_rpc_error

from .devices import DeviceStreams
from .failure import MigrationFailed


class ParallelDeviceState:
    def __init__(self, channel: grpc.aio.Channel, devices: DeviceStreams, session_id: str,
                 check: Callable[[], None]) -> None:
        self.stub = pbg.MigrationStub(channel)
        self.devices = devices
        self.session_id = session_id
        self.check = check  # liveness of the main stream, cancel, the vCPU
        self.calls: list[Any] = []

    async def send(self) -> None:
        """Save and send every device at once. The target's replies are collected by
        loaded()."""
        sends: set[asyncio.Future[Any]] = {asyncio.ensure_future(self._send_device(i))
                                            for i in range(len(self.devices.devices))}
        await self._watch(sends)

    async def _watch(self, tasks: set[asyncio.Future[Any]]) -> None:
        try:
            pending = set(tasks)
            while pending:
                done, pending = await asyncio.wait(pending, timeout=0.1)
                for t in done:
                    t.result()  # raises the stream's failure
                self.check()
        except grpc.aio.AioRpcError as e:
            raise MigrationFailed(f"MigrateDeviceState failed: {describe_rpc_error(e)}") from None
        finally:
            for t in tasks:
                t.cancel()

    async def _send_device(self, i: int) -> None:
        dev = self.devices.devices[i]
        call = self.stub.MigrateDeviceState()
        self.calls.append(call)
        seq = 0

        async def write(offset: int, data: bytes, image_bytes: int, last: bool = False) -> None:
            nonlocal seq
            await call.write(pb.DeviceStateChunk(
                session_id=self.session_id if seq == 0 else "", device=i, seq=seq,
                offset=offset, data=data, last=last, image_bytes=image_bytes))
            self.devices.counters.device(len(data), downtime=True)
            seq += 1

        # The device's data stream from where pre-copy left it: the rest of an open image
        # first, then the final image once this device's save is done (the save runs
        # beside the others: core/device.py's stop-copy read API); each chunk with its
        # image's length.
        while not dev.stop_copy_done:
            await self.devices.wait_save(i)
            for ch in dev.read(CHUNK_BYTES):
                await write(ch.offset, ch.data, ch.image_bytes)
        config_bytes = len(self.devices.config[i])
        for offset, data in self.devices.config_chunks(i):
            await write(offset, data, config_bytes)
        await write(0, b"", 0, last=True)
        await call.done_writing()
        self.devices.note_sent(i)

    async def loaded(self) -> None:
        """Every device's DeviceStateLoaded (the target loaded what it received)."""
        await self._watch({asyncio.ensure_future(c) for c in self.calls})

    def cancel(self) -> None:
        for call in self.calls:
            call.cancel()
