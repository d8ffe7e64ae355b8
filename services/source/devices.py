"""Device data on the main stream: pre-copy chunks, INIT_DATA_SENT, and stop-copy state.

Per device the stream carries numbered chunks (seq from 0, no gaps) of its VFIO data
stream: the initial image and middle images of dirty blocks in pre-copy, then in stop-copy
the rest of an image begun in pre-copy, the final image (the blocks dirty at the stop plus
the context captured at STOP_COPY), then the non-iterable state (IMAGE_KIND_CONFIG; QEMU
saves it with the device's vmstate after the iterable data). Every chunk carries the length
of its image (mlx5's image header), so the destination knows where each image ends.
Saving a device in stop-copy costs its stop-copy-save-time on the source, inside the
downtime; devices are saved one after another on the main channel, as QEMU's
qemu_savevm_state_complete_precopy walks its handlers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import numpy as np

from migbed.core.device import PRE_COPY_STATES, SourceDevice, VfioState
from migbed.wire import migration_pb2 as pb
from migbed.wire.channel import CHUNK_BYTES
from migbed.wire.encode import encode_device_data

from .counters import Counters
from .link import Link

_KIND_PB: dict[str, pb.ImageKind] = {"initial": pb.IMAGE_KIND_INITIAL, "middle": pb.IMAGE_KIND_MIDDLE,
            "final": pb.IMAGE_KIND_FINAL}


def config_state(seed: int, size: int) -> bytes:
    """A device's non-iterable state (config space and the like): fixed per device."""
    return np.random.default_rng([seed, 0xCF]).bytes(size)


class DeviceStreams:
    """Sends each device's data on the main stream and keeps its sequence numbers."""

    def __init__(self, link: Link, devices: Sequence[SourceDevice], counters: Counters,
                 on_marker: Callable[[str], None]) -> None:
        self.link = link
        self.devices = list(devices)
        self.counters = counters
        self.on_marker = on_marker
        self.next_seq = [0] * len(self.devices)
        self.marker_sent = [False] * len(self.devices)
        self.config = [config_state(d.seed, d.cfg.device_state_size) for d in self.devices]

    async def send_precopy(self, allowance: Callable[[], int], account: Callable[[int], None],
                           every_device: bool) -> int:
        """One pass of the devices' save_live_iterate: a chunk (up to CHUNK_BYTES and the
        budget) from each device in pre-copy, or, before QEMU 9.0, only from the first that
        still has data (later devices wait their turn). Returns the bytes sent."""
        sent = 0
        for i, dev in enumerate(self.devices):
            budget = allowance()
            if dev.state not in PRE_COPY_STATES or budget <= 0:
                continue
            n = await self._send_read(i, min(budget, CHUNK_BYTES), downtime=False)
            account(n)
            sent += n
            if n and not every_device:
                break
        return sent

    async def _send_read(self, i: int, max_bytes: int, downtime: bool) -> int:
        dev = self.devices[i]
        n = 0
        for ch in dev.read(max_bytes):
            await self._write(i, _KIND_PB[ch.kind], ch.offset, ch.data, ch.image_bytes)
            n += len(ch.data)
        if dev.initial_sent and not self.marker_sent[i] and not downtime:
            # VFIO's INIT_DATA_SENT: every initial byte of this device is in the stream. Only
            # in pre-copy (vfio_save_iterate); stop-copy data carries no marker.
            self.marker_sent[i] = True
            await self.link.write(pb.SourceMessage(init_data_sent=pb.InitDataSent(
                device=i, seq=self.next_seq[i])))
            self.on_marker(dev.cfg.name)
        self.counters.device(n, downtime)
        return n

    async def _write(self, i: int, kind: pb.ImageKind, offset: int, data: bytes,
                     image_bytes: int) -> None:
        await self.link.write(encode_device_data(i, kind, self.next_seq[i], offset, data,
                                                 image_bytes))
        self.next_seq[i] += 1

    async def save_device(self, i: int) -> float:
        """Stop-copy for one device: its save time, its final image, its config state.

        Returns the save time spent (s)."""
        dev = self.devices[i]
        save = dev.cfg.stop_copy_save_time
        if save > 0:
            await asyncio.sleep(save)  # the source driver saving (STOP_COPY), inside downtime
        while await self._send_read(i, CHUNK_BYTES, downtime=True):
            pass
        await self.send_config(i)
        return save

    async def send_config(self, i: int) -> None:
        image_bytes = len(self.config[i])  # the non-iterable state is one image
        for off, data in self.config_chunks(i):
            await self._write(i, pb.IMAGE_KIND_CONFIG, off, data, image_bytes)
            self.counters.device(len(data), downtime=True)

    def config_chunks(self, i: int) -> list[tuple[int, bytes]]:
        """The non-iterable state as (offset, bytes): its offsets follow the iterable state
        (state buffer, then context) in the device's one space of offsets."""
        cfg, state = self.devices[i].cfg, self.config[i]
        base = cfg.initial_bytes + cfg.stop_copy_size
        return [(base + off, state[off:off + CHUNK_BYTES])
                for off in range(0, len(state), CHUNK_BYTES)]

    def stop_devices(self) -> None:
        """vm_stop: every device enters STOP_COPY (its context is captured now)."""
        for dev in self.devices:
            dev.set_state(VfioState.STOP_COPY)
