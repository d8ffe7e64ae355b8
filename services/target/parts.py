"""The parts one incoming migration is made of, shared by the jobs that handle its messages.

The session (session.py) builds them from the Setup and dispatches each message to its
job: the RAM side (ram.py), device state on the main stream (inline_devices.py), QEMU 10's
multifd device state (device_state.py), completion (completion.py), verification
(verify.py). The main stream's messages are handled one at a time, in order, so only the
device loaders of multifd device state run beside its handler: they wait on
`switchover_started` and write their own device.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from migbed.core.guest import GuestMemory
from migbed.wire import migration_pb2 as pb

from .devices import LoadingDevice, Pacer
from .outbox import Outbox
from .validate import dilation, refuse


@dataclass
class Parts:
    setup: pb.Setup  # passed validate_setup (and admission)
    metrics: Any  # a measure.metrics.TargetMetrics, or None
    outbox: Outbox  # the return path
    memory: GuestMemory
    devices: list[LoadingDevice]
    pacer: Pacer  # the main stream's reader's: a load on it holds the whole stream
    # Stop-copy device state comes on the multifd channels, each device loaded by a task of
    # its own (QEMU 10.0's multifd device state).
    multifd_device_state: bool
    stopped: bool = False  # StopCopy read: what arrives from now on is downtime
    # The main stream reached the switchover (StopCopy) or the session ended: QEMU 10
    # starts loading multifd device state there (vfio_multifd_switchover_start).
    switchover_started: asyncio.Event = field(default_factory=asyncio.Event)
    # Bytes received per stage, counted where they land (metrics follow each count).
    bytes_received: dict[str, int] = field(
        default_factory=lambda: {"precopy": 0, "downtime": 0})

    @classmethod
    def from_setup(cls, setup: pb.Setup, metrics: Any) -> Parts:
        """Allocates the guest's RAM (not yet resident) and the devices' buffers."""
        g = setup.guest
        return cls(setup, metrics, Outbox(),
                   GuestMemory(g.ram_bytes, g.page_size, setup.guest_seed, fill=False),
                   [LoadingDevice(i, d) for i, d in enumerate(setup.devices)], Pacer(),
                   setup.device_state_transfer == pb.DEVICE_STATE_TRANSFER_MULTIFD)

    @property
    def scenario(self) -> str:
        return self.setup.scenario

    @property
    def time_dilation(self) -> float:
        """The run's K: the target stretches its own emulated periods by it, as the source
        stretched the scenario's (migbed/core/dilation.py), and reports times divided by it."""
        return dilation(self.setup)

    def real_seconds(self, virtual_s: float) -> float:
        """An emulated period of the target (return-path reports, the resumed guest's run
        before the session ends) as this run waits it."""
        return virtual_s * self.time_dilation

    def send(self, msg: pb.TargetMessage) -> None:
        self.outbox.put(msg)

    def device(self, index: int, what: str) -> LoadingDevice:
        """The device a message names, refused if this session has no such device."""
        if index >= len(self.devices):
            raise refuse("INVALID_ARGUMENT", f"{what}.device = {index}: this session has "
                         f"{len(self.devices)} device(s)")
        return self.devices[index]

    def count_received(self, kind: str, n: int, stage: str = "") -> None:
        """`n` bytes of `kind` (ram, device) arrived, in `stage` (by default the stage the
        main stream is in)."""
        stage = stage or ("downtime" if self.stopped else "precopy")
        self.bytes_received[stage] += n
        if self.metrics is not None:
            self.metrics.on_received_bytes(self.scenario, stage, kind, n)
