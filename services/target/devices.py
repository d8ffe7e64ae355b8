"""A device on the destination: its state bytes, its load model, and what can be seen of it.

Writes come from one reader at a time (the main stream's, or in QEMU 10's multifd device
state transfer the device's own stream) and return only once the load they trigger is
done: the reader is stalled exactly as long as the model says, in real time, and reads
nothing meanwhile. What it reports (pb.DeviceLoadProgress: the target side's one device
report) holds only what a real destination can observe: bytes written and loaded, time
spent inside loads, whether a load runs now.
"""

from __future__ import annotations

import asyncio
import time

from migbed.core.clock import now_ns
from migbed.core.device import TargetDevice, VfioState
from migbed.core.loadmodel import (
    IMAGE_COMPLETE,
    ON_STOP,
    PER_CHUNK,
    DeviceLoadModel,
    Load,
    LoadCosts,
)
from migbed.wire import migration_pb2 as pb

MIN_SLEEP_S = 0.002  # shorter loads are owed and paid together (a sleep per chunk overshoots)
MAX_CREDIT_S = 0.01  # a sleep that overshot pays ahead for the next loads, up to this
_TRIGGER = {pb.LOAD_TRIGGER_UNSPECIFIED: IMAGE_COMPLETE, pb.LOAD_TRIGGER_IMAGE_COMPLETE: IMAGE_COMPLETE,
            pb.LOAD_TRIGGER_PER_CHUNK: PER_CHUNK, pb.LOAD_TRIGGER_ON_STOP: ON_STOP}


class Pacer:
    """Waits out load time in real time for one reader. Short loads are owed until they add
    up to MIN_SLEEP_S, so the total is exact without a (late) sleep per chunk."""

    def __init__(self) -> None:
        self.owed_s = 0.0

    async def pay(self, seconds: float, settle: bool = False) -> float:
        """Owe `seconds` more; sleep if enough is owed (or all of it with `settle`).
        Returns the wall time slept."""
        self.owed_s += seconds
        if self.owed_s <= 0 or (self.owed_s < MIN_SLEEP_S and not settle):
            return 0.0
        t0 = time.monotonic()
        await asyncio.sleep(self.owed_s)
        slept = time.monotonic() - t0
        self.owed_s = max(self.owed_s - slept, -MAX_CREDIT_S)
        return slept


def load_costs(d: pb.DeviceShape) -> LoadCosts:
    return LoadCosts(d.load_setup_time_s, d.load_rate_bytes_per_s, d.stop_copy_load_time_s,
                     d.config_load_time_s, _TRIGGER[d.load_trigger])


class LoadingDevice:
    def __init__(self, index: int, shape: pb.DeviceShape) -> None:
        self.index = index
        self.name = shape.name
        self.state = TargetDevice(shape.name, shape.initial_bytes, shape.stop_copy_size,
                                  shape.device_state_bytes)
        self.model = DeviceLoadModel(load_costs(shape))
        # A device with pre-copy data approves the switchover (vfio_switchover_ack_needed:
        # PRE_COPY support; migbed also asks for initial bytes to send).
        self.needs_ack = not shape.no_pre_copy and shape.initial_bytes > 0
        self.resume_time_s = shape.resume_time_s
        self.next_seq = 0  # the next main-stream chunk's seq
        self.marker_seen = not self.needs_ack
        self.loaded_bytes = 0
        self.backlog_bytes = 0  # written, buffered, not loaded yet
        self.busy_s = 0.0  # wall time inside loads
        self._data_busy_s = 0.0  # ... of loads that carried bytes (for the measured rate)
        self._data_loaded = 0
        self.loading = False
        self.initial_loaded = False
        self.initial_loaded_ns = 0
        self.initial_load_s = 0.0  # first initial chunk -> initial data loaded
        self._first_initial_at: float | None = None
        self.last_activity = time.monotonic()  # a chunk written or a load running

    # ------------------------------------------------------------ writes (one reader)

    async def write(self, kind: str, offset: int, data: bytes, image_bytes: int,
                    pacer: Pacer) -> None:
        """Take one chunk of an image of `image_bytes` (checked first: model.check);
        return when the device has taken it (loads included)."""
        if kind == "initial" and self._first_initial_at is None:
            self._first_initial_at = time.monotonic()
        loads = self.model.write(kind, len(data), image_bytes)
        self.state.write(offset, data)
        self.backlog_bytes += len(data)
        self.last_activity = time.monotonic()
        await self._perform(loads, pacer)

    async def initial_data_sent(self, pacer: Pacer) -> None:
        """INIT_DATA_SENT: the initial image, whole, was loaded by the write that completed
        it; what is owed of it is paid now, then the device approves. An image begun after
        it (a middle image) stays open: the marker does not end it."""
        self.marker_seen = True
        await self._perform([], pacer, settle=True)
        self.initial_loaded = True
        self.initial_loaded_ns = now_ns()
        if self._first_initial_at is not None:
            self.initial_load_s = time.monotonic() - self._first_initial_at

    async def finish(self, pacer: Pacer) -> None:
        """The device's stream is complete: the last image and the config state load."""
        await self._perform(self.model.finish(), pacer, settle=True)

    async def _perform(self, loads: list[Load], pacer: Pacer, settle: bool = False) -> None:
        for i, load in enumerate(loads):
            self.loading = True
            try:
                slept = await pacer.pay(load.seconds, settle and i == len(loads) - 1)
            finally:
                self.loading = False
            self.busy_s += slept
            self.loaded_bytes += load.nbytes
            self.backlog_bytes -= load.nbytes
            if load.nbytes and load.kind != "config":
                self._data_busy_s += slept
                self._data_loaded += load.nbytes
            self.last_activity = time.monotonic()
        if settle and not loads:
            self.busy_s += await pacer.pay(0.0, settle=True)

    # ------------------------------------------------------------ state and report

    def resume(self) -> None:
        """STOP -> RESUMING: the device takes writes."""
        self.state.fsm.set_state(VfioState.RESUMING)

    async def leave_resuming(self, pacer: Pacer) -> None:
        """vm_start, RESUMING -> STOP: an on-stop driver loads what it was written now
        (hisi_acc_vf_load_state, pds_vfio_set_lm_state_cmd, qat_vf_load_device_data);
        mlx5 and virtio only free their file here."""
        await self._perform(self.model.leave_resuming(), pacer, settle=True)
        self.state.fsm.set_state(VfioState.STOP)

    async def start_running(self, pacer: Pacer) -> None:
        """vm_start, STOP -> RUNNING_P2P -> RUNNING: the driver's resume commands
        (mlx5vf_cmd_resume_vhca twice), `resume_time_s` in all, before the Shut."""
        if self.resume_time_s > 0:
            await pacer.pay(self.resume_time_s, settle=True)
        self.state.fsm.set_state(VfioState.RUNNING)

    def progress(self) -> pb.DeviceLoadProgress:
        rate = self._data_loaded / self._data_busy_s if self._data_busy_s > 0 else 0.0
        return pb.DeviceLoadProgress(
            device=self.index, loaded_bytes=self.loaded_bytes, backlog_bytes=self.backlog_bytes,
            initial_loaded=self.initial_loaded, initial_loaded_ns=self.initial_loaded_ns,
            initial_load_s=self.initial_load_s, busy_s=self.busy_s,
            measured_load_rate_bytes_per_s=rate, loading=self.loading)
