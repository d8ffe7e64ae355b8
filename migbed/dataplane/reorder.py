"""Device state from the multifd channels, put back in order per device, with a bound.

A device's packets are dealt to the channels in turn, so they arrive out of order; each
carries its number (idx), and the destination hands them to the device's loader in that
order (QEMU 10.0: vfio_multifd_load_state_buffer files each packet by idx,
vfio_load_bufs_thread writes them to the device in order, the config state last).

QEMU keeps every packet that arrives ahead of the one its load thread needs, without a bound.
migbed bounds it: a channel thread holding a packet more than `window` packets ahead of what
the device's loader takes next waits (it reads nothing more from its channel meanwhile: TCP
back-pressure reaches the source) until the loader catches up. Memory per device is then at
most `window` packets of at most packet.DEVICE_STATE_MAX_BYTES. The wait cannot deadlock
while the loaders run: the source queues every packet (RAM, SYNC, device state) in one global
order and each device's packets in idx order, so the packet a loader needs next was queued
before any packet some channel is blocked on, and every channel reads in queue order; the
loaders start at the switchover (the main stream's StopCopy), which the source writes before
any device-state packet.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from migbed.dataplane import packet as pk
from migbed.dataplane._io import AsyncSignal

DEFAULT_WINDOW = 16  # packets per device (16 MiB of 1 MiB buffers)


@dataclass(frozen=True)
class DeviceStatePacket:
    device: int
    kind: str  # "initial" | "middle" | "final" | "config"
    idx: int
    offset: int
    image_bytes: int
    last: bool  # the device's state is complete after this one
    data: bytes | bytearray  # the received buffer, not copied


class _Device:
    def __init__(self) -> None:
        self.next_idx = 0  # the next packet the loader takes
        self.last_idx: int | None = None  # the LAST packet's idx, once it arrived
        self.waiting: dict[int, DeviceStatePacket] = {}


class DeviceStateBuffers:
    """Every device's packets of one migration session. put() from channel threads (may
    block, see the module's note), next() from the loaders' event loop."""

    def __init__(self, devices: int, window: int = DEFAULT_WINDOW) -> None:
        if window < 1:
            raise ValueError(f"window {window} must be >= 1")
        self.window = window
        self._devices = [_Device() for _ in range(devices)]
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._signal = AsyncSignal()
        self._error: BaseException | None = None

    @property
    def devices(self) -> int:
        return len(self._devices)

    def buffered_bytes(self) -> int:
        with self._lock:
            return sum(len(p.data) for d in self._devices for p in d.waiting.values())

    def put(self, ds: pk.DeviceState, data: bytes | bytearray, stop: Callable[[], bool]) -> None:
        """File one packet; waits while it is more than `window` ahead of its loader, until
        the loader catches up or stop() (the session ended). Raises PacketError for a packet
        that cannot belong to the device's stream."""
        d = self._check(ds)
        pkt = DeviceStatePacket(ds.device, ds.kind_name, ds.idx, ds.offset, ds.image_bytes,
                                ds.last, data)
        with self._room:
            while ds.idx >= d.next_idx + self.window and self._error is None and not stop():
                self._room.wait(0.25)
            if self._error is not None or stop():
                return
            self._file(d, pkt)
        self._signal.notify()

    def _check(self, ds: pk.DeviceState) -> _Device:
        if not 0 <= ds.device < len(self._devices):
            raise pk.PacketError(f"device state: device {ds.device}, this session has "
                                 f"{len(self._devices)} device(s) with multifd device state")
        return self._devices[ds.device]

    @staticmethod
    def _file(d: _Device, pkt: DeviceStatePacket) -> None:
        where = f"device state: device {pkt.device} packet {pkt.idx}"
        if pkt.idx < d.next_idx or pkt.idx in d.waiting:
            raise pk.PacketError(f"{where} arrived twice")
        if d.last_idx is not None and pkt.idx > d.last_idx:
            raise pk.PacketError(f"{where} after its LAST packet ({d.last_idx})")
        if pkt.last:
            if d.last_idx is not None:
                raise pk.PacketError(f"{where}: a second LAST (the first was {d.last_idx})")
            if any(i > pkt.idx for i in d.waiting):
                raise pk.PacketError(f"{where} is LAST, but packet {max(d.waiting)} came after it")
            d.last_idx = pkt.idx
        d.waiting[pkt.idx] = pkt

    async def next(self, device: int, timeout_s: float | None) -> DeviceStatePacket:
        """The device's next packet in idx order; waits for it. Raises the session's error,
        or TimeoutError."""
        d = self._devices[device]

        def ready() -> bool:
            return self._error is not None or d.next_idx in d.waiting

        if not await self._signal.wait_for(ready, timeout_s):
            raise TimeoutError(f"device {device}: packet {d.next_idx} did not arrive within "
                               f"{timeout_s:g} s")
        with self._room:
            if self._error is not None:
                raise self._error
            pkt = d.waiting.pop(d.next_idx)
            d.next_idx += 1
            self._room.notify_all()  # a channel may be waiting for this window to move
        return pkt

    def fail(self, error: BaseException) -> None:
        """The session ended or failed: wake every waiter, loaders get `error`."""
        with self._room:
            if self._error is None:
                self._error = error
            for d in self._devices:
                d.waiting.clear()
            self._room.notify_all()
        self._signal.notify()
