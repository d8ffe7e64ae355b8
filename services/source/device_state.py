"""QEMU 10.0's multifd device state on the source: every device's stop-copy state on the
shared multifd channels, mixed with RAM pages.

At the switchover QEMU spawns a save thread per device (qemu_savevm_state_complete_precopy_iterable
-> multifd_spawn_device_state_save_thread -> vfio_multifd_save_complete_precopy_thread)
before RAM's final copy, so the devices' saves run beside it and beside each other; each
thread reads its device's data stream in buffers of at most VFIO_MIG_DEFAULT_DATA_BUFFER_SIZE
(1 MiB) and queues each as one device-state packet (multifd_queue_device_state ->
multifd_send: one packet at a time, to the next free channel), numbered per device, the
config state last; the migration thread joins the save threads before the non-iterable
state and the end of the stream. Pre-copy device data stays on the main stream.

migbed: a task per device, started before the final RAM pass; each reads its data stream
(the rest of an image begun in pre-copy, then its final image once its save is done: the
device's stop-copy read API, core/device.py) and its non-iterable state, one packet per
chunk through the multifd sender, LAST on the last; Complete goes on the main stream once
every device's packets are queued behind the RAM.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from migbed.dataplane import packet as pk

from .devices import DeviceStreams
from .transport import MultifdRam


class MultifdDeviceState:
    def __init__(self, ram: MultifdRam, devices: DeviceStreams, check: Callable[[], None]) -> None:
        self.ram = ram
        self.devices = devices
        self.check = check  # liveness of the main stream, cancel, the vCPU, the channels

    async def send(self) -> None:
        """Save and send every device at once, beside the RAM."""
        tasks = [asyncio.ensure_future(self._send_device(i))
                 for i in range(len(self.devices.devices))]
        try:
            pending: set[asyncio.Future[Any]] = set(tasks)
            while pending:
                done, pending = await asyncio.wait(pending, timeout=0.1)
                for t in done:
                    t.result()  # raises the device's failure
                self.check()
        finally:
            for t in tasks:
                t.cancel()

    async def _send_device(self, i: int) -> None:
        # The device's data stream from where pre-copy left it: the rest of an open image
        # first, then the final image once this device's save is done (it runs beside the
        # others); then its non-iterable state, last (QEMU: the config packet,
        # VFIO_DEVICE_STATE_CONFIG_STATE).
        dev = self.devices.devices[i]
        out = _Packets(self.ram, self.devices, i)
        while not dev.stop_copy_done:
            await self.devices.wait_save(i)
            for ch in dev.read(pk.DEVICE_STATE_MAX_BYTES):
                await out.put(pk.DS_KIND_OF[ch.kind], ch.offset, ch.data, ch.image_bytes)
        config_bytes = len(self.devices.config[i])
        for offset, data in self.devices.config_chunks(i):
            await out.put(pk.DS_KIND_CONFIG, offset, data, config_bytes)
        await out.finish()
        self.devices.note_sent(i)


class _Packets:
    """One device's packets, numbered from 0; each goes out once the next is known, so
    LAST marks the device's last packet (an empty one if it had no state at all)."""

    def __init__(self, ram: MultifdRam, devices: DeviceStreams, device: int) -> None:
        self.ram = ram
        self.devices = devices
        self.device = device
        self.idx = 0
        self.held: tuple[int, int, bytes, int] | None = None

    async def put(self, kind: int, offset: int, data: bytes, image_bytes: int) -> None:
        if self.held is not None:
            await self._submit(self.held, last=False)
        self.held = (kind, offset, data, image_bytes)

    async def finish(self) -> None:
        await self._submit(self.held or (pk.DS_KIND_FINAL, 0, b"", 0), last=True)

    async def _submit(self, packet: tuple[int, int, bytes, int], last: bool) -> None:
        kind, offset, data, image_bytes = packet
        ds = pk.DeviceState(self.device, kind, self.idx, offset, image_bytes, last)
        await self.ram.send_device_state(ds, data)
        self.devices.counters.device(len(data), downtime=True)
        self.idx += 1
