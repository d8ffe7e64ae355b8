"""The running guest: memory, devices, workloads and the vCPU, as one object.

Both sides run a guest: the source boots it from the scenario and migrates it; the target
resumes it from what it received. One type holds the parts so that neither side assembles
them by hand. The devices are the side's own VFIO model (a SourceDevice on the source, a
TargetDevice on the target); the vCPU is created when the guest starts running.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, TypeVar

from migbed.core.device import SourceDevice, VfioState
from migbed.core.guest import GuestMemory
from migbed.core.scenario import Scenario
from migbed.core.workload import Workload, guest_workload
from migbed.runtime.vcpu import DeviceDirtier, VCpu

D = TypeVar("D")


class RunningGuest(Generic[D]):
    """A guest's memory, devices and vCPU (with its RAM and device workloads)."""

    def __init__(self, memory: GuestMemory, devices: Sequence[D], vcpu: VCpu) -> None:
        self.memory = memory
        self.devices: list[D] = list(devices)
        self.vcpu = vcpu

    @property
    def error(self) -> BaseException | None:
        """The vCPU thread's error, if it died (the owner fails the migration on it)."""
        return self.vcpu.error


def boot_source_guest(scenario: Scenario) -> RunningGuest[SourceDevice]:
    """The source's guest as the scenario describes it (not yet running)."""
    g = scenario.guest
    memory = GuestMemory(g.ram_size, g.page_size, g.seed)
    k = scenario.time_dilation if scenario.dilated else 1.0  # the engine's dilated scenario
    devices = [SourceDevice(d, seed=g.seed * 1000 + i, time_dilation=k)
               for i, d in enumerate(scenario.devices)]
    workload = guest_workload(g.ram_size, g.page_size, g.dirty_rate, g.working_set,
                              g.dirty_pattern == "uniform", g.seed)
    dirtiers: list[DeviceDirtier] = []
    for i, (dev, cfg) in enumerate(zip(devices, scenario.devices, strict=True)):
        if dev.blocks and cfg.dirty_rate > 0:
            wl = Workload(cfg.dirty_rate, cfg.block_size, dev.blocks, dev.blocks, g.seed + 7 + i)
            dirtiers.append((dev.dirty_blocks, wl))
    return RunningGuest(memory, devices, VCpu(memory, workload, g.vcpu_tick, dirtiers))


def resume_source_guest(guest: RunningGuest[SourceDevice]) -> None:
    """Run again after a failed or cancelled migration, as QEMU's vm_start on failure."""
    for dev in guest.devices:
        if dev.state != VfioState.RUNNING:
            dev.set_state(VfioState.RUNNING)
    guest.memory.stop_dirty_log()
    guest.vcpu.start()
