"""The source's migration engine: QEMU's pre-copy loop over a real gRPC stream.

One Migration boots a guest from the scenario, lets it run (warm-up), then migrates it:

  setup      open the stream, send the guest/device shape, wait for SetupAccepted;
             devices RUNNING -> PRE_COPY, dirty logging on, every page dirty (bulk stage)
  iterate    each pass: close the 100 ms bandwidth window if due (bandwidth, threshold,
             expected downtime); pending *estimate* (dirty pages in the bitmap + device
             initial/dirty bytes); if below threshold, pending *exact* (sync the dirty log,
             device stop-copy size): then the policy decides go / wait / cancel; caps;
             otherwise send RAM then device data within the max-bandwidth budget
  switchover stop the vCPU (downtime starts), devices -> STOP_COPY, rate limit off, final
             dirty sync, send what is left, Complete; the target's Received is QEMU's
             completion point (downtime ends). Then digests (outside downtime), the
             target's Resumed (first tick there) and Verified.
  failure    at any point before Verified: the guest runs again on the source, devices
             back to RUNNING, the record says why (as QEMU restarts the VM on failure).

Data flows one way: observe -> estimate -> decide -> send. The policy is pure; this file
only measures, asks and moves bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from migbed.core.clock import OffsetEstimator, boot_id, now_ns
from migbed.core.device import PRE_COPY_STATES, SourceDevice, VfioState
from migbed.core.estimator import Estimator
from migbed.core.guest import GuestMemory
from migbed.core.policy import DeviceView, Observation, cap_reached, data_fits, make_policy
from migbed.core.ratelimit import RateLimiter
from migbed.core.scenario import Scenario
from migbed.core.workload import Workload, guest_workload
from migbed.measure.record import DeviceSample, Event, ProgressSample, RunRecord
from migbed.runtime.vcpu import VCpu
from migbed.wire import migration_pb2 as pb
from migbed.wire.channel import CHUNK_BYTES, stream_channel
from migbed.wire.encode import encode_device_data, encode_ram_pages, migrate_stream
from migbed.wire.errors import describe_rpc_error

log = logging.getLogger("migbed.source")

ITERATE_MAX_S = 0.05  # QEMU's ram_save_iterate gives up the thread after 50 ms (MAX_WAIT)
PING_PERIOD_S = 0.1
STOP_PING_SEQ = 1 << 62  # the Ping sent at the stop (the periodic ones count from 1)
SETUP_TIMEOUT_S = 30.0  # the target allocates the guest's RAM before it accepts
_KIND_PB = {"initial": pb.IMAGE_KIND_INITIAL, "middle": pb.IMAGE_KIND_MIDDLE,
            "final": pb.IMAGE_KIND_FINAL}


class MigrationFailed(Exception):
    """Ends a migration as failed (or cancelled); the message goes into the record."""

    def __init__(self, message: str, outcome: str = "failed") -> None:
        super().__init__(message)
        self.outcome = outcome


@dataclass
class TargetDeviceReport:
    loaded_bytes: int = 0
    backlog_bytes: int = 0
    setup_remaining_s: float = 0.0
    initial_loaded: bool = False
    load_rate: float = 0.0
    stop_copy_load_s: float = 0.0
    initial_load_s: float = 0.0


class Guest:
    """The guest as the source runs it: memory, devices, workloads, one vCPU."""

    def __init__(self, scenario: Scenario) -> None:
        g = scenario.guest
        self.memory = GuestMemory(g.ram_size, g.page_size, g.seed)
        self.devices = [SourceDevice(d, seed=g.seed * 1000 + i) for i, d in enumerate(scenario.devices)]
        wl = guest_workload(g.ram_size, g.page_size, g.dirty_rate, g.working_set,
                            g.dirty_pattern == "uniform", g.seed)
        dirtiers = []
        for i, (dev, cfg) in enumerate(zip(self.devices, scenario.devices, strict=True)):
            if dev.blocks and cfg.dirty_rate > 0:
                dwl = Workload(cfg.dirty_rate, cfg.block_size, dev.blocks, dev.blocks, g.seed + 7 + i)
                dirtiers.append((dev.dirty_blocks, dwl))
        self.vcpu = VCpu(self.memory, wl, g.vcpu_tick, dirtiers)

    def resume(self) -> None:
        """Run again after a failed migration, as QEMU's vm_start on failure."""
        for dev in self.devices:
            if dev.state != VfioState.RUNNING:
                dev.set_state(VfioState.RUNNING)
        self.memory.stop_dirty_log()
        self.vcpu.start()


class Migration:
    """One migration run. `run()` returns its RunRecord; never raises for a failed run."""

    def __init__(
        self,
        scenario: Scenario,
        policy: str,
        target_address: str,
        run_id: str,
        labels: dict[str, str] | None = None,
        channel_credentials: grpc.ChannelCredentials | None = None,
        on_sample: Callable[[ProgressSample], None] | None = None,
        on_event: Callable[[Event], None] | None = None,
    ) -> None:
        self.scenario = scenario
        mig = scenario.migration
        self.policy = make_policy(policy, mig.switchover_ack_timeout, mig.ack_timeout_action)
        self.target_address = target_address
        self.credentials = channel_credentials
        self.on_sample = on_sample
        self.on_event = on_event
        labels = dict(labels or {})
        self.record = RunRecord(run_id=run_id, scenario=scenario.name, policy=policy,
                                repeat=int(labels.pop("repeat", "0") or 0), outcome="running",
                                target_address=target_address, labels=labels)
        self.phase = "boot"
        self.guest: Guest | None = None
        self._cancel_reason = ""
        self._cancelled = asyncio.Event()
        # Counters (names as query-migrate).
        self.ram_transferred = 0
        self.device_transferred = 0
        self.precopy_bytes = 0
        self.downtime_bytes = 0
        self.dirty_sync_count = 0
        self.dirty_pages_rate = 0.0
        self.pending = 0
        self.ack_received = False
        self.ack_wait_start: float | None = None
        self.t0 = 0.0
        # Set up by _migrate(); declared here so _finish() can run after any failure.
        self._call: Any = None
        self._offset = OffsetEstimator(same_clock=False)
        self._reports: list[TargetDeviceReport] = []
        self._last_sync: float | None = None

    # ------------------------------------------------------------ public

    def cancel(self, reason: str = "cancelled by the user") -> None:
        self._cancel_reason = reason
        self._cancelled.set()

    def elapsed_ms(self) -> float:
        return (time.monotonic() - self.t0) * 1e3 if self.t0 else 0.0

    async def run(self) -> RunRecord:
        rec = self.record
        try:
            self.guest = await asyncio.to_thread(Guest, self.scenario)
            self.guest.vcpu.start()
            await asyncio.sleep(self.scenario.migration.warmup)
            await self._migrate()
        except MigrationFailed as e:
            rec.outcome, rec.error = e.outcome, str(e)
        except Exception as e:  # a bug must still leave the guest running and a record
            log.exception("migration %s", rec.run_id)
            rec.outcome, rec.error = "failed", f"internal error: {type(e).__name__}: {e}"
        finally:
            await self._finish()
        return rec

    # ------------------------------------------------------------ helpers

    def _event(self, name: str, detail: str = "", at_ms: float | None = None) -> None:
        ev = Event(round(self.elapsed_ms() if at_ms is None else at_ms, 3), name, detail)
        self.record.events.append(ev)
        if self.on_event is not None:
            self.on_event(ev)

    async def _write(self, msg: pb.SourceMessage | bytes) -> None:
        # A write blocks while the peer reads nothing (flow control): bound it by the
        # heartbeat, so a cut link fails the migration instead of hanging it. The first
        # write also waits for the connection (and gRPC's reconnect backoff).
        hb = self.scenario.migration.heartbeat_timeout
        if self.phase == "setup":
            hb = SETUP_TIMEOUT_S
        try:
            async with asyncio.timeout(hb), self._write_lock:
                await self._call.write(msg)
        except TimeoutError:
            raise MigrationFailed(f"target {self.target_address} took no data for {hb:g}s during "
                                  f"{self.phase} (heartbeat-timeout)") from None
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as e:
            # The return path gets the call's real status; a failed write often says only
            # "INTERNAL: Internal error from Core".
            await asyncio.wait(self._tasks[:1], timeout=0.5)
            if self._reader_error:
                raise MigrationFailed(self._reader_error) from None
            why = describe_rpc_error(e) if isinstance(e, grpc.aio.AioRpcError) else str(e)
            raise MigrationFailed(f"lost the target {self.target_address} during {self.phase}: "
                                  f"{why}") from None

    def _check_alive(self) -> None:
        if self._cancelled.is_set():
            raise MigrationFailed(self._cancel_reason, "cancelled")
        if self._reader_error:
            raise MigrationFailed(self._reader_error)
        silent = time.monotonic() - self._last_heard
        # In setup the peer may not be connected yet: SETUP_TIMEOUT_S bounds that wait.
        if silent > self.scenario.migration.heartbeat_timeout and self.phase != "setup":
            raise MigrationFailed(f"target {self.target_address} silent for {silent:.1f}s "
                                  f"(heartbeat-timeout {self.scenario.migration.heartbeat_timeout:g}s)")
        if self.guest is not None and self.guest.vcpu.error is not None:
            raise MigrationFailed(f"vCPU thread died: {self.guest.vcpu.error!r}")

    async def _wait_for(self, what: str, timeout: float | None = None) -> None:
        """Wait until the return path delivers `what`, watching liveness and cancel."""
        deadline = time.monotonic() + timeout if timeout else None
        while what not in self._got:
            self._check_alive()
            if deadline is not None and time.monotonic() > deadline:
                raise MigrationFailed(f"no {what} from the target within {timeout:g}s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._got_changed.wait(), 0.05)
            self._got_changed.clear()

    # ------------------------------------------------------------ return path

    async def _read_return_path(self) -> None:
        try:
            async for msg in self._call:
                self._last_heard = time.monotonic()
                body = msg.WhichOneof("body")
                if body == "pong":
                    got_ns = now_ns()
                    self._offset.add(msg.pong.source_send_ns, msg.pong.target_recv_ns, got_ns)
                    if msg.pong.seq == STOP_PING_SEQ:
                        self.record.stream_rtt_at_stop_ms = (
                            got_ns - msg.pong.source_send_ns) / 1e6
                    continue
                if body == "load_progress":
                    p = msg.load_progress
                    if p.device < len(self._reports):
                        self._reports[p.device] = TargetDeviceReport(
                            p.loaded_bytes, p.backlog_bytes, 0.0, p.initial_loaded,
                            p.measured_load_rate_bytes_per_s, 0.0, p.initial_load_s)
                    continue
                if body == "switchover_ack":
                    self.ack_received = True
                    self._event("switchover-ack")
                self._got[body] = msg
                self._got_changed.set()
            if "verified" not in self._got:
                self._reader_error = "the target ended the stream early"
        except grpc.aio.AioRpcError as e:
            self._reader_error = (f"target refused or failed during {self.phase}: "
                                  f"{describe_rpc_error(e)}")
            if self.phase == "setup" and "[" not in self._reader_error \
                    and "Socket closed" in self._reader_error:
                # TLS 1.3: a server that refuses our certificate just closes the socket.
                self._reader_error += (
                    " [TLS: the target refused this source's certificate (another lab CA?) "
                    "or does not speak TLS]" if self.credentials is not None else
                    " [is the target serving TLS? then start the source with --tls-dir]")
        except asyncio.CancelledError:
            raise
        self._got_changed.set()

    async def _pinger(self) -> None:
        seq = 0
        while True:
            seq += 1
            with contextlib.suppress(Exception):
                await self._write(pb.SourceMessage(ping=pb.Ping(seq=seq, source_send_ns=now_ns())))
            await asyncio.sleep(PING_PERIOD_S)

    # ------------------------------------------------------------ the migration

    async def _migrate(self) -> None:
        assert self.guest is not None
        guest, sc, mig = self.guest, self.scenario, self.scenario.migration
        self.t0 = time.monotonic()
        self.phase = "setup"
        self._write_lock = asyncio.Lock()
        self._got: dict[str, pb.TargetMessage] = {}
        self._got_changed = asyncio.Event()
        self._reader_error = ""
        self._last_heard = time.monotonic()
        self._reports = [TargetDeviceReport() for _ in guest.devices]
        self._channel = stream_channel(self.target_address, self.credentials)
        self._call = migrate_stream(self._channel)  # as the stub; writes also take bytes
        self._tasks = [asyncio.create_task(self._read_return_path())]
        setup = pb.Setup(
            protocol_version=pb.PROTOCOL_VERSION_1, session_id=self.record.run_id,
            guest=pb.GuestShape(ram_bytes=sc.guest.ram_size, page_size=sc.guest.page_size),
            devices=[pb.DeviceShape(name=d.name, initial_bytes=d.initial_bytes,
                                    stop_copy_size=d.stop_copy_size, block_size=d.block_size,
                                    load_setup_time_s=d.load_setup_time,
                                    load_rate_bytes_per_s=d.load_rate,
                                    stop_copy_load_time_s=d.stop_copy_load_time)
                     for d in sc.devices],
            switchover_ack=self.policy.needs_ack, source_boot_id=boot_id(),
            guest_seed=sc.guest.seed, vcpu_tick_s=sc.guest.vcpu_tick,
            dirty_rate_bytes_per_s=sc.guest.dirty_rate, working_set_bytes=sc.guest.working_set,
            uniform_dirtying=sc.guest.dirty_pattern == "uniform", scenario=sc.name,
            policy=self.policy.name, heartbeat_timeout_s=mig.heartbeat_timeout)
        await self._write(pb.SourceMessage(setup=setup))
        await self._wait_for("setup_accepted", SETUP_TIMEOUT_S)
        accepted = self._got["setup_accepted"].setup_accepted
        self._offset = OffsetEstimator(same_clock=bool(accepted.target_boot_id)
                                       and accepted.target_boot_id == boot_id())
        self._event("setup-accepted", f"devices needing ACK: {accepted.devices_needing_ack}")
        self._tasks.append(asyncio.create_task(self._pinger()))

        # QEMU's setup: dirty logging on, every page dirty (bulk stage), devices to PRE_COPY.
        self.bitmap = np.ones(guest.memory.pages, dtype=bool)
        self._cursor = 0
        guest.memory.start_dirty_log()
        for dev in guest.devices:
            dev.set_state(VfioState.PRE_COPY)
        self._next_seq = [0] * len(guest.devices)
        self._marker_sent = [False] * len(guest.devices)
        self.record.setup_time_ms = self.elapsed_ms()
        self.phase = "precopy"
        self._event("precopy")

        limiter = RateLimiter(mig.max_bandwidth)
        est = Estimator(mig.downtime_limit, mig.avail_switchover_bandwidth)
        est.start(time.monotonic())
        self._est = est
        decision_reason, forced = await self._iterate_until_switchover(limiter, est)
        await self._switchover(limiter, decision_reason, forced)

    def _pending_estimate(self) -> int:
        ram = int(self.bitmap.sum()) * self.scenario.guest.page_size
        dev = 0
        for d in self._guest().devices:
            if d.state in PRE_COPY_STATES:
                init, dirty = d.precopy_info()
                dev += init + dirty
        return ram + dev

    def _pending_exact(self) -> int:
        """Sync the dirty log into the bitmap (a dirty-sync round), re-read the devices."""
        g = self._guest()
        log_now = g.memory.sync_dirty_log()
        newly = int((log_now & ~self.bitmap).sum())
        self.bitmap |= log_now
        self._cursor = 0
        now = time.monotonic()
        if self._last_sync is not None and now > self._last_sync:
            # QEMU's dirty-pages-rate counts only pages not already queued.
            self.dirty_pages_rate = newly / (now - self._last_sync)
        self._last_sync = now
        self.dirty_sync_count += 1
        ram = int(self.bitmap.sum()) * self.scenario.guest.page_size
        self._est.on_sync(ram)
        dev = 0
        for d in g.devices:
            dev += d.stop_copy_size()
            if d.state in PRE_COPY_STATES:
                init, dirty = d.precopy_info()
                dev += init + dirty
        return ram + dev

    def _guest(self) -> Guest:
        assert self.guest is not None
        return self.guest

    def _observation(self, pending: int, exact: bool, est: Estimator) -> Observation:
        g = self._guest()
        views = []
        for d, r in zip(g.devices, self._reports, strict=True):
            init, dirty = d.precopy_info() if d.state in PRE_COPY_STATES else (0, 0)
            views.append(DeviceView(d.cfg.name, init, dirty, d.stop_copy_size(), r.backlog_bytes,
                                    r.setup_remaining_s, r.load_rate, r.stop_copy_load_s,
                                    r.initial_loaded))
        now = time.monotonic()
        ack_wait = now - self.ack_wait_start if self.ack_wait_start is not None else 0.0
        return Observation(
            elapsed_s=now - self.t0, pending_bytes=pending, pending_exact=exact,
            threshold_bytes=est.threshold, bandwidth=est.switchover_bandwidth,
            downtime_limit_s=self.scenario.migration.downtime_limit,
            dirty_sync_count=self.dirty_sync_count, ack_received=self.ack_received,
            ack_wait_s=ack_wait, rtt_s=self._offset.last_rtt_ns / 1e9, devices=tuple(views))

    async def _iterate_until_switchover(
        self, limiter: RateLimiter, est: Estimator
    ) -> tuple[str, str]:
        mig = self.scenario.migration
        self._last_sync = None
        while True:
            self._check_alive()
            now = time.monotonic()
            if est.update(now):
                self._sample(est)
            pending = self._pending_estimate()
            exact = False
            if pending < est.threshold:
                pending = self._pending_exact()
                exact = True
            self.pending = pending
            obs = self._observation(pending, exact, est)
            policy_waits = False
            if exact:
                if data_fits(obs) and not self.ack_received and self.ack_wait_start is None:
                    self.ack_wait_start = now
                decision = self.policy.decide(obs)
                if decision.action == "go":
                    self._note_decision(decision.reason, decision.predicted_downtime_s, est)
                    return decision.reason, ""
                if decision.action == "cancel":
                    raise MigrationFailed(decision.reason, "cancelled")
                # Only a wait with the data fitting (the ACK, time-aware's prediction) rests;
                # "pending above threshold" must go on sending, as QEMU does.
                policy_waits = data_fits(obs)
            cap = cap_reached(obs, mig.max_iterations, mig.max_time)
            if cap:
                if mig.cap_action == "cancel":
                    raise MigrationFailed(f"{cap} reached without converging", "cancelled")
                reason = f"{cap} reached: switchover forced"
                self._note_decision(reason, pending / est.bandwidth if est.bandwidth else 0.0, est)
                return reason, cap
            sent = await self._send_iteration(limiter, est)
            if sent == 0 or policy_waits:
                # Nothing to send, or the data fits and the policy waits (for the ACK, or for
                # time-aware's prediction): rest until the window ends, one dirty sync per
                # window. QEMU busy-loops here, syncing as fast as it can, which makes a
                # max-iterations cap fire during the wait and force the setup into downtime.
                wait = limiter.wait(time.monotonic()) or max(
                    0.0, (est.window_start or now) + est.window - time.monotonic())
                await asyncio.sleep(max(wait, 0.001))

    def _note_decision(self, reason: str, predicted_s: float, est: Estimator) -> None:
        rec = self.record
        rec.decision_reason = reason
        # QEMU's expected-downtime (dirty bytes at the last sync / bandwidth), with the sync
        # the decision was just taken on rather than the last window's.
        rec.expected_downtime_ms = self.pending / est.bandwidth * 1e3 if est.bandwidth > 0 else 0.0
        rec.predicted_downtime_ms = predicted_s * 1e3
        if self.ack_wait_start is not None:
            end = time.monotonic()
            ack_t = rec.event_time("switchover-ack")
            if ack_t is not None:
                end = self.t0 + ack_t / 1e3
            rec.switchover_ack_wait_ms = max(0.0, (end - self.ack_wait_start) * 1e3)
        self._event("decision", reason)

    async def _send_iteration(self, limiter: RateLimiter, est: Estimator) -> int:
        """Send RAM then device data until the window's budget is spent or 50 ms pass."""
        sent = 0
        started = time.monotonic()
        while time.monotonic() - started < ITERATE_MAX_S:
            now = time.monotonic()
            allowance = limiter.allowance(now)
            if allowance <= 0:
                wait = limiter.wait(now)
                if wait > 0:
                    await asyncio.sleep(wait)
                break
            n = await self._send_ram_chunk(min(allowance, CHUNK_BYTES), downtime=False)
            if n == 0:
                n = await self._send_device_chunk(min(allowance, CHUNK_BYTES), downtime=False)
            if n == 0:
                break
            limiter.consume(time.monotonic(), n)
            est.on_sent(n)
            sent += n
        return sent

    async def _send_ram_chunk(self, max_bytes: int, downtime: bool) -> int:
        ps = self.scenario.guest.page_size
        want = max(1, max_bytes // ps)
        idx = self._next_dirty_pages(want)
        if idx.size == 0:
            return 0
        self.bitmap[idx] = False
        self._cursor = int(idx[-1]) + 1
        # Encoded by hand: the page bytes are copied once, straight from guest RAM.
        data = self._guest().memory.page_bytes(idx)
        await self._write(encode_ram_pages(idx, data))
        self.ram_transferred += data.nbytes
        self._count(data.nbytes, downtime)
        return data.nbytes

    def _next_dirty_pages(self, want: int) -> np.ndarray:
        """Up to `want` dirty pages from the cursor on, scanning only as far as needed
        (a scan of the whole tail per chunk made the bulk stage quadratic in RAM size)."""
        size = self.bitmap.size
        start = self._cursor
        span = max(4 * want, 4096)
        parts: list[np.ndarray] = []
        got = 0
        while start < size and got < want:
            end = min(size, start + span)
            hit = np.flatnonzero(self.bitmap[start:end])[: want - got]
            if hit.size:
                parts.append(hit + start)
                got += hit.size
            start = end
            span *= 2
        if not parts:
            self._cursor = size
            return np.empty(0, dtype=np.int64)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    async def _send_device_chunk(self, max_bytes: int, downtime: bool) -> int:
        for i, dev in enumerate(self._guest().devices):
            if dev.state not in PRE_COPY_STATES and dev.state != VfioState.STOP_COPY:
                continue
            chunks = dev.read(max_bytes)
            n = 0
            for ch in chunks:
                await self._write(encode_device_data(
                    i, _KIND_PB[ch.kind], self._next_seq[i], ch.offset, ch.data))
                self._next_seq[i] += 1
                n += len(ch.data)
            if dev.initial_sent and not self._marker_sent[i]:
                # VFIO's INIT_DATA_SENT: every initial byte of this device is in the stream.
                self._marker_sent[i] = True
                await self._write(pb.SourceMessage(init_data_sent=pb.InitDataSent(
                    device=i, seq=self._next_seq[i])))
                self._event(f"init-data-sent:{dev.cfg.name}")
            if n:
                self.device_transferred += n
                self._count(n, downtime)
                return n
        return 0

    def _count(self, n: int, downtime: bool) -> None:
        if downtime:
            self.downtime_bytes += n
        else:
            self.precopy_bytes += n

    async def _switchover(self, limiter: RateLimiter, reason: str, forced: str) -> None:
        g, rec = self._guest(), self.record
        rec.forced_by_cap = forced
        self.phase = "stop-copy"
        stop_t = time.monotonic()
        last_tick = g.vcpu.stop()  # vm_stop: downtime starts
        self._event("stop")
        self._stop_t = stop_t
        for dev in g.devices:
            dev.set_state(VfioState.STOP_COPY)
        limiter.enabled = False  # the final copy goes as fast as the link allows
        await self._write(pb.SourceMessage(stop_copy=pb.StopCopy(source_stop_ns=now_ns())))
        # A Ping right behind StopCopy: its round trip is the queue the stop-copy data waits
        # behind (pre-copy bytes still in socket buffers or a shaped link's queue).
        await self._write(pb.SourceMessage(ping=pb.Ping(seq=STOP_PING_SEQ,
                                                        source_send_ns=now_ns())))
        self.bitmap |= g.memory.sync_dirty_log()
        self._cursor = 0
        self.dirty_sync_count += 1
        g.memory.stop_dirty_log()
        while await self._send_ram_chunk(CHUNK_BYTES, downtime=True):
            self._check_alive()
        while await self._send_device_chunk(CHUNK_BYTES, downtime=True):
            self._check_alive()
        await self._write(pb.SourceMessage(complete=pb.Complete(
            source_last_tick_ns=last_tick, ram_pages_sent=self.ram_transferred // g.memory.page_size,
            device_next_seq=self._next_seq)))
        await self._wait_for("received")
        done_t = time.monotonic()
        rec.downtime_ms = (done_t - stop_t) * 1e3  # QEMU: stop -> completion on the source
        self._event("completed")
        self.phase = "completing"
        for dev in g.devices:
            dev.set_state(VfioState.STOP)
        # Digests of the stopped source, outside the downtime (the source stays stopped).
        ram_digest = await asyncio.to_thread(g.memory.digest)
        dev_digests = [await asyncio.to_thread(d.digest) for d in g.devices]
        await self._write(pb.SourceMessage(digests=pb.Digests(ram=ram_digest, devices=dev_digests)))
        await self._wait_for("resumed")
        resumed = self._got["resumed"].resumed
        off = self._offset.estimate()
        rec.clock_offset_ns, rec.same_clock = off.offset_ns, off.same_clock
        first_tick_source_clock = resumed.target_first_tick_ns - off.offset_ns
        rec.guest_downtime_ms = (first_tick_source_clock - last_tick) / 1e6
        rec.guest_downtime_uncertainty_ms = (off.uncertainty_ns + g.vcpu.tick_ns) / 1e6
        self._event("resumed", f"{rec.guest_downtime_ms:.1f} ms after the last source tick",
                    at_ms=(first_tick_source_clock - int(self.t0 * 1e9)) / 1e6)
        rec.device_initial_load_ms = {
            d.cfg.name: s * 1e3 for d, s in zip(g.devices, resumed.device_initial_load_s, strict=False)}
        await self._wait_for("verified")
        v = self._got["verified"].verified
        mismatches = []
        if v.ram != ram_digest:
            mismatches.append("RAM")
        mismatches += [d.cfg.name for d, mine, theirs in zip(g.devices, dev_digests, v.devices,
                                                               strict=False) if mine != theirs]
        if not v.ok or mismatches:
            raise MigrationFailed(f"target state differs from the source: {v.detail or mismatches}")
        rec.verified = True
        rec.outcome = "completed"
        self.phase = "done"

    def _sample(self, est: Estimator) -> None:
        g = self._guest()
        devs = []
        for d, r in zip(g.devices, self._reports, strict=True):
            init, dirty = d.precopy_info() if d.state in PRE_COPY_STATES else (0, 0)
            devs.append(DeviceSample(d.cfg.name, d.state.name, init, dirty, r.loaded_bytes,
                                     r.backlog_bytes, r.setup_remaining_s, r.initial_loaded))
        s = ProgressSample(
            t_ms=round(self.elapsed_ms(), 3), phase=self.phase,
            ram_remaining_bytes=int(self.bitmap.sum()) * self.scenario.guest.page_size,
            ram_transferred_bytes=self.ram_transferred,
            device_transferred_bytes=self.device_transferred,
            dirty_sync_count=self.dirty_sync_count, bandwidth_bytes_per_s=est.bandwidth,
            threshold_bytes=est.threshold, expected_downtime_ms=est.expected_downtime * 1e3,
            dirty_pages_rate=self.dirty_pages_rate, pending_bytes=self.pending,
            ack_received=self.ack_received, devices=devs)
        self.record.timeline.append(s)
        if self.on_sample is not None:
            self.on_sample(s)

    # ------------------------------------------------------------ the end, either way

    async def _finish(self) -> None:
        rec = self.record
        rec.total_time_ms = self.elapsed_ms()
        rec.dirty_sync_count = self.dirty_sync_count
        rec.precopy_bytes, rec.downtime_bytes = self.precopy_bytes, self.downtime_bytes
        rec.ram_transferred_bytes = self.ram_transferred
        rec.device_transferred_bytes = self.device_transferred
        for t in getattr(self, "_tasks", []):
            t.cancel()
        call = getattr(self, "_call", None)
        if call is not None:
            if rec.outcome != "completed":
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._call.write(pb.SourceMessage(
                        abort=pb.Abort(reason=rec.error[:500]))), 0.5)
                call.cancel()
            else:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(call.done_writing(), 1.0)
        channel = getattr(self, "_channel", None)
        if channel is not None:
            await channel.close(grace=0.5)
        g = self.guest
        if g is None:
            return
        if rec.outcome == "completed":
            g.vcpu.stop()  # the guest lives on the target now
        else:
            g.resume()  # QEMU: a failed or cancelled migration leaves the VM running
            self._event("source-resumed", rec.error)
            await asyncio.sleep(0.05)
            rec.source_guest_running_after = g.vcpu.running and g.vcpu.ticks > 0
            g.vcpu.stop()
            bad = await asyncio.to_thread(g.memory.check_integrity)
            rec.source_integrity_ok = not bad
            if bad:
                rec.error += f"; source pages corrupt: {bad[:5]}"
        rec.events.sort(key=lambda e: e.t_ms)
        self.guest = None  # free the guest's memory
