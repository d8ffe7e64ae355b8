"""Switchover policies: when may the source stop the guest and send what is left?

Each policy is a pure decision on an Observation of the migration (what the source knows,
including what the target reported on the return path). The engine observes, estimates,
asks the policy, then sends; the policy never touches the network.

- legacy              QEMU before 8.1: pending data fits downtime-limit at the bandwidth.
- initial-bytes-sent  the seed thread's init_precopy_size idea: legacy, and not before every
                      device's initial bytes are *sent* (loaded or not).
- switchover-ack      QEMU 8.1+: legacy, and not before the target's SWITCHOVER_ACK.
- time-aware          ours: waits for the ACK, then predicts downtime from what it can know
                      (see TimeAware) and switches only when the prediction fits
                      downtime-limit.

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
    name: str
    initial_bytes_left: int  # precopy info initial_bytes (not yet sent)
    dirty_bytes: int
    stop_copy_bytes: int  # MIG_DATA_SIZE: the source driver's own estimate
    target: TargetLoad = field(default_factory=TargetLoad)  # zeros until the first report


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
    rtt_s: float = 0.0
    devices: tuple[DeviceView, ...] = field(default_factory=tuple)
    # Stop-copy device state on its own channel per device, loaded in parallel from the
    # switchover (QEMU 10.0 multifd device state) instead of inline on the main stream.
    parallel_device_state: bool = False
    threshold_inclusive: bool = False  # the switchover test is pending <= threshold


@dataclass(frozen=True)
class Decision:
    action: str  # "go" | "wait" | "cancel"
    reason: str
    predicted_downtime_s: float

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
                            f"{obs.threshold_bytes:.0f} B", predicted)
        return Decision("wait", "pending above threshold", predicted)


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
                            d.predicted_downtime_s)
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
                                d.predicted_downtime_s)
            return Decision("cancel", f"no SWITCHOVER_ACK within {self.ack_timeout_s:g}s",
                            d.predicted_downtime_s)
        return Decision("wait", "waiting for SWITCHOVER_ACK", d.predicted_downtime_s)


def device_load_time(dev: DeviceView) -> float:
    """Seconds the destination needs for this device's backlog and stop-copy bytes, at the
    load rate it measured (inf when it has not measured one yet: no basis to predict)."""
    work = dev.target.backlog_bytes + dev.stop_copy_bytes
    if work == 0:
        return 0.0
    rate = dev.target.measured_load_rate
    return work / rate if rate > 0 else float("inf")


class TimeAware(Policy):
    """Waits for the ACK, then predicts the downtime from observed facts only.

    Inputs: the pending bytes and the bandwidth (the source's own), each device's
    stop-copy size (MIG_DATA_SIZE, the source driver) and, from the target's return path,
    its load backlog and measured load rate. On the main channel the destination loads
    inline, one device after another, and reads nothing while it loads: the data time and
    every device's load time add up. With parallel device state (QEMU 10.0 multifd) each
    device loads on its own from the switchover, beside the RAM. Fixed costs that no
    message reports (the final image's fixed load cost, config-space load, the source's
    save time) are not in the prediction: docs/fidelity.md names the message that would
    carry them and records the resulting error.
    """

    name = "time-aware"
    needs_ack = True

    def __init__(self, ack_timeout_s: float = 0.0, on_timeout: str = "cancel") -> None:
        super().__init__(ack_timeout_s, on_timeout)
        self._ack = SwitchoverAck(ack_timeout_s, on_timeout)

    def predict(self, obs: Observation) -> float:
        loads = [device_load_time(d) for d in obs.devices]
        if obs.parallel_device_state:
            bandwidth = obs.bandwidth if obs.bandwidth > 0 else float("inf")
            ram = max(0, obs.pending_bytes - sum(d.stop_copy_bytes for d in obs.devices))
            return max([ram / bandwidth, *loads]) + obs.rtt_s
        return data_time(obs) + sum(loads) + obs.rtt_s

    def decide(self, obs: Observation) -> Decision:
        predicted = self.predict(obs)
        if not obs.ack_received:
            # Until the ACK: exactly switchover-ack's answer (wait, or its timeout action).
            d = self._ack.decide(obs)
            return Decision(d.action, d.reason, predicted)
        if predicted <= obs.downtime_limit_s:
            return Decision("go", f"predicted downtime {predicted * 1e3:.0f} ms fits "
                            f"{obs.downtime_limit_s * 1e3:.0f} ms", predicted)
        return Decision("wait", f"predicted downtime {predicted * 1e3:.0f} ms > limit",
                        predicted)


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
                "switchover-ack, and a downtime predicted from observed load rates fits")

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
