"""QEMU 10.0's multifd device state on the target: every device's stop-copy state arrives on
the shared multifd channels, mixed with RAM pages, and is loaded by a task of its own, with
its own pacer, in parallel with the other devices, from the switchover on.

QEMU: vfio_multifd_load_state_buffer files each device-state packet by its index;
vfio_multifd_switchover_start (when the main stream reaches the switchover point,
MIG_CMD_SWITCHOVER_START) starts the device's load thread, vfio_load_bufs_thread, which
writes the buffers into the device in order, the config state last; qemu_loadvm_state waits
for the load threads before the guest starts. migbed: the channels put each device's packets
back in order in a bounded buffer (migbed/dataplane/reorder.py), one task per device takes
them once the main stream has read StopCopy, and completion waits for every device's LAST.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import cast

from migbed.core import limits as lim
from migbed.dataplane.receiver import MultifdSession
from migbed.dataplane.reorder import DeviceStatePacket
from migbed.dataplane.sender import MultifdError

from .devices import LoadingDevice, Pacer
from .parts import Parts
from .progress import PROGRESS_PERIOD_S
from .validate import check_image, check_range, check_whole, refuse

WHAT = "multifd device_state"  # how refusals name a device-state packet


class MultifdDeviceLoads:
    def __init__(self, parts: Parts, session_result: Callable[[], str],
                 on_error: Callable[[BaseException], None]) -> None:
        self.p = parts
        self.session_result = session_result  # "running" until the session ends
        self.on_error = on_error  # a loader's failure fails the session
        self.done: set[int] = set()  # devices loaded to their LAST packet

    def start(self, channels: MultifdSession) -> list[asyncio.Task[None]]:
        """One loader per device, waiting for the switchover (the session owns the tasks)."""
        loop = asyncio.get_running_loop()
        return [loop.create_task(self._run(dev, channels)) for dev in self.p.devices]

    async def _run(self, dev: LoadingDevice, channels: MultifdSession) -> None:
        try:
            await self._load(dev, channels)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a bad packet, a lost channel, or a bug: the session ends
            if self.session_result() == "running":
                self.on_error(e)

    async def _load(self, dev: LoadingDevice, channels: MultifdSession) -> None:
        await self.p.switchover_started.wait()
        self._check_running()
        pacer = Pacer()  # this device's loads hold this device only
        while True:
            try:
                pkt = await channels.next_device_state(dev.index, None)
            except MultifdError as e:
                raise refuse("UNAVAILABLE", f"{WHAT} for device {dev.name}: {e}") from None
            self._check_running()
            await self._write(dev, pkt, pacer)
            if pkt.last:
                check_whole(f"{WHAT}.last", dev)
                await dev.finish(pacer)
                self.done.add(dev.index)
                return

    async def _write(self, dev: LoadingDevice, pkt: DeviceStatePacket, pacer: Pacer) -> None:
        """One buffer of the device's state, checked against the device's shape and open
        image before it touches the device."""
        if not pkt.data:
            return
        what = f"{WHAT}[{dev.name}] packet {pkt.idx}"
        # An image begun on the main stream (the initial one too, when the stop came before
        # all of it was read) goes on here: the device's data stream continues in STOP_COPY.
        check_range(what, dev, pkt.kind, pkt.offset, len(pkt.data))
        check_image(what, dev, pkt.kind, pkt.image_bytes, len(pkt.data))
        self.p.count_received("device", len(pkt.data), "downtime")  # stop-copy state only
        # The channel's own receive buffer (a bytearray, not copied); the device only reads it.
        await dev.write(pkt.kind, pkt.offset, cast(bytes, pkt.data), pkt.image_bytes, pacer)

    def _check_running(self) -> None:
        result = self.session_result()
        if result != "running":
            raise refuse("ABORTED", f"{WHAT}: session {self.p.setup.session_id!r} has ended "
                         f"({result})")

    async def wait_all_loaded(self) -> None:
        """Completion waits for every device to load its stop-copy state (QEMU: the load
        threads, before the guest starts). A device that shows no life for the heartbeat
        timeout fails it."""
        silence = self.p.setup.heartbeat_timeout_s or lim.HEARTBEAT_TIMEOUT_S[1]
        since = time.monotonic()
        devices = self.p.devices
        while len(self.done) < len(devices):
            now = time.monotonic()
            quiet = [d for d in devices if d.index not in self.done
                     and not d.loading and now - max(d.last_activity, since) > silence]
            if quiet:
                raise refuse("DEADLINE_EXCEEDED", f"{WHAT} for device {quiet[0].index} "
                             f"({quiet[0].name}): nothing for {silence:g}s after complete "
                             "(setup.heartbeat_timeout_s)")
            await asyncio.sleep(self.p.real_seconds(PROGRESS_PERIOD_S))
