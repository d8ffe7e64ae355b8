"""Switchover policies: when may the source stop the guest and send what is left?

Each policy is a pure decision on an Observation of the migration (what the source knows,
including what the target reported on the return path). The engine observes, estimates,
asks the policy, then sends; the policy never touches the network.

- legacy              QEMU before 8.1: pending data fits downtime-limit at the bandwidth.
- initial-bytes-sent  the seed thread's init_precopy_size idea: legacy, and not before every
                      device's initial bytes are *sent* (loaded or not).
- switchover-ack      QEMU 8.1+: legacy, and not before the target's SWITCHOVER_ACK.
- time-aware          ours: waits for the ACK, then predicts downtime from the data time and
                      each device's non-data time (its remaining setup and load backlog on the
                      target, the fixed stop-copy cost, the stop-copy bytes at its load rate,
                      loaded as they arrive) plus one round trip, and switches only when that
                      prediction fits downtime-limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class DeviceView:
    name: str
    initial_bytes_left: int  # precopy info initial_bytes (not yet sent)
    dirty_bytes: int
    stop_copy_bytes: int  # MIG_DATA_SIZE
    # From the target's load progress reports (zeros until the first report).
    target_backlog_bytes: int = 0
    target_setup_remaining_s: float = 0.0
    target_load_rate: float = 0.0  # bytes/s; 0 = unknown yet
    target_stop_copy_load_s: float = 0.0
    target_initial_loaded: bool = False


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


@dataclass(frozen=True)
class Decision:
    action: str  # "go" | "wait" | "cancel"
    reason: str
    predicted_downtime_s: float

    @property
    def go(self) -> bool:
        return self.action == "go"


def data_fits(obs: Observation) -> bool:
    """QEMU's test: (pending == 0 or pending < threshold), on the exact pending."""
    return obs.pending_bytes == 0 or obs.pending_bytes < obs.threshold_bytes


def data_time(obs: Observation) -> float:
    if obs.pending_bytes == 0:
        return 0.0
    return obs.pending_bytes / obs.bandwidth if obs.bandwidth > 0 else float("inf")


class Policy:
    name = "abstract"
    needs_ack = False  # the switchover-ack capability is negotiated for this policy

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

    def __init__(self, ack_timeout_s: float = 0.0, on_timeout: str = "cancel") -> None:
        if on_timeout not in ("cancel", "legacy"):
            raise ValueError("on_timeout must be 'cancel' or 'legacy'")
        self.ack_timeout_s = ack_timeout_s
        self.on_timeout = on_timeout

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


LOAD_CHUNK_BYTES = 1 << 20  # the stream's chunk: the last one still loads after it arrives


def device_load_end(dev: DeviceView, obs: Observation) -> float:
    """When the device's final image would be loaded if we stopped now (s after the stop).

    The device's stop-copy data comes after the RAM in the stream and loads as it arrives
    (mlx5 loads each image on write), behind whatever the target still has to do for the
    pre-copy data (setup, backlog). So its load starts at the later of its first byte's
    arrival and the end of that backlog, pays the fixed final cost and its bytes, and ends
    no earlier than one chunk's load after its last byte arrives.
    """
    rate = dev.target_load_rate
    if rate <= 0:
        return float("inf")  # nothing reported yet: no basis for a prediction
    bandwidth = obs.bandwidth if obs.bandwidth > 0 else float("inf")
    arrival_start = max(0, obs.pending_bytes - dev.stop_copy_bytes) / bandwidth
    backlog_end = dev.target_setup_remaining_s + dev.target_backlog_bytes / rate
    start = max(arrival_start, backlog_end)
    end = start + dev.target_stop_copy_load_s + dev.stop_copy_bytes / rate
    return max(end, data_time(obs) + min(dev.stop_copy_bytes, LOAD_CHUNK_BYTES) / rate)


class TimeAware(Policy):
    name = "time-aware"
    needs_ack = True

    def __init__(self, ack_timeout_s: float = 0.0, on_timeout: str = "cancel") -> None:
        self._ack = SwitchoverAck(ack_timeout_s, on_timeout)

    def predict(self, obs: Observation) -> float:
        # Devices load in parallel with each other and with the stream; the guest resumes
        # when the last byte has arrived and the slowest device has loaded.
        loads = max((device_load_end(d, obs) for d in obs.devices), default=0.0)
        return max(data_time(obs), loads) + obs.rtt_s

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


POLICIES = ("legacy", "initial-bytes-sent", "switchover-ack", "time-aware")


def make_policy(name: str, ack_timeout_s: float = 0.0, on_timeout: str = "cancel") -> Policy:
    if name == "legacy":
        return Legacy()
    if name == "initial-bytes-sent":
        return InitialBytesSent()
    if name == "switchover-ack":
        return SwitchoverAck(ack_timeout_s, on_timeout)
    if name == "time-aware":
        return TimeAware(ack_timeout_s, on_timeout)
    raise ValueError(f"unknown policy {name!r} (allowed: {', '.join(POLICIES)})")


def cap_reached(obs: Observation, max_iterations: int, max_time_s: float) -> str:
    """guestperf's caps: "" or the name of the cap that is hit."""
    if max_iterations and obs.dirty_sync_count >= max_iterations:
        return "max-iterations"
    if max_time_s and obs.elapsed_s >= max_time_s:
        return "max-time"
    return ""
