"""The pre-copy loop: QEMU's migration_iteration_run, until the policy says go.

Each pass: close the 100 ms bandwidth window if due (bandwidth, threshold, expected
downtime); pending *estimate* (dirty pages in the bitmap + device initial/dirty bytes); if
below the threshold, pending *exact* (a dirty sync, the devices' stop-copy size); then the
policy decides go / wait / cancel; caps; otherwise one more round of RAM and device data
within the max-bandwidth budget. Data flows one way: observe -> estimate -> decide -> send.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from migbed.core.dilation import real_seconds
from migbed.core.policy import Basis, DeviceView, Observation, cap_reached, data_fits
from migbed.measure.record import DeviceSample, ProgressSample

from .failure import MigrationFailed
from .parts import Parts
from .transport import send_scan

ITERATE_MAX_S = 0.05  # QEMU's ram_save_iterate gives up the thread after 50 ms (MAX_WAIT)


@dataclass(frozen=True)
class Switch:
    """Why pre-copy ended: the policy's go, or a cap that forced it."""

    reason: str
    forced_by_cap: str
    predicted_downtime_s: float
    basis: Basis  # the go's, or "cap"


class Precopy:
    def __init__(self, parts: Parts) -> None:
        self.p = parts
        self.ack_received = False
        self.ack_wait_start: float | None = None  # when the data first fitted without an ACK
        self.ack_at: float | None = None
        self.pending = 0
        self.phase = "precopy"
        # MAX_WAIT is QEMU's, emulated: stretched with the run (core/dilation.py).
        self.iterate_max_s = real_seconds(ITERATE_MAX_S, parts.scenario.time_dilation)

    def on_ack(self) -> None:
        self.ack_received = True
        self.ack_at = time.monotonic()
        self.p.recorder.event("switchover-ack")

    async def run(self) -> Switch:
        p, mig = self.p, self.p.scenario.migration
        p.estimator.start(time.monotonic())
        while True:
            p.check()
            now = time.monotonic()
            if p.estimator.update(now, p.scanner.dirty_pages_rate):
                self.sample()
            obs = await self._observe()
            policy_waits = False
            if obs.pending_exact:
                if data_fits(obs) and not self.ack_received and self.ack_wait_start is None:
                    self.ack_wait_start = now
                decision = p.policy.decide(obs)
                if decision.action == "go":
                    return Switch(decision.reason, "", decision.predicted_downtime_s, decision.basis)
                if decision.action == "cancel":
                    raise MigrationFailed(decision.reason, "cancelled")
                # Only a wait with the data fitting (the ACK, time-aware's prediction) rests;
                # "pending above threshold" must go on sending, as QEMU does.
                policy_waits = data_fits(obs)
            cap = cap_reached(obs, mig.max_iterations, mig.max_time)
            if cap:
                if mig.cap_action == "cancel":
                    raise MigrationFailed(f"{cap} reached without converging", "cancelled")
                return Switch(f"{cap} reached: switchover forced", cap, obs.pending_bytes /
                              obs.bandwidth if obs.bandwidth else 0.0, "cap")
            sent = await self._send_round()
            if sent == 0 or policy_waits:
                await self._rest(now)

    async def _rest(self, now: float) -> None:
        # Nothing to send, or the data fits and the policy waits (for the ACK, or for
        # time-aware's prediction): rest until the window ends, one dirty sync per window.
        # QEMU busy-loops here, syncing as fast as it can, which makes a max-iterations
        # cap fire during the wait and force the setup into downtime.
        p = self.p
        wait = p.limiter.wait(time.monotonic()) or max(
            0.0, (p.estimator.window_start or now) + p.estimator.window - time.monotonic())
        await asyncio.sleep(max(wait, 0.001))

    def ack_wait_s(self) -> float | None:
        """pending < threshold first true -> the ACK (or now), if the data ever fitted."""
        if self.ack_wait_start is None:
            return None
        end = self.ack_at if self.ack_at is not None else time.monotonic()
        return max(0.0, end - self.ack_wait_start)

    # ------------------------------------------------------------ observe

    def _pending_estimate(self) -> int:
        """qemu_savevm_state_pending_estimate: the bitmap's dirty pages and each device's
        cached initial + dirty bytes (vfio_state_pending_estimate: no ioctl)."""
        return self.p.scanner.dirty_bytes + sum(v.pending_estimate() for v in self.p.devices.vfio)

    async def _pending_exact(self) -> int:
        """A dirty sync (RAM, with the device trackers' report), and each device's
        MIG_DATA_SIZE plus fresh pre-copy info (vfio_state_pending_exact). No multifd sync
        here: the channels sync once per pass over RAM (scanner.py), not per bitmap sync."""
        ram = self.p.scanner.sync()
        await self.p.devices.tracker_report(self.p.scenario.guest.ram_size)
        self.p.estimator.on_sync(ram)
        return ram + sum(v.pending_exact() for v in self.p.devices.vfio)

    async def _observe(self) -> Observation:
        p, est = self.p, self.p.estimator
        pending, exact = self._pending_estimate(), False
        if pending < est.threshold:
            pending, exact = await self._pending_exact(), True
        self.pending = pending
        views = [DeviceView(v.device.cfg.name, v.precopy_init_size, v.precopy_dirty_size,
                            v.stop_copy_size, load, v.device.driver.name, v.initial_image_bytes)
                 for v, load in zip(p.devices.vfio, p.link.loads, strict=True)]
        now = time.monotonic()
        mig = p.scenario.migration
        return Observation(
            elapsed_s=now - p.recorder.t0, pending_bytes=pending, pending_exact=exact,
            threshold_bytes=est.threshold, bandwidth=est.switchover_bandwidth,
            downtime_limit_s=mig.downtime_limit, dirty_sync_count=p.scanner.dirty_sync_count,
            ack_received=self.ack_received,
            ack_wait_s=now - self.ack_wait_start if self.ack_wait_start is not None else 0.0,
            rtt_s=(p.link.offset.best_rtt or 0) / 1e9, devices=tuple(views),
            parallel_device_state=mig.device_state_transfer == "multifd",
            threshold_inclusive=p.profile.threshold_inclusive)

    def sample(self) -> None:
        p = self.p
        # What QEMU's trace shows: its cached pre-copy sizes (no ioctl for a sample).
        devs = [DeviceSample(v.device.cfg.name, v.device.state.name, v.precopy_init_size,
                             v.precopy_dirty_size, load.loaded_bytes, load.backlog_bytes,
                             load.initial_loaded, load.busy_s, load.loading)
                for v, load in zip(p.devices.vfio, p.link.loads, strict=True)]
        c, est = p.counters, p.estimator
        p.recorder.sample(ProgressSample(
            t_ms=round(p.recorder.elapsed_ms(), 3), phase=self.phase,
            ram_remaining_bytes=p.scanner.dirty_bytes,
            ram_transferred_bytes=c.ram_transferred,
            device_transferred_bytes=c.device_transferred,
            dirty_sync_count=p.scanner.dirty_sync_count, bandwidth_bytes_per_s=est.bandwidth,
            threshold_bytes=est.threshold, expected_downtime_ms=est.expected_downtime * 1e3,
            dirty_pages_rate=p.scanner.dirty_pages_rate, pending_bytes=self.pending,
            ack_received=self.ack_received, devices=devs))

    # ------------------------------------------------------------ send

    async def _send_round(self) -> int:
        """qemu_savevm_state_iterate, repeated for up to 50 ms within the budget: RAM until
        the budget is spent, 50 ms pass or the bitmap is empty; then one read per device
        (before QEMU 9.0 only once RAM's bitmap is empty: RAM's handler returned 0 and
        qemu_savevm_state_iterate stopped there; the devices never held each other back,
        as vfio_save_iterate returned 1 in 8.1). Once RAM's search has gone round and found
        nothing (ending a pass, so syncing, on the way), RAM rests until the next call, as
        ram_save_iterate returns at its first empty search."""
        p = self.p
        sent = 0
        ram_clean = False
        started = time.monotonic()
        while time.monotonic() - started < self.iterate_max_s:
            n = 0
            if not ram_clean:
                n, ram_clean = await self._send_ram(started)
            if not (p.profile.devices_wait_for_ram and p.scanner.dirty_pages):
                n += await self._send_devices()
            sent += n
            if n == 0 or p.limiter.allowance(time.monotonic()) <= 0:
                break
        if p.limiter.allowance(time.monotonic()) <= 0:
            wait = p.limiter.wait(time.monotonic())
            if wait > 0:
                await asyncio.sleep(wait)
        return sent

    async def _send_ram(self, started: float) -> tuple[int, bool]:
        """RAM within the budget and the 50 ms: (bytes sent, the search went round clean)."""
        p = self.p
        ps = p.scanner.page_size
        sent = 0
        while time.monotonic() - started < self.iterate_max_s:
            allowance = p.limiter.allowance(time.monotonic())
            if allowance <= 0:
                break
            scan = p.scanner.take(max(1, min(allowance, p.ram.batch_bytes) // ps))
            n = await send_scan(p.ram, scan)
            self._account(n)
            p.counters.ram(n, downtime=False)
            sent += n
            if scan.clean:
                return sent, True
        return sent, False

    async def _send_devices(self) -> int:
        p = self.p
        return await p.devices.send_precopy(lambda: p.limiter.allowance(time.monotonic()),
                                            self._account)

    def _account(self, n: int) -> None:
        now = time.monotonic()
        self.p.limiter.consume(now, n)
        self.p.estimator.on_sent(n)
