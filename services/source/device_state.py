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

migbed: a task per device, started before the final RAM pass; each waits out its device's
stop-copy-save-time (the driver's STOP_COPY save), then reads its data stream (the rest of an
image begun in pre-copy, then the final image) and its non-iterable state, one packet per
chunk through the multifd sender, LAST on the last; Complete goes on the main stream once
every device's packets are queued behind the RAM.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

from migbed.dataplane import packet as pk
from migbed.services.source.devices import DeviceStreams
from migbed.services.source.transport import MultifdRam


class MultifdDeviceState:
    def __init__(self, ram: MultifdRam, devices: DeviceStreams, check: Callable[[], None]) -> None:
        self.ram = ram
        self.devices = devices
        self.check = check  # liveness of the main stream, cancel, the vCPU, the channels

    async def send(self) -> float:
        """Save and send every device at once; returns the longest save time (the one on
        the downtime's critical path)."""
        tasks = [asyncio.ensure_future(self._send_device(i))
                 for i in range(len(self.devices.devices))]
        try:
            pending: set[asyncio.Future[Any]] = set(tasks)
            while pending:
                done, pending = await asyncio.wait(pending, timeout=0.1)
                for t in done:
                    t.result()  # raises the device's failure
                self.check()
            return max((t.result() for t in tasks), default=0.0)
        finally:
            for t in tasks:
                t.cancel()

    async def _send_device(self, i: int) -> float:
        dev = self.devices.devices[i]
        save = dev.cfg.stop_copy_save_time
        if save > 0:
            await asyncio.sleep(save)  # this device's save, beside the others and the RAM
        held: tuple[int, int, bytes, int] | None = None  # the packet before the one read next
        idx = 0
        # The device's data stream from where pre-copy left it: the rest of an open image
        # first, then the final image; then its non-iterable state, last (QEMU: the config
        # packet, VFIO_DEVICE_STATE_CONFIG_STATE). LAST goes on the last packet, so each is
        # sent once the next is known.
        for kind, offset, data, image_bytes in self._chunks(i):
            if held is not None:
                await self._submit(i, idx, held, last=False)
                idx += 1
            held = (kind, offset, data, image_bytes)
        await self._submit(i, idx, held or (pk.DS_KIND_FINAL, 0, b"", 0), last=True)
        return save

    def _chunks(self, i: int) -> Iterator[tuple[int, int, bytes, int]]:
        """(kind, offset, data, image_bytes) of every packet of device i, in order."""
        dev = self.devices.devices[i]
        while chunks := dev.read(pk.DEVICE_STATE_MAX_BYTES):
            for ch in chunks:
                yield pk.DS_KIND_OF[ch.kind], ch.offset, ch.data, ch.image_bytes
        config_bytes = len(self.devices.config[i])
        for offset, data in self.devices.config_chunks(i):
            yield pk.DS_KIND_CONFIG, offset, data, config_bytes

    async def _submit(self, i: int, idx: int, packet: tuple[int, int, bytes, int],
                      last: bool) -> None:
        kind, offset, data, image_bytes = packet
        await self.ram.send_device_state(pk.DeviceState(i, kind, idx, offset, image_bytes, last),
                                         data)
        self.devices.counters.device(len(data), downtime=True)
