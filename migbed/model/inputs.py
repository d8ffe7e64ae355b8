"""What the model needs from a scenario, and the few things a scenario does not say.

``ModelParams`` are the model's own inputs, each a property of the machine or of the
implementation rather than of the guest: say them when quoting a prediction.
"""

from __future__ import annotations

from dataclasses import dataclass

from migbed.core import drivers as drv
from migbed.core.qemu_profile import qemu_profile
from migbed.core.scenario import Scenario
from migbed.core.units import FRAME_EFFICIENCY

MiB = 1024 * 1024
# What one gRPC stream between two local processes moved here in the final copy (order of
# magnitude, migration-facts section 9); give --wire-rate for a measured figure.
DEFAULT_WIRE_RATE = 1e9


@dataclass(frozen=True)
class ModelParams:
    # bytes/s on an unshaped wire (local processes, or a link faster than the sender)
    wire_rate: float = DEFAULT_WIRE_RATE
    # bytes/s the engine sends pre-copy data at on that wire, when slower than its final copy
    # (dirty-bitmap scans, 50 ms rounds and checks between the sends); None or 0: wire_rate.
    # The stop-copy keeps wire_rate. A shaped link sets both.
    precopy_rate: float | None = None
    # None: the link is shaped when the scenario says link.rate > 0. False: it is not
    # (local processes on loopback ignore [link]; the wire rate applies).
    shaped: bool | None = None
    # bytes the source may run ahead of a stalled destination: socket buffers, gRPC flow
    # control windows, the target's bounded queue
    stream_buffer: float = 8 * MiB
    # while the data fits and the policy waits: 0.1 = rest to the end of the 100 ms bandwidth
    # window (migbed's engine, one dirty sync per window); less = a sync every wait_round s
    # (QEMU busy-loops, ~0.001)
    wait_round: float = 0.1
    setup: float = 0.0  # s before pre-copy starts (QEMU's setup-time)
    resume: float = 0.002  # s from the last load to the guest's first tick on the target
    rtt: float = 0.0  # s, return-path round trip (ACK, SHUT)
    horizon: float = 600.0  # s of pre-copy after which the model gives up (no convergence)


@dataclass(frozen=True)
class DeviceInputs:
    name: str
    initial: float
    stop_copy: float
    dirty_rate: float
    setup: float
    load_rate: float
    stop_load: float
    per_chunk: bool
    save: float
    config_load: float
    state_size: float
    # The driver profile's semantics (migbed/core/drivers.py); the defaults are generic's.
    driver: drv.DriverProfile = drv.GENERIC
    on_stop: bool = False  # loads on RESUMING -> STOP at vm_start (load-trigger on-stop)
    resume: float = 0.0  # s, the arcs to RUNNING at vm_start, before the Shut
    suspend: float = 0.0  # s, the arcs out of RUNNING/PRE_COPY at vm_stop
    tracker_rate: float = 0.0  # bytes of guest RAM/s the device tracker reports (0: none)

    @property
    def needs_ack(self) -> bool:
        """A PRE_COPY device with initial data approves the switchover
        (vfio_switchover_ack_needed); the engine's target counts the same."""
        return self.driver.pre_copy and self.initial > 0

    def data_size(self, init_left: float, unread: float) -> float:
        """MIG_DATA_SIZE, as the driver answers it (SourceDevice.stop_copy_size)."""
        if self.driver.data_size == drv.WHOLE_STATE:
            return self.initial + self.stop_copy
        if self.driver.data_size == drv.FIXED:
            return float(self.driver.data_size_bytes)
        return init_left + unread + self.stop_copy


@dataclass(frozen=True)
class Inputs:
    ram: float
    working_set: float
    dirty_rate: float
    devices: tuple[DeviceInputs, ...]
    downtime_limit: float
    max_bandwidth: float
    avail_bandwidth: float
    max_iterations: int
    max_time: float
    cap_action: str
    ack_timeout: float
    ack_timeout_action: str
    return_path: bool
    device_state_multifd: bool
    interleave: bool  # QEMU >= 9.0: devices iterate beside RAM (see precopy.py)
    has_avail_switchover_bandwidth: bool  # QEMU >= 8.2 (the 8.1 profile ignores the key)
    threshold_inclusive: bool  # QEMU >= 10.1: pending <= threshold (core/qemu_profile.py)
    precopy_wire: float  # bytes/s the link carries (goodput)
    stop_wire: float
    params: ModelParams


def _shaped(scenario: Scenario, params: ModelParams) -> bool:
    shaped = scenario.link.rate > 0 if params.shaped is None else params.shaped
    return shaped and scenario.link.rate > 0


def link_goodput(scenario: Scenario, params: ModelParams) -> float:
    """Bytes/s of payload the wire carries: tbf's rate x 1448/1514 when shaped."""
    if _shaped(scenario, params):
        return scenario.link.rate / 8 * FRAME_EFFICIENCY
    return params.wire_rate


def precopy_goodput(scenario: Scenario, params: ModelParams) -> float:
    """Bytes/s of pre-copy payload: the shaped link's goodput, else the pre-copy rate (the
    wire rate when none is given)."""
    if params.precopy_rate and not _shaped(scenario, params):
        return params.precopy_rate
    return link_goodput(scenario, params)


def inputs_from(scenario: Scenario, params: ModelParams | None = None) -> Inputs:
    params = params or ModelParams()
    g, m = scenario.guest, scenario.migration
    ws = g.ram_size if g.dirty_pattern == "uniform" else g.working_set
    devices = tuple(
        DeviceInputs(d.name, float(d.initial_bytes), float(d.stop_copy_size), d.dirty_rate,
                     d.load_setup_time, d.load_rate, d.stop_copy_load_time,
                     d.load_trigger == "per-chunk", d.stop_copy_save_time, d.config_load_time,
                     float(d.device_state_size), drv.driver_profile(d.driver),
                     d.load_trigger == "on-stop", d.resume_time, d.suspend_time,
                     d.tracker_report_rate)
        for d in scenario.devices)
    wire = link_goodput(scenario, params)
    precopy = precopy_goodput(scenario, params)
    profile = qemu_profile(m.qemu_version)
    return Inputs(
        ram=float(g.ram_size), working_set=float(ws), dirty_rate=g.dirty_rate, devices=devices,
        downtime_limit=m.downtime_limit, max_bandwidth=m.max_bandwidth,
        avail_bandwidth=m.avail_switchover_bandwidth, max_iterations=m.max_iterations,
        max_time=m.max_time, cap_action=m.cap_action, ack_timeout=m.switchover_ack_timeout,
        ack_timeout_action=m.ack_timeout_action, return_path=m.return_path,
        device_state_multifd=m.device_state_transfer == "multifd",
        interleave=not profile.devices_wait_for_ram,
        has_avail_switchover_bandwidth=profile.avail_switchover_bandwidth,
        threshold_inclusive=profile.threshold_inclusive,
        precopy_wire=precopy, stop_wire=wire, params=params)
