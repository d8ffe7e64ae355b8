"""Device data on the main stream: pre-copy chunks, INIT_DATA_SENT, and stop-copy state.

Per device the stream carries numbered chunks (seq from 0, no gaps) of its VFIO data
stream: the initial image and middle images of dirty blocks in pre-copy, then in stop-copy
the rest of an image begun in pre-copy, the final image (the blocks dirty at the stop plus
the context captured at STOP_COPY), then the non-iterable state (IMAGE_KIND_CONFIG; QEMU
saves it with the device's vmstate after the iterable data). Every chunk carries the length
of its image (mlx5's image header), so the destination knows where each image ends.

QEMU's side of each device (its cached pending sizes, when it asks PRECOPY_INFO, when
INIT_DATA_SENT goes out) is core/vfio_migration.py. In pre-copy every device in PRE_COPY
gets one read per pass (vfio_is_active_iterate; devices never hold each other back). At
vm_stop every device enters STOP_COPY in turn (vfio_vmstate_change): a synchronous driver
saves inside that arc, an asynchronous one (mlx5) starts its save there and the save runs
beside RAM's final copy and the other devices' saves. On the main channel the devices'
stop-copy data follow RAM one device after another (qemu_savevm_state_complete_precopy
walks its handlers), each waiting for its own save only if it is not done yet.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from migbed.core.device import Chunk, SourceDevice
from migbed.core.vfio_migration import VfioMigration
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


@dataclass
class SaveTimes:
    """One device's stop-copy on the source (time.monotonic seconds; 0 = did not happen)."""

    save_start: float = 0.0  # its STOP_COPY save began
    save_ready: float = 0.0  # its final image became readable
    sent: float = 0.0  # its last stop-copy byte was written
    waits: list[tuple[float, float]] = field(default_factory=list)  # blocked on its save

    @property
    def waited_s(self) -> float:
        return sum(end - start for start, end in self.waits)


def blocked_s(times: Sequence[SaveTimes]) -> float:
    """Wall time during which some stop-copy sender was blocked on a save (the union of
    every device's waits: parallel waits, as with multifd device state, count once)."""
    spans = sorted(w for t in times for w in t.waits)
    total, end = 0.0, float("-inf")
    for a, b in spans:
        if b > end:
            total += b - max(a, end)
            end = b
    return total


class DeviceStreams:
    """Sends each device's data on the main stream and keeps its sequence numbers."""

    def __init__(self, link: Link, devices: Sequence[SourceDevice], counters: Counters,
                 on_marker: Callable[[str], None]) -> None:
        self.link = link
        self.devices = list(devices)
        self.vfio = [VfioMigration(d) for d in self.devices]
        self.counters = counters
        self.on_marker = on_marker
        self.next_seq = [0] * len(self.devices)
        self.config = [config_state(d.seed, d.cfg.device_state_size) for d in self.devices]
        self.save_times = [SaveTimes() for _ in self.devices]

    def save_setup(self) -> None:
        """vfio_save_setup for every device (PRE_COPY where supported)."""
        for v in self.vfio:
            v.save_setup()

    async def send_precopy(self, allowance: Callable[[], int], account: Callable[[int], None]) -> int:
        """One pass of the devices' save_live_iterate: a read of up to CHUNK_BYTES (and the
        budget) from each device in PRE_COPY. Returns the bytes sent."""
        sent = 0
        for i, v in enumerate(self.vfio):
            budget = allowance()
            if not v.in_precopy or budget <= 0:
                continue
            n = await self._send_chunks(i, v.save_block(min(budget, CHUNK_BYTES)))
            self.counters.device(n, downtime=False)
            if v.init_data_sent_due():
                # VFIO's INIT_DATA_SENT: the cached initial size reached 0 (vfio_save_iterate).
                await self.link.write(pb.SourceMessage(init_data_sent=pb.InitDataSent(
                    device=i, seq=self.next_seq[i])))
                self.on_marker(self.devices[i].cfg.name)
            account(n)
            sent += n
        return sent

    async def _send_chunks(self, i: int, chunks: list[Chunk]) -> int:
        n = 0
        for ch in chunks:
            await self._write(i, _KIND_PB[ch.kind], ch.offset, ch.data, ch.image_bytes)
            n += len(ch.data)
        return n

    async def _write(self, i: int, kind: pb.ImageKind, offset: int, data: bytes,
                     image_bytes: int) -> None:
        await self.link.write(encode_device_data(i, kind, self.next_seq[i], offset, data,
                                                 image_bytes))
        self.next_seq[i] += 1

    def tracker_report_s(self, ram_bytes: int) -> float:
        """What a RAM dirty sync costs the device trackers: QEMU's log sync asks each
        device for VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT over guest RAM, one after another
        (vfio_devices_query_dirty_bitmap -> vfio_device_dma_logging_report), but only when
        every device tracks its own DMA (vfio_devices_all_device_dirty_tracking); otherwise
        the IOMMU reports and no device is asked."""
        devs = [d.cfg for d in self.devices]
        if not devs or any(d.driver.dirty_tracking != "device" for d in self.devices):
            return 0.0
        return sum(ram_bytes / c.tracker_report_rate for c in devs if c.tracker_report_rate > 0)

    async def tracker_report(self, ram_bytes: int) -> float:
        """The device trackers' report at a dirty sync, in real time; returns its seconds."""
        seconds = self.tracker_report_s(ram_bytes)
        if seconds > 0:
            await asyncio.sleep(seconds)
        return seconds

    async def stop_devices(self) -> None:
        """vm_stop (vfio_vmstate_change_prepare, then vfio_vmstate_change, device by
        device): each device suspends (`suspend-time`: mlx5's SUSPEND_VHCA, pds' SUSPEND,
        qat's bank drain), then a device in PRE_COPY goes to STOP_COPY, where a synchronous
        driver saves (the stop waits for it) and an asynchronous one starts its save; any
        other device goes to STOP."""
        for dev, t in zip(self.devices, self.save_times, strict=True):
            if dev.cfg.suspend_time > 0:
                started = time.monotonic()
                await asyncio.sleep(dev.cfg.suspend_time)
                t.waits.append((started, time.monotonic()))
            started = time.monotonic()
            block = dev.begin_stop_copy(started)
            if block > 0:
                await asyncio.sleep(block)
                t.waits.append((started, time.monotonic()))

    async def wait_save(self, i: int) -> None:
        """Until device i's final image is readable (its save done); the wait is counted."""
        t = self.save_times[i]
        while (wait := self.devices[i].save_wait(time.monotonic())) > 0:
            started = time.monotonic()
            await asyncio.sleep(wait)
            t.waits.append((started, time.monotonic()))

    async def save_device(self, i: int) -> None:
        """Stop-copy for one device on the main stream: the rest of an image begun in
        pre-copy, its final image (once its save is done), its config state."""
        dev = self.devices[i]
        while not dev.stop_copy_done:
            await self.wait_save(i)
            n = await self._send_chunks(i, dev.read(CHUNK_BYTES))
            self.counters.device(n, downtime=True)
        await self.send_config(i)
        self.note_sent(i)

    def note_sent(self, i: int) -> None:
        """Device i's stop-copy data are all written: its save times go to the record."""
        start, ready = self.devices[i].save_times
        t = self.save_times[i]
        t.save_start, t.save_ready, t.sent = start or 0.0, ready or 0.0, time.monotonic()

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
