"""Switchover policies: when may the source stop the guest and send what is left?

Each policy is a pure decision on an Observation of the migration (what the source knows,
including what the target reported on the return path). The engine observes, estimates,
asks the policy, then sends; the policy never touches the network.

- legacy              QEMU before 8.1: pending data fits downtime-limit at the bandwidth.
- initial-bytes-sent  the seed thread's init_precopy_size idea: legacy, and not before every
                      device's initial bytes are *sent* (loaded or not).
- switchover-ack      QEMU 8.1+: legacy, and not before the target's SWITCHOVER_ACK.
- time-aware          ours: waits for the ACK, then predicts downtime from what QEMU's source
                      can know, its drivers' documented semantics included (see TimeAware),
                      and switches when the prediction fits downtime-limit.

POLICY_REGISTRY is the one list of policies (name, whether it negotiates switchover-ack,
a description, the class) that the engine (services/source), the model (migbed/model), the
CLI, the reports and the metrics read. A policy of your own: subclass Policy, then
`register_policy(MyPolicy, "what it does")`; the engine and the model both run it, and every
interface accepts its name. To have a `migbed` process (a service, `migbed run`, `migbed
predict`) register it, name its module in MIGBED_POLICY_MODULES (migbed/cli/plugins.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, get_args

from migbed.core.drivers import CUT_NEVER, DRIVERS, LOAD_ON_STOP, REMAINING, WHOLE_STATE


@dataclass(frozen=True)
class TargetLoad:
    """What the destination reported of one device's loading (DeviceLoadProgress).

    Only what a destination can observe: no configured setup time or load rate (a real
    destination does not know them in advance)."""

    loaded_bytes: int = 0  # bytes written into the device so far
    backlog_bytes: int = 0  # received, not yet loaded
    busy_s: float = 0.0  # wall time spent inside loads so far
    measured_load_rate: float = 0.0  # bytes loaded / busy time of data loads; 0 = unknown
    loading: bool = False  # a load is in progress now (the main stream waits on it)
    initial_loaded: bool = False  # INIT_DATA_SENT reached and everything before it loaded
    initial_load_s: float = 0.0  # first initial chunk -> initial data loaded


@dataclass(frozen=True)
class DeviceView:
    """One device as QEMU's source sees it at an exact pending check."""

    name: str
    initial_bytes_left: int  # precopy info initial_bytes (not yet sent)
    dirty_bytes: int
    stop_copy_bytes: int  # MIG_DATA_SIZE: the source driver's own estimate
    target: TargetLoad = field(default_factory=TargetLoad)  # zeros until the first report
    # The variant driver bound to the device (migbed/core/drivers.py name: "mlx5" for
    # mlx5_vfio_pci), a host fact QEMU or libvirt can read (the device's sysfs `driver`
    # link); "" when unknown. A policy may read its profile's documented *semantics*
    # (what MIG_DATA_SIZE means, when it loads), never its timings.
    driver: str = ""
    # initial_bytes of the first VFIO_MIG_GET_PRECOPY_INFO, in vfio_save_setup: the size of
    # the initial image (0 for a device without PRE_COPY). QEMU reads it there and could keep it.
    initial_image_bytes: int = 0


@dataclass(frozen=True)
class Observation:
    elapsed_s: float  # since the migration started
    pending_bytes: int  # RAM + device, exact when pending_exact
    pending_exact: bool
    threshold_bytes: float
    bandwidth: float  # bytes/s, what the threshold used (measured or avail-switchover)
    downtime_limit_s: float
    dirty_sync_count: int
    ack_received: bool
    ack_wait_s: float = 0.0  # how long pending has fitted while the ACK was missing
    # The return path's round trip: the best seen (a ping queued behind the destination's
    # inline loads measures the queue, not the path the Shut takes).
    rtt_s: float = 0.0
    devices: tuple[DeviceView, ...] = field(default_factory=tuple)
    # Stop-copy device state on its own channel per device, loaded in parallel from the
    # switchover (QEMU 10.0 multifd device state) instead of inline on the main stream.
    parallel_device_state: bool = False
    threshold_inclusive: bool = False  # the switchover test is pending <= threshold


# What a decision rested on, typed, so that no view has to parse the reason (that text is
# for humans and may change). The rule that produced the decision, whatever its action:
# - "data": QEMU's own rule, the pending data against the threshold, with the conditions a
#   policy puts on it (every device's initial bytes sent, the SWITCHOVER_ACK, the ACK
#   timeout's cancel or legacy fallback): every decision of legacy, initial-bytes-sent and
#   switchover-ack, and time-aware's until the ACK.
# - "data (no prediction)": time-aware could not predict (a device whose load it cannot
#   time) and applied switchover-ack's rule.
# - "prediction": time-aware's predicted downtime against the limit (go: it fits; wait: it
#   does not, or a device's first load report is still due).
# - "floor": time-aware above a floor no pre-copy reduces (go: the rest fits and no longer
#   falls; wait: it still falls or exceeds the limit).
# - "cap": no policy's: max-iterations or max-time forced the switchover (the engine's and
#   the model's cap handling; forced_by_cap names the cap). A Decision cannot carry it.
PolicyBasis = Literal["data", "data (no prediction)", "prediction", "floor"]
Basis = Literal[PolicyBasis, "cap"]  # what a switchover rested on: a policy's, or a cap
POLICY_BASES: tuple[PolicyBasis, ...] = get_args(PolicyBasis)
BASES: tuple[Basis, ...] = get_args(Basis)


@dataclass(frozen=True)
class Decision:
    action: str  # "go" | "wait" | "cancel"
    reason: str
    predicted_downtime_s: float
    basis: PolicyBasis

    def __post_init__(self) -> None:
        # A plugin policy is not type-checked: refuse a basis outside the closed set here,
        # before it reaches a record that every view reads.
        if self.basis not in POLICY_BASES:
            raise ValueError(f"decision basis {self.basis!r}: one of {', '.join(map(repr, POLICY_BASES))}")

    @property
    def go(self) -> bool:
        return self.action == "go"


def data_fits(obs: Observation) -> bool:
    """QEMU's test on the exact pending: (pending == 0 or pending < threshold) up to 10.0,
    (pending <= threshold) from 10.1 (the profile says which: threshold_inclusive)."""
    if obs.threshold_inclusive:
        return obs.pending_bytes <= obs.threshold_bytes
    return obs.pending_bytes == 0 or obs.pending_bytes < obs.threshold_bytes


def data_time(obs: Observation) -> float:
    if obs.pending_bytes == 0:
        return 0.0
    return obs.pending_bytes / obs.bandwidth if obs.bandwidth > 0 else float("inf")


ON_TIMEOUT = ("cancel", "legacy")


class Policy:
    """A switchover rule. Subclasses set `name` and `needs_ack` and implement decide().

    Every policy is built with the scenario's switchover-ack timeout and its action
    (migration.switchover-ack-timeout, ack-timeout-action); those that wait for no ACK
    ignore them."""

    name = "abstract"
    needs_ack = False  # the switchover-ack capability is negotiated for this policy

    def __init__(self, ack_timeout_s: float = 0.0, on_timeout: str = "cancel") -> None:
        if on_timeout not in ON_TIMEOUT:
            raise ValueError(f"on_timeout must be one of {', '.join(ON_TIMEOUT)}, not {on_timeout!r}")
        self.ack_timeout_s = ack_timeout_s
        self.on_timeout = on_timeout

    def decide(self, obs: Observation) -> Decision:
        raise NotImplementedError

    def _legacy(self, obs: Observation) -> Decision:
        predicted = data_time(obs)
        if data_fits(obs):
            return Decision("go", f"pending {obs.pending_bytes} B < threshold "
                            f"{obs.threshold_bytes:.0f} B", predicted, "data")
        return Decision("wait", "pending above threshold", predicted, "data")


class Legacy(Policy):
    name = "legacy"

    def decide(self, obs: Observation) -> Decision:
        return self._legacy(obs)


class InitialBytesSent(Policy):
    name = "initial-bytes-sent"

    def decide(self, obs: Observation) -> Decision:
        d = self._legacy(obs)
        unsent = [x.name for x in obs.devices if x.initial_bytes_left > 0]
        if d.go and unsent:
            return Decision("wait", f"initial bytes not sent: {', '.join(unsent)}",
                            d.predicted_downtime_s, "data")
        return d


class SwitchoverAck(Policy):
    """QEMU 8.1. With a timeout (0 = none, as in 8.1) it cancels or falls back to legacy."""

    name = "switchover-ack"
    needs_ack = True

    def decide(self, obs: Observation) -> Decision:
        d = self._legacy(obs)
        if not d.go or obs.ack_received:
            return d
        if self.ack_timeout_s and obs.ack_wait_s >= self.ack_timeout_s:
            if self.on_timeout == "legacy":
                return Decision("go", f"no ACK after {obs.ack_wait_s:.2f}s: legacy fallback",
                                d.predicted_downtime_s, "data")
            return Decision("cancel", f"no SWITCHOVER_ACK within {self.ack_timeout_s:g}s",
                            d.predicted_downtime_s, "data")
        return Decision("wait", "waiting for SWITCHOVER_ACK", d.predicted_downtime_s, "data")


@dataclass(frozen=True)
class DeviceForecast:
    """What one device adds to the downtime, as time-aware reckons it (bytes, seconds)."""

    name: str
    stop_copy_bytes: float  # what its stop-copy will carry, read by its driver's semantics
    floor_bytes: float  # of which no amount of pre-copy removes (its final image's own part)
    load_s: float  # the destination's backlog and stop-copy bytes at its measured load rate
    floor_load_s: float  # the floor's share of load_s
    unknown: str = ""  # why its load time cannot be predicted ("" when it can)
    waiting: bool = False  # no load reported yet, though the device loads before vm_start


@dataclass(frozen=True)
class Forecast:
    """time-aware's prediction: the downtime, the part of it pre-copy cannot reduce, and
    why it cannot be predicted at all (then downtime_s leaves the unknown loads out)."""

    downtime_s: float
    floor_s: float
    devices: tuple[DeviceForecast, ...]

    @property
    def unknown(self) -> tuple[str, ...]:
        return tuple(d.unknown for d in self.devices if d.unknown)

    @property
    def waiting(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.devices if d.waiting)


def stop_copy_estimate(dev: DeviceView) -> tuple[float, float]:
    """(bytes the device's stop-copy will carry, the part pre-copy cannot reduce), from
    MIG_DATA_SIZE read by the bound driver's documented semantics (migbed/core/drivers.py).

    - Unknown driver: as QEMU reads it (`vfio_state_pending_exact` adds precopy info's
      initial and dirty bytes to it): the unsent pre-copy bytes and MIG_DATA_SIZE, "the
      estimated data length that will be required to complete stop copy" (linux/vfio.h,
      VFIO_DEVICE_FEATURE_MIG_DATA_SIZE), which no pre-copy reduces.
    - What is left (generic): MIG_DATA_SIZE holds the unsent pre-copy bytes too; the rest of
      it (the state only stop-copy carries) is the floor.
    - A constant (pds: its 64 KiB restore buffer, an upper bound; no PRE_COPY): all of it.
    - Whole state, incremental images (mlx5: `mlx5vf_pci_get_data_size` queries without
      MLX5VF_QUERY_INC): the final image is an increment, so the stop-copy carries the
      unsent initial bytes, what PRECOPY_INFO's dirty_bytes reports (the unread images and
      the firmware's increment, `mlx5vf_precopy_ioctl`), and the state beyond the initial
      image (MIG_DATA_SIZE minus the initial image), which only the final image carries.
    - Whole state otherwise (virtio: every image is the full context,
      `virtiovf_read_device_context_chunk`; hisi_acc, qat: pre-copy carries only
      compatibility data; xe: no PRE_COPY): the final image is the whole state again, on
      top of what pre-copy has not read. dirty_bytes may already count that final image
      (virtio adds its context size when it asks the device): an upper bound.
    """
    profile = DRIVERS.get(dev.driver)
    size = float(dev.stop_copy_bytes)
    unsent = float(dev.initial_bytes_left + dev.dirty_bytes)
    if profile is None:
        return unsent + size, size
    if profile.data_size == REMAINING:
        return size, max(0.0, size - unsent)
    if profile.data_size != WHOLE_STATE:
        return size, size
    if profile.pre_copy and profile.incremental and profile.image_cut != CUT_NEVER:
        beyond = max(0.0, size - dev.initial_image_bytes)
        return unsent + beyond, beyond
    return unsent + size, size


# A marginal load rate is trusted once the loads after the first carried this much, in
# this much busy time (the destination's sleeps overshoot by ~1 ms each).
MARGINAL_MIN_BYTES = 8 * 1024 * 1024
MARGINAL_MIN_BUSY_S = 0.02


class LoadRates:
    """Each device's load rate, from the destination's reports over time.

    The rate the destination reports is bytes / busy time of all its loads, the first
    included, and the first holds the device's setup (mlx5: resource allocation, seconds):
    it understates the rate of later loads. Once the initial data is loaded, the reports'
    growth from then on gives the rate of the later loads alone (the marginal rate); it is
    used when those loads carried enough to measure, the reported rate otherwise."""

    def __init__(self) -> None:
        self._base: dict[str, tuple[int, float]] = {}  # (loaded, busy) when initial loaded

    def rate(self, dev: DeviceView) -> float:
        t = dev.target
        if t.initial_loaded and dev.name not in self._base:
            self._base[dev.name] = (t.loaded_bytes, t.busy_s)
        base = self._base.get(dev.name)
        if base is not None:
            nbytes, busy = t.loaded_bytes - base[0], t.busy_s - base[1]
            if nbytes >= MARGINAL_MIN_BYTES and busy >= MARGINAL_MIN_BUSY_S:
                return nbytes / busy
        return t.measured_load_rate


def device_forecast(dev: DeviceView, rate: float) -> DeviceForecast:
    """Seconds the destination needs for this device's backlog and stop-copy bytes at
    `rate` (what it measured). No basis (unknown) when the device loads only on leaving
    RESUMING (its driver says so: hisi_acc, pds, qat, xe), sends nothing in pre-copy, or
    the destination reports its initial data in with no load time measured. Not yet
    (waiting) while its initial data is not reported loaded: the next report will say."""
    nbytes, floor = stop_copy_estimate(dev)
    profile = DRIVERS.get(dev.driver)
    t = dev.target
    work = t.backlog_bytes + nbytes
    if profile is not None and profile.load == LOAD_ON_STOP:
        why = (f"{dev.name} ({profile.name}) loads on leaving RESUMING, at the destination's "
               "vm_start: no load of it is measured before")
        return DeviceForecast(dev.name, nbytes, floor, 0.0, 0.0, why)
    if work and rate <= 0:
        why = ""
        if dev.initial_image_bytes == 0:
            why = f"{dev.name} sends nothing in pre-copy: no load of it is measured before"
        elif t.initial_loaded:
            why = (f"{dev.name}: the destination has its initial data in and measured no load "
                   "time (it loads on leaving RESUMING, or too fast to time)")
        if why:
            return DeviceForecast(dev.name, nbytes, floor, 0.0, 0.0, why)
        return DeviceForecast(dev.name, nbytes, floor, 0.0, 0.0, waiting=True)
    load = work / rate if work else 0.0
    return DeviceForecast(dev.name, nbytes, floor, load, floor / rate if floor else 0.0)


def forecast(obs: Observation, rates: LoadRates | None = None) -> Forecast:
    """time-aware's downtime prediction from the source's counters and the target's reports.

    RAM's share of the exact pending is what is left once every device's part
    (MIG_DATA_SIZE + initial + dirty, `vfio_state_pending_exact`) is taken out. On the main
    channel the destination loads inline, one device after another, and reads nothing
    while it loads: data time and load times add up. With parallel device state (QEMU 10.0
    multifd) each device loads on its own from the switchover, beside the transfer.
    `rates` (kept across a migration's checks) gives each device's load rate; without it,
    the rate the destination reports."""
    bw = obs.bandwidth if obs.bandwidth > 0 else float("inf")
    devs = tuple(device_forecast(d, rates.rate(d) if rates else d.target.measured_load_rate)
                 for d in obs.devices)
    device_part = sum(d.stop_copy_bytes + d.initial_bytes_left + d.dirty_bytes
                      for d in obs.devices)
    data = (max(0, obs.pending_bytes - device_part) + sum(d.stop_copy_bytes for d in devs)) / bw
    floor_data = sum(d.floor_bytes for d in devs) / bw
    if obs.parallel_device_state:
        downtime = max([data, *(d.load_s for d in devs)])
        floor = max([floor_data, *(d.floor_load_s for d in devs)])
    else:
        downtime = data + sum(d.load_s for d in devs)
        floor = floor_data + sum(d.floor_load_s for d in devs)
    return Forecast(downtime + obs.rtt_s, floor + obs.rtt_s, devs)


# Above an unreducible floor, the rest "no longer falls" when it fell by less than this
# share (or this many seconds) since the previous check.
FLOOR_SETTLED = 0.10
FLOOR_SETTLED_S = 0.002


class TimeAware(Policy):
    """Waits for the ACK, then predicts the downtime from what QEMU's source can know.

    Inputs: the source's own counters (RAM's share of the exact pending, the bandwidth the
    threshold uses, each device's precopy info, MIG_DATA_SIZE and initial image size), the
    destination's reports on the return path (each device's load backlog and measured
    load rate), and the identity of each device's variant driver, whose documented
    semantics say what MIG_DATA_SIZE means and when the device loads
    (stop_copy_estimate, device_forecast). No configured timing: a real source does not
    know the destination's setup time or load rate in advance.

    - The prediction fits downtime-limit: go.
    - It cannot fit: the part no pre-copy reduces (a whole-state final image, virtio; a
      device without PRE_COPY) alone exceeds the limit. Waiting only moves the same floor
      later (QEMU's own rule never fires then either, and real QEMU iterates until the
      limit is raised), so it goes once the rest, the part pre-copy does reduce, fits the
      limit and has stopped falling (by less than FLOOR_SETTLED of it since the previous
      check: waiting gains nothing more), and says so.
    - It cannot be predicted: a device loads only on leaving RESUMING (its driver says so:
      hisi_acc, pds, qat, xe; or the destination has its initial data in and measured no
      load time), or sends nothing in pre-copy.
      It then decides as switchover-ack does, and says why; the recorded prediction leaves
      the unknown loads out (a lower bound). A device that loads during pre-copy but has
      no load reported yet (the ACK outran the destination's report): it waits a check.
    - An unknown driver: MIG_DATA_SIZE read as QEMU reads it (the stop-copy's length,
      beside the unsent pre-copy bytes), loads at the measured rate; MIG_DATA_SIZE is then
      its floor.

    Fixed costs no message reports (the final image's fixed load cost, config-space load,
    the source's save time) are not in the prediction: docs/fidelity.md names the message
    that would carry them and records the resulting error. Until loads after the first
    have been measured, the load rate includes the first load's setup (LoadRates): the
    prediction errs long.

    Unlike the other policies it keeps state across one migration's checks: the
    destination's reports over time (LoadRates) and the previous check's reducible part.
    make_policy builds one per migration.
    """

    name = "time-aware"
    needs_ack = True

    def __init__(self, ack_timeout_s: float = 0.0, on_timeout: str = "cancel") -> None:
        super().__init__(ack_timeout_s, on_timeout)
        self._ack = SwitchoverAck(ack_timeout_s, on_timeout)
        self.rates = LoadRates()  # one migration's reports over time (make_policy per run)
        self._last_rest_s = float("inf")  # the previous check's reducible part (above floor)

    def predict(self, obs: Observation) -> float:
        return forecast(obs, self.rates).downtime_s

    def decide(self, obs: Observation) -> Decision:
        f = forecast(obs, self.rates)
        predicted, limit = f.downtime_s, obs.downtime_limit_s
        if not obs.ack_received or f.unknown:
            # Until the ACK, or with nothing to predict from: switchover-ack's answer.
            d = self._ack.decide(obs)
            if not f.unknown:
                return Decision(d.action, d.reason, predicted, d.basis)
            return Decision(d.action, f"no prediction ({'; '.join(f.unknown)}): "
                            f"switchover-ack's rule: {d.reason}", predicted, "data (no prediction)")
        if f.waiting:
            # What the prediction still needs: it waits on the prediction's behalf.
            return Decision("wait", "no load reported yet by the destination for "
                            f"{', '.join(f.waiting)}", predicted, "prediction")
        ms = f"predicted downtime {predicted * 1e3:.0f} ms"
        rest, last = predicted - f.floor_s, self._last_rest_s
        self._last_rest_s = rest
        if predicted <= limit:
            return Decision("go", f"{ms} fits {limit * 1e3:.0f} ms", predicted, "prediction")
        if f.floor_s <= limit:
            return Decision("wait", f"{ms} > limit", predicted, "prediction")
        floor = (f"{ms}, of which {f.floor_s * 1e3:.0f} ms no pre-copy reduces (above the "
                 f"{limit * 1e3:.0f} ms limit)")
        settled = last != float("inf") and rest >= last - max(FLOOR_SETTLED * last, FLOOR_SETTLED_S)
        if rest <= limit and settled:
            return Decision("go", f"{floor}: switching at that floor, the rest "
                            f"({rest * 1e3:.0f} ms) fits and no longer falls", predicted, "floor")
        return Decision("wait", f"{floor}: the rest ({rest * 1e3:.0f} ms) still falls "
                        "or exceeds the limit", predicted, "floor")


@dataclass(frozen=True)
class PolicyInfo:
    name: str
    needs_ack: bool  # negotiates switchover-ack (and so forces the return path on)
    description: str
    factory: Callable[[float, str], Policy]  # (ack timeout s, its action) -> the policy


POLICY_REGISTRY: dict[str, PolicyInfo] = {}
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,39}$")


def register_policy(cls: type[Policy], description: str) -> type[Policy]:
    """Add a policy to the one registry: the engine, the model and every interface take it.

    Its `name` is what `--policy` and Start take (lower case, digits, '-'; up to 40); a
    name already taken by another class is refused."""
    if not isinstance(cls, type) or not issubclass(cls, Policy) or cls is Policy:
        raise ValueError(f"{cls!r}: register a subclass of migbed.core.policy.Policy")
    name = cls.name
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"policy name {name!r}: 1 to 40 of a-z, 0-9 and '-', starting with a letter")
    have = POLICY_REGISTRY.get(name)
    if have is not None and have.factory is not cls:
        raise ValueError(f"policy {name!r} is already registered (by {have.factory!r})")
    if not description.strip():
        raise ValueError(f"policy {name!r}: give a one-line description")
    POLICY_REGISTRY[name] = PolicyInfo(name, bool(cls.needs_ack), description.strip(), cls)
    return cls


def unregister_policy(name: str) -> None:
    """Remove a registered policy (tests that register their own); shipped ones stay."""
    if name in POLICIES:
        raise ValueError(f"policy {name!r} ships with migbed: it cannot be removed")
    POLICY_REGISTRY.pop(name, None)


register_policy(Legacy, "QEMU before 8.1: pending data fits downtime-limit")
register_policy(InitialBytesSent, "legacy, and every device's initial bytes sent (loaded or not)")
register_policy(SwitchoverAck, "QEMU 8.1+: legacy, and the destination's SWITCHOVER_ACK")
register_policy(TimeAware,
                "switchover-ack, and a downtime predicted from observed load rates and the "
                "drivers' documented semantics fits")

# The policies migbed ships, in the registry's order (legacy first, then each refinement).
# Checks of a name read the live registry (policy_names(), make_policy): it also holds the
# policies registered since.
POLICIES = tuple(POLICY_REGISTRY)
# The default comparison (run, sweep, deploy, evacuate): QEMU before and after 8.1.
DEFAULT_POLICIES = ("legacy", "switchover-ack")


def policy_names() -> tuple[str, ...]:
    """Every policy name accepted now: the shipped ones, then those registered since."""
    return tuple(POLICY_REGISTRY)


def unknown_policy(name: str) -> str:
    """The error text for a name not in the registry ('' when it is there)."""
    if name in POLICY_REGISTRY:
        return ""
    return f"unknown policy {name!r} (allowed: {', '.join(policy_names())})"


def make_policy(name: str, ack_timeout_s: float = 0.0, on_timeout: str = "cancel") -> Policy:
    """The registered policy `name`, built with the switchover-ack timeout and its action."""
    error = unknown_policy(name)
    if error:
        raise ValueError(error)
    info = POLICY_REGISTRY[name]
    policy = info.factory(ack_timeout_s, on_timeout)
    if policy.name != name or policy.needs_ack != info.needs_ack:
        raise ValueError(f"policy {name!r}: its factory built {policy.name!r} "
                         f"(needs_ack {policy.needs_ack}, registered {info.needs_ack})")
    return policy


def cap_reached(obs: Observation, max_iterations: int, max_time_s: float) -> str:
    """guestperf's caps: "" or the name of the cap that is hit."""
    return cap_hit(obs.dirty_sync_count, obs.elapsed_s, max_iterations, max_time_s)


def cap_hit(dirty_sync_count: int, elapsed_s: float, max_iterations: int, max_time_s: float) -> str:
    """cap_reached on the two figures it reads (the model checks the caps every pass)."""
    if max_iterations and dirty_sync_count >= max_iterations:
        return "max-iterations"
    if max_time_s and elapsed_s >= max_time_s:
        return "max-time"
    return ""
