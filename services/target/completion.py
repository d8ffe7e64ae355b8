"""From StopCopy to the guest running here: the downtime's end on the target.

StopCopy: what follows is downtime, QEMU 10's multifd device state may load, and Python's
collector pauses (runtime/gcpause.py) until the guest runs. Complete: the counts are
checked, Received goes back, the devices load the rest of their state, then QEMU's
process_incoming_migration_bh: vm_start, MIG_RP_MSG_SHUT, and the guest's first tick
(Resumed).
"""

from __future__ import annotations

import asyncio

from migbed.core.clock import now_ns
from migbed.core.workload import guest_workload
from migbed.runtime.gcpause import DOWNTIME_GC_PAUSE
from migbed.runtime.vcpu import VCpu
from migbed.wire import migration_pb2 as pb

from .device_state import MultifdDeviceLoads
from .parts import Parts
from .ram import RamReceiver
from .validate import check_whole, refuse

FIRST_TICK_WAIT_S = 5.0  # how long Resumed waits for the resumed guest's first tick


class Completion:
    def __init__(self, parts: Parts, ram: RamReceiver, device_state: MultifdDeviceLoads) -> None:
        self.p = parts
        self.ram = ram
        self.device_state = device_state
        self.completed = False  # Complete accepted: only digests, pings, abort may follow
        self.vcpu: VCpu | None = None  # the guest, once it runs here
        self._gc_paused = False  # this session holds the downtime's GC pause
        # The resumed guest's workload, built now rather than at vm_start: a fresh process's
        # first random generator costs ~7 ms (numpy.random's set-up), which landed inside the
        # first migration's downtime (measured: Shut 8 ms after Complete, 1 ms after).
        s = parts.setup
        self._workload = guest_workload(s.guest.ram_bytes, s.guest.page_size, s.dirty_rate_bytes_per_s,
                                        s.working_set_bytes or s.guest.ram_bytes, s.uniform_dirtying,
                                        s.guest_seed + 1)

    async def stop_copy(self, m: pb.StopCopy) -> None:
        self.p.stopped = True
        self.p.switchover_started.set()
        self._pause_gc(True)  # until the guest runs here (or the session ends)

    async def complete(self, m: pb.Complete) -> None:
        self._check_complete(m)
        self.completed = True
        received_ns = now_ns()
        self.p.send(pb.TargetMessage(received=pb.Received(target_recv_ns=received_ns)))
        if self.p.multifd_device_state:
            await self.device_state.wait_all_loaded()
        else:
            for dev in self.p.devices:  # one reader: the devices load one after another
                await dev.finish(self.p.pacer)
        # process_incoming_migration_bh -> vm_start: the VM state handlers move each device
        # out of RESUMING (an on-stop driver loads here), then to RUNNING (the driver's
        # resume commands), device after device, before the vCPUs run and the Shut goes.
        for dev in self.p.devices:
            await dev.leave_resuming(self.p.pacer)
        loads_done = now_ns()
        for dev in self.p.devices:
            await dev.start_running(self.p.pacer)
        await self._resume(loads_done, now_ns())
        if self.p.metrics is not None:
            k = self.p.time_dilation  # the series are in virtual time, K a label
            self.p.metrics.on_resumed(self.p.scenario, self.p.setup.policy,
                                      (loads_done - received_ns) / 1e9 / k, k)

    def _check_complete(self, m: pb.Complete) -> None:
        """Everything the source says it sent has arrived, and no image is left open."""
        if not self.p.stopped:
            raise refuse("FAILED_PRECONDITION", "complete before stop_copy")
        seqs = [d.next_seq for d in self.p.devices]
        if list(m.device_next_seq) != seqs:
            raise refuse("DATA_LOSS", f"complete.device_next_seq = {list(m.device_next_seq)}, "
                         f"received {seqs}")
        if not self.p.multifd_device_state:  # else the devices' loaders go on with them
            for dev in self.p.devices:
                check_whole("complete", dev)
        pages = self.ram.pages_received()
        if m.ram_pages_sent != pages:
            raise refuse("DATA_LOSS", f"complete.ram_pages_sent = {m.ram_pages_sent}, "
                         f"received {pages}")

    async def _resume(self, loads_done: int, devices_running: int) -> None:
        # The digests compare the state at the stop: from here the resumed guest's writes
        # keep each page's old bytes aside (verify.py hashes those).
        self.p.memory.begin_snapshot()
        self.vcpu = VCpu(self.p.memory, self._workload, self.p.setup.vcpu_tick_s)
        # QEMU's process_incoming_migration_bh: vm_start, then MIG_RP_MSG_SHUT (from
        # migration_incoming_state_destroy); the guest's first progress comes after.
        self.vcpu.start()
        self.p.send(pb.TargetMessage(shut=pb.Shut(target_loads_done_ns=loads_done,
                                                  target_devices_running_ns=devices_running)))
        await asyncio.to_thread(self.vcpu.wait_first_tick, FIRST_TICK_WAIT_S)
        self.p.send(pb.TargetMessage(resumed=pb.Resumed(
            target_first_tick_ns=self.vcpu.first_tick_ns, target_loads_done_ns=loads_done,
            target_devices_running_ns=devices_running,
            device_initial_load_s=[d.initial_load_s for d in self.p.devices])))
        self._pause_gc(False)  # the downtime is over here

    def _pause_gc(self, paused: bool) -> None:
        if paused != self._gc_paused:
            self._gc_paused = paused
            (DOWNTIME_GC_PAUSE.hold if paused else DOWNTIME_GC_PAUSE.release)()

    def stop(self) -> None:
        """The session ends: collection resumes and the guest stops (if it ran here)."""
        self._pause_gc(False)
        if self.vcpu is not None:
            self.vcpu.stop()
