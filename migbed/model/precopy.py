"""One migration under one policy, simulated analytically: QEMU's pre-copy loop and stop-copy.

The source (migration/migration.c, ~QEMU 10):
  every check: threshold = bandwidth x downtime-limit (avail-switchover-bandwidth when
  set; 0 until the first 100 ms window closes); pending *estimate* = RAM dirty bitmap +
  each device's initial + dirty bytes; if below the threshold, a dirty sync and the *exact*
  pending (adds each device's stop-copy size, which the VFIO device reports including its
  unsent pre-copy bytes); switch when it fits (pending == 0 or < threshold) and the policy
  allows; else send: RAM's dirty pages first, then device data, under max-bandwidth
  (bursts of rate/10 per 100 ms window at the wire's speed). A check happens when a
  window's budget is spent (at the window's end), every 50 ms of sending when the wire is
  slower than the limit, at once when nothing is left to send, and every ``wait_round``
  while the data fits and the policy waits.
The guest: a writable working set (reference section 6): pages re-dirtied at random in the
  hot set, so a sync after dt finds W x (1 - exp(-D dt / W)) dirty bytes of it.
The destination (inline loads, reference section 3): see pipe.py. A device image's cost is
  paid when its last byte arrives ("image-complete"; the first image also pays the
  device's setup) or chunk by chunk ("per-chunk"); the ACK goes when every device's initial
  image is loaded.
Devices follow their driver profile (migbed/core/drivers.py, as the engine's SourceDevice
  and QEMU's hw/vfio/migration.c paths do): MIG_DATA_SIZE (whole state, what is left, or a
  constant), when a middle image is cut (only at an exact check for mlx5/virtio: the
  PRECOPY_INFO ioctl; on any read for generic; never), whether images are incremental,
  whether the device has PRE_COPY at all.
Stop-copy: vm_stop suspends each device, a synchronous driver saves inside it, an
  asynchronous one (mlx5) starts its save there; the device trackers report at the final
  sync; then the rest at the wire's rate with no limit: RAM, then each device (after its
  save, at its turn for generic and drivers without PRE_COPY): its remaining initial bytes
  and final image (paying stop-copy-load-time), the non-iterable state, config-load-time.
  At vm_start the destination's on-stop drivers load, every device resumes (resume-time),
  then the Shut: QEMU's downtime ends there (return-path on) or when the source has written
  its last byte (off); the guest's adds the resume.
The decision: the engine's own policy object (migbed/core/policy.py, make_policy) decides on
  an Observation filled from the model's state: the exact pending, threshold and the
  bandwidth it used, the dirty-sync count, the ACK, how long the data has fitted without
  it, and per device its pre-copy info, its stop-copy size and the destination's load
  progress as the target's reports would carry it (loads.py). A registered policy decides
  here as it does in the engine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from migbed.core.policy import (
    Basis,
    Decision,
    DeviceView,
    Observation,
    Policy,
    cap_hit,
    data_fits,
    make_policy,
)
from migbed.model.inputs import DeviceInputs, Inputs
from migbed.model.loads import LoadLog
from migbed.model.pipe import WINDOW_S, Limiter, Pipe

ITERATE_MAX_S = 0.05  # QEMU's ram_save_iterate gives the thread back after 50 ms
MAX_CHECKS = 200_000
# Less than this to send counts as nothing (a few pages or one device block): the loop then
# rests instead of spinning on crumbs.
MIN_SEND = 64 * 1024
LOAD_CHUNK = 1024 * 1024  # the stream's device chunk (per-chunk loads)
VFIO_BLOCK = 1024 * 1024  # what VFIO's save_live_iterate sends per turn (its data buffer)
NAN = math.nan


@dataclass(frozen=True)
class Outcome:
    """One policy's predicted migration. Times in s, sizes in bytes; NaN where undefined."""

    policy: str
    outcome: str  # completed | cancelled | no-convergence
    reason: str
    stop_s: float  # pre-copy start -> VM stop
    total_time_s: float  # QEMU's total-time (setup + pre-copy + downtime)
    downtime_s: float  # QEMU-reported
    guest_downtime_s: float
    iterations: int  # QEMU's dirty-sync-count (setup sync, exact syncs, final sync)
    ack_s: float  # when the switchover-ack reached the source (inf: never needed)
    setup_in_downtime_s: float  # device setup + initial load still running after the stop
    save_s: float
    transfer_s: float
    load_after_last_byte_s: float
    resume_s: float
    precopy_bytes: float
    downtime_bytes: float
    forced_by_cap: str = ""
    predicted_downtime_s: float = NAN  # the policy's own prediction at its decision
    # What the stop (or the policy's cancel) rested on, as the engine records it
    # (RunRecord.decision_basis): the Decision's basis, or "cap"; "" when nothing decided.
    basis: Basis | Literal[""] = ""


@dataclass
class _Device:
    cfg: DeviceInputs
    init_left: float
    dirty: float = 0.0  # state changed since the last image (what an increment would hold)
    cut: float = 0.0  # a middle image saved and not yet sent (mlx5/virtio: cut at a check)
    last_query: float = -math.inf  # the driver last asked the device (virtio: at most 1/s)
    written: float = 0.0  # bytes the destination was written (an on-stop driver loads them)
    read_initial: float = 0.0  # the part of the state the initial image has carried
    setup_paid: bool = False
    load_start: float = NAN  # the initial image's load on the destination
    load_end: float = NAN
    log: LoadLog = field(default_factory=LoadLog)  # what the destination did with it

    def setup_once(self) -> float:
        if self.setup_paid:
            return 0.0
        self.setup_paid = True
        return self.cfg.setup


class _Migration:
    def __init__(self, inp: Inputs, policy: Policy) -> None:
        self.inp = inp
        self.policy = policy
        limiter = Limiter(inp.max_bandwidth, inp.precopy_wire)
        self.pipe = Pipe(limiter, inp.params.stream_buffer)
        self.ram_hot = min(inp.working_set, inp.ram)  # the bulk stage: every page dirty
        self.ram_cold = inp.ram - self.ram_hot
        self.devices = [_Device(d, d.initial if d.driver.pre_copy else 0.0) for d in inp.devices]
        self.last_sync = 0.0
        self.dirt_t = 0.0
        self.syncs = 1  # QEMU counts the setup sync (ram_init_bitmaps)
        self.precopy_bytes = 0.0
        self.ack_at = math.inf if any(d.needs_ack for d in inp.devices) else 0.0
        self.ack_wait_start: float | None = None
        # switchover-ack forces the return path on, as QEMU requires (and the engine does)
        self.return_path = inp.return_path or policy.needs_ack

    # ------------------------------------------------------------ the guest and devices

    def accrue_device_dirt(self, t: float) -> None:
        dt = t - self.dirt_t
        if dt <= 0:
            return
        for d in self.devices:
            if d.cfg.dirty_rate > 0 and d.cfg.initial > 0 and d.cfg.driver.pre_copy:
                frac = -math.expm1(-d.cfg.dirty_rate * dt / d.cfg.initial)
                d.dirty += max(0.0, d.read_initial - d.dirty) * frac
        self.dirt_t = t

    def sync(self, t: float) -> float:
        """A dirty sync: the working set's pages written since the last one join the bitmap."""
        inp, w = self.inp, self.inp.working_set
        if w > 0 and inp.dirty_rate > 0:
            new = w * -math.expm1(-inp.dirty_rate * (t - self.last_sync) / w)
            self.ram_hot = min(w, self.ram_hot + new - self.ram_hot * new / w)
        self.last_sync = t
        self.syncs += 1
        return self.ram_hot + self.ram_cold + sum(self._device_exact(d, t) for d in self.devices)

    def _device_exact(self, d: _Device, t: float) -> float:
        """vfio_state_pending_exact: MIG_DATA_SIZE, plus in PRE_COPY a fresh PRECOPY_INFO
        (which, with mlx5 or virtio, is where the next middle image is cut)."""
        if not d.cfg.driver.pre_copy:
            return d.cfg.data_size(0.0, 0.0)
        self._cut(d, t)
        info = d.init_left + self._dirty_bytes(d)
        return d.cfg.data_size(d.init_left, d.cut + d.dirty) + info

    def _dirty_bytes(self, d: _Device) -> float:
        """PRECOPY_INFO's dirty_bytes: 0 while initial bytes are unread (mlx5, virtio) or
        always (hisi_acc, qat); else the saved-unread image plus the increment."""
        drv_ = d.cfg.driver
        if drv_.image_cut == "never" or (d.init_left > 0 and not drv_.dirty_while_initial):
            return 0.0
        return d.cut + (d.dirty if drv_.incremental else 0.0)

    def _cut(self, d: _Device, t: float) -> None:
        """Inside PRECOPY_INFO (mlx5vf_precopy_ioctl, virtiovf_precopy_ioctl): once the
        initial image and the last middle image are read, save the next one."""
        drv_ = d.cfg.driver
        if drv_.image_cut != "precopy-info" or d.init_left > 0 or d.cut > 0:
            return
        if drv_.incremental:
            d.cut, d.dirty = d.dirty, 0.0
        elif t - d.last_query >= drv_.precopy_query_interval_s:
            d.last_query = t
            d.cut = d.cfg.initial  # virtio: a full context each time it asks

    def _sendable(self, d: _Device) -> str:
        """Which of a device's pre-copy bytes a read returns: a cut image, the dirty state
        (generic cuts on read), or nothing (a driver that never cuts)."""
        return {"precopy-info": "cut", "read": "dirty"}.get(d.cfg.driver.image_cut, "")

    def estimate(self) -> float:
        """qemu_savevm_state_pending_estimate: RAM, and each device's initial bytes and the
        pre-copy data a read would return."""
        est = self.ram_hot + self.ram_cold
        for d in self.devices:
            src = self._sendable(d)
            est += d.init_left + (getattr(d, src) if src else 0.0)
        return est

    def bandwidth(self, t: float) -> float:
        """Bytes/s the threshold uses: avail-switchover-bandwidth when set (QEMU >= 8.2), else
        what the last closed 100 ms window carried (0 until the first one closes)."""
        inp = self.inp
        if t < WINDOW_S - 1e-9:
            return 0.0
        if inp.avail_bandwidth > 0 and inp.has_avail_switchover_bandwidth:
            return inp.avail_bandwidth
        w1 = math.floor(t / WINDOW_S + 1e-9) * WINDOW_S
        return self.pipe.bytes_between(w1 - WINDOW_S, w1) / WINDOW_S

    def threshold(self, t: float) -> float:
        return self.bandwidth(t) * self.inp.downtime_limit

    def below_threshold(self, estimate: float, threshold: float) -> bool:
        """The source's test for the exact pending (migration_iteration_run)."""
        return estimate < threshold or (self.inp.threshold_inclusive and estimate == threshold)

    def threshold_ceiling(self) -> float:
        """The highest threshold the rest of pre-copy can see: sending the bytes above it
        cannot make the estimate fit, so the loop may skip the checks in between."""
        inp = self.inp
        if inp.avail_bandwidth > 0 and inp.has_avail_switchover_bandwidth:
            return inp.avail_bandwidth * inp.downtime_limit
        # A measured window can hold up to two budgets (its grid and the limiter's differ).
        return 2 * min(inp.max_bandwidth, inp.precopy_wire) * inp.downtime_limit

    # ------------------------------------------------------------ sending

    def _device_initial(self, t: float, d: _Device, n: float, final: bool) -> float:
        if d.cfg.per_chunk:  # each stream chunk loads on arrival: the first pays the setup
            while n > LOAD_CHUNK + 1e-6:
                t = self._device_initial_piece(t, d, LOAD_CHUNK, final)
                n -= LOAD_CHUNK
        return self._device_initial_piece(t, d, n, final)

    def _device_initial_piece(self, t: float, d: _Device, n: float, final: bool) -> float:
        t = self.pipe.write(t, n)
        d.log.arrive(t, n, initial=True)
        d.init_left -= n
        d.read_initial += n
        d.written += n
        done = d.init_left <= 1e-6
        if done:
            d.init_left = 0.0
        if d.cfg.on_stop:  # the write only copies: loaded at vm_start, approved at once
            if done:
                d.load_start = d.load_end = t
                if not final:
                    self._note_initial_loaded()
            return t
        if d.cfg.per_chunk:
            stall = self.pipe.load(t, d.setup_once() + n / d.cfg.load_rate)
            d.log.load(stall.start, stall.end, n)
        elif done:
            stall = self.pipe.load(t, d.setup_once() + d.cfg.initial / d.cfg.load_rate)
            d.log.load(stall.start, stall.end, d.cfg.initial)
        else:
            return t
        if math.isnan(d.load_start):
            d.load_start = stall.start
        if done:
            d.load_end = stall.end
            if not final:
                self._note_initial_loaded()
        return t

    def _note_initial_loaded(self) -> None:
        ends = [d.load_end for d in self.devices if d.cfg.needs_ack]
        if all(not math.isnan(e) for e in ends):
            self.ack_at = max(ends, default=0.0) + self.inp.params.rtt

    def _emit_ram(self, t: float, k: float) -> tuple[float, float]:
        for attr in ("ram_hot", "ram_cold"):
            n = min(k, getattr(self, attr))
            if n > 0:
                t = self.pipe.write(t, n)
                setattr(self, attr, getattr(self, attr) - n)
                k -= n
        return t, k

    def _emit_devices(self, t: float, k: float, turn: float = math.inf) -> tuple[float, float]:
        """Device data, device after device; `turn` caps what each device sends (a VFIO
        save_live_iterate call sends one block)."""
        for d in self.devices:
            if k <= 0:
                break
            mine = min(k, turn)
            k -= mine
            t, left = self._emit_device(t, d, mine)
            k += left
        return t, k

    def _emit_device(self, t: float, d: _Device, k: float) -> tuple[float, float]:
        if k > 0:
            n = min(k, d.init_left)
            if n > 0:
                t = self._device_initial(t, d, n, final=False)
                k -= n
        src = self._sendable(d)
        n = min(k, getattr(d, src)) if src and d.init_left <= 0 else 0.0
        if n > 0:  # a middle image, loaded when it is complete
            t = self.pipe.write(t, n)
            d.log.arrive(t, n)
            setattr(d, src, getattr(d, src) - n)
            d.written += n
            k -= n
            stall = self.pipe.load(t, d.setup_once() + n / d.cfg.load_rate)
            d.log.load(stall.start, stall.end, n)
        return t, k

    def _interleaving(self) -> bool:
        """QEMU >= 9.0 (commit 4e1871c450) gives every device a turn in each iteration, unless
        the rate limit is exceeded: with the wire slower than max-bandwidth, RAM's 50 ms of
        pages are followed by one VFIO block. Before 9.0 (and whenever the budget binds, as
        RAM spends it first), device data waits until RAM's bitmap pass is done."""
        return self.inp.interleave and not self.pipe.limiter.binding

    def emit(self, t: float, k: float) -> float:
        """Send k bytes of pre-copy data: RAM's dirty pages, then each device's data."""
        self.precopy_bytes += k
        if not self._interleaving():
            t, k = self._emit_ram(t, k)
            t, _ = self._emit_devices(t, k)
            return t
        ram_step = ITERATE_MAX_S * self.pipe.limiter.wire
        while k > 1e-6:
            if self.ram_hot + self.ram_cold <= 0:  # VFIO's turns back to back: one stretch
                t, _ = self._emit_devices(t, k)
                break
            before = k
            t, k = self._emit_ram(t, min(k, ram_step))
            k = before - min(before, ram_step) + k  # what RAM did not take stays to send
            turns = min(k, VFIO_BLOCK * len(self.devices))
            t, left = self._emit_devices(t, turns, VFIO_BLOCK)
            k -= turns - left
            if k >= before - 1e-6:
                break  # nothing left to send
        return t

    def queue(self) -> float:
        return self.estimate()

    def step_bytes(self, t: float) -> float:
        """Bytes until the next check: the window's budget left, or 50 ms of wire."""
        lim = self.pipe.limiter
        if not lim.binding:
            return ITERATE_MAX_S * lim.wire + (VFIO_BLOCK * len(self.devices) if self._interleaving() else 0.0)
        return lim.budget_left(t)

    def rest_until(self, t: float) -> float:
        """The next check after a rest: the end of the bandwidth window (migbed's engine, one
        dirty sync per window), or after wait_round when it is shorter (QEMU's busy loop)."""
        wait = self.inp.params.wait_round
        if wait < WINDOW_S:
            return t + wait
        return (math.floor(t / WINDOW_S + 1e-9) + 1) * WINDOW_S

    def send(self, t: float, waiting: bool, jump: float) -> float:
        """Send until the next check; returns its time."""
        lim = self.pipe.limiter
        start = t
        queue = self.queue()
        if queue > 0 and jump > 0 and not waiting:
            t = self.emit(t, min(queue, jump))  # cannot cross the threshold before this
        left = self.queue()
        if left > 0:
            t = self.emit(t, min(left, self.step_bytes(t)))
        if lim.budget_spent():
            t = max(t, lim.window_end())
        if waiting or queue < MIN_SEND:  # nothing sent, or the policy waits: rest a round
            t = max(t, self.rest_until(start))
        return t if t > start else start + 1e-3

    # ------------------------------------------------------------ stop-copy

    def _vm_stop(self, t_stop: float) -> tuple[float, list[float]]:
        """vm_stop, device by device: its suspend, then a synchronous save inside the arc
        to STOP_COPY; an asynchronous one (mlx5) starts there and is ready `save` later.
        Returns when the stop is done and each device's save-ready time (NaN: its save
        runs at its turn, generic and drivers without PRE_COPY)."""
        t, ready = t_stop, []
        for d in self.devices:
            t += d.cfg.suspend
            mode = d.cfg.driver.stop_copy_save
            if not d.cfg.driver.pre_copy or mode == "first-read":
                ready.append(NAN)
            elif mode == "sync":
                t += d.cfg.save
                ready.append(t)
            else:
                ready.append(t + d.cfg.save)
        return t, ready

    def _final_bytes(self, d: _Device) -> float:
        """What STOP_COPY reads after the initial image's rest: an unread middle image, then
        the final image (the increment, or the whole state again, or everything for a
        device without PRE_COPY) and the context."""
        if not d.cfg.driver.pre_copy:
            return d.cfg.initial + d.cfg.stop_copy
        if not d.cfg.driver.incremental:
            return d.cut + d.cfg.initial + d.cfg.stop_copy
        return d.cut + d.dirty + d.cfg.stop_copy

    def _final_images(self, t: float, ready: list[float]) -> tuple[float, float]:
        """Each device in turn on the main stream (qemu_savevm_state_complete_precopy): its
        save if not done yet, the rest of its initial image, its final image (loaded when
        whole, unless its driver loads on stop), its non-iterable state and config load.
        Returns the last byte's time and how long the stream waited on saves."""
        waited = 0.0
        for d, r in zip(self.devices, ready, strict=True):
            before = t
            t = t + d.cfg.save if math.isnan(r) else max(t, r)
            waited += t - before
            if d.init_left > 0:
                t = self._device_initial(t, d, d.init_left, final=True)
            final = self._final_bytes(d)
            t = self.pipe.write(t, final)
            d.written += final
            if not d.cfg.on_stop:
                self.pipe.load(t, d.setup_once() + d.cfg.stop_load + final / d.cfg.load_rate)
            t = self.pipe.write(t, d.cfg.state_size)
            self.pipe.load(t, d.cfg.config_load)
        return t, waited

    def _parallel_images(self, t_stop: float, ram_end: float,
                         ready: list[float]) -> tuple[list[float], float]:
        """QEMU 10's multifd device state: every device on its own stream from the stop,
        loaded by its own thread once its bytes (sharing the wire with RAM) are in."""
        ends = []
        rest = [d.init_left + self._final_bytes(d) + d.cfg.state_size for d in self.devices]
        on_wire = ram_end + sum(rest) / self.inp.stop_wire
        for d, nbytes, r in zip(self.devices, rest, ready, strict=True):
            saved = t_stop + d.cfg.save if math.isnan(r) else r
            arrived = max(on_wire, saved + nbytes / self.inp.stop_wire)
            busy = d.load_end if not math.isnan(d.load_end) else arrived
            d.written += nbytes - d.cfg.state_size
            load = 0.0 if d.cfg.on_stop else (d.setup_once() + d.cfg.stop_load
                                              + (nbytes - d.cfg.state_size) / d.cfg.load_rate)
            ends.append(max(arrived, busy) + load + d.cfg.config_load)
        return ends, on_wire

    def _vm_start(self, t: float) -> float:
        """The destination's vm_start: each device leaves RESUMING (an on-stop driver loads
        everything it was written: setup, bytes, the stop-copy cost), then its resume
        commands; the Shut follows."""
        for d in self.devices:
            if d.cfg.on_stop:
                t += d.setup_once() + d.written / d.cfg.load_rate + d.cfg.stop_load
        return t + sum(d.cfg.resume for d in self.devices)

    def _tracker_report(self) -> float:
        """The final sync's VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT, device after device,
        only when every device tracks its own DMA."""
        devs = [d.cfg for d in self.devices]
        if not devs or any(c.driver.dirty_tracking != "device" for c in devs):
            return 0.0
        return sum(self.inp.ram / c.tracker_rate for c in devs if c.tracker_rate > 0)

    def stop_copy(self, t_stop: float, forced: str, reason: str, basis: Basis,
                  predicted: float = NAN) -> Outcome:
        inp, params = self.inp, self.inp.params
        self.accrue_device_dirt(t_stop)
        self.sync(t_stop)  # the final sync, with the guest stopped
        self.pipe.limiter = Limiter(math.inf, inp.stop_wire)  # the rate limit is lifted
        downtime_bytes = self.ram_hot + self.ram_cold + sum(
            d.init_left + self._final_bytes(d) + d.cfg.state_size for d in self.devices)
        t, ready = self._vm_stop(t_stop)
        save = t - t_stop
        t += self._tracker_report()
        t = self.pipe.write(t, self.ram_hot + self.ram_cold)
        parallel_ends: list[float] = []
        if inp.device_state_multifd:
            parallel_ends, on_wire = self._parallel_images(t_stop, t, ready)
            t = max(t, on_wire)
        else:
            t, waited = self._final_images(t, ready)
            save += waited
        last_byte = t
        dest_done = self._vm_start(max([last_byte, self.pipe.dest_free, *parallel_ends]))
        end = dest_done + params.rtt if self.return_path else last_byte
        in_downtime = sum(max(0.0, d.load_end - max(d.load_start, t_stop))
                          for d in self.devices if not math.isnan(d.load_end))
        return Outcome(
            self.policy.name, "completed", reason, t_stop, params.setup + end, end - t_stop,
            dest_done + params.resume - t_stop, self.syncs, self.ack_at, in_downtime, save,
            max(0.0, last_byte - t_stop - save), dest_done - last_byte, params.resume, self.precopy_bytes,
            downtime_bytes, forced, predicted, basis)

    def unfinished(self, t: float, outcome: str, reason: str, basis: Basis | Literal[""] = "") -> Outcome:
        return Outcome(self.policy.name, outcome, reason, NAN, self.inp.params.setup + t, NAN, NAN,
                       self.syncs, self.ack_at, NAN, NAN, NAN, NAN, NAN, self.precopy_bytes, NAN,
                       basis=basis)

    # ------------------------------------------------------------ the policy

    def observe(self, t: float, pending: float, threshold: float) -> Observation:
        """What the engine's policy sees at an exact check (services/source/precopy.py
        _observe): the target's reports as they reach the source, half a round trip late."""
        inp = self.inp
        seen = t - inp.params.rtt / 2
        views = tuple(
            DeviceView(d.cfg.name, round(d.init_left), round(self._dirty_bytes(d)),
                       round(d.cfg.data_size(d.init_left, d.cut + d.dirty)),  # MIG_DATA_SIZE
                       d.log.view(seen, d.load_end), d.cfg.driver.name,
                       round(d.cfg.initial) if d.cfg.driver.pre_copy else 0)
            for d in self.devices)
        return Observation(
            elapsed_s=t, pending_bytes=round(pending), pending_exact=True,
            threshold_bytes=threshold, bandwidth=self.bandwidth(t),
            downtime_limit_s=inp.downtime_limit, dirty_sync_count=self.syncs,
            ack_received=self.policy.needs_ack and self.ack_at <= t,
            ack_wait_s=t - self.ack_wait_start if self.ack_wait_start is not None else 0.0,
            rtt_s=inp.params.rtt, devices=views, parallel_device_state=inp.device_state_multifd,
            threshold_inclusive=inp.threshold_inclusive)

    def decide(self, t: float, obs: Observation) -> Decision:
        """The policy's go | wait | cancel; the ACK wait starts when the data first fits
        without the ACK, as the engine counts it."""
        if data_fits(obs) and not obs.ack_received and self.ack_wait_start is None:
            self.ack_wait_start = t
        return self.policy.decide(obs)

    def cap(self, t: float) -> str:
        inp = self.inp
        return cap_hit(self.syncs, t, inp.max_iterations, inp.max_time)


def simulate(inp: Inputs, policy: str) -> Outcome:
    """The predicted migration of `inp` under `policy`, a name in migbed.core.policy's registry
    (ValueError naming the allowed ones otherwise)."""
    mig = _Migration(inp, make_policy(policy, inp.ack_timeout, inp.ack_timeout_action))
    t = 0.0
    for _ in range(MAX_CHECKS):
        if t >= inp.params.horizon:
            break
        mig.accrue_device_dirt(t)
        thr = mig.threshold(t)
        est = mig.estimate()
        waiting = False
        if mig.below_threshold(est, thr):
            obs = mig.observe(t, mig.sync(t), thr)
            decision = mig.decide(t, obs)
            if decision.action == "go":
                return mig.stop_copy(t, "", decision.reason, decision.basis, decision.predicted_downtime_s)
            if decision.action == "cancel":
                return mig.unfinished(t, "cancelled", decision.reason, decision.basis)
            # Only a wait with the data fitting rests; above the threshold it sends on.
            waiting = data_fits(obs)
        cap = mig.cap(t)
        if cap:
            if inp.cap_action == "cancel":
                return mig.unfinished(t, "cancelled", f"{cap} reached without converging", "cap")
            return mig.stop_copy(t, cap, f"{cap} reached: switchover forced", "cap")
        t = mig.send(t, waiting, max(0.0, est - mig.threshold_ceiling()))
    return mig.unfinished(t, "no-convergence", f"no switchover within {inp.params.horizon:g} s")
