"""The source's migration engine: QEMU's pre-copy migration over a real gRPC stream.

One Migration boots a guest from the scenario, lets it run (warm-up), then migrates it
through its phases, each in its own module:

  setup       (here) open the link, send the guest/device shape and the capabilities,
              wait for SetupAccepted; dirty logging on with the first sync, devices to
              PRE_COPY (ram_init_bitmaps, vfio_save_setup)
  pre-copy    precopy.py: iterate until the policy says go (or a cap forces it)
  switchover  switchover.py: stop, stop-copy, completion; then resume and verify
  failure     (here) at any point before Verified: the guest runs again on the source,
              devices back to RUNNING, the record says why (QEMU restarts the VM on failure)

The parts: link.py (main stream, return path, liveness), scanner.py (dirty bitmap),
transport.py (how RAM pages travel), devices.py (device data), recorder.py (the one
writer of the run record). The policy is pure (migbed/core/policy.py).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import TypeVar

import grpc

from migbed.core.clock import boot_id
from migbed.core.device import SourceDevice
from migbed.core.dilation import (
    dilate_scenario,
    in_virtual_time,
    real_seconds,
    undilate,
    undilate_scenario,
)
from migbed.core.drivers import driver_profile
from migbed.core.estimator import Estimator
from migbed.core.policy import make_policy
from migbed.core.qemu_profile import qemu_profile
from migbed.core.ratelimit import WINDOW_S, RateLimiter
from migbed.core.scenario import Scenario
from migbed.measure.record import Event, ProgressSample, RunRecord
from migbed.runtime.guest import RunningGuest, boot_source_guest, resume_source_guest
from migbed.wire import migration_pb2 as pb

from .counters import Counters
from .devices import DeviceStreams
from .failure import MigrationFailed
from .link import SETUP_TIMEOUT_S, Link
from .parts import Parts
from .precopy import Precopy
from .recorder import Recorder
from .scanner import RATE_PERIOD_S, PageScanner
from .switchover import Switchover
from .transport import MainChannelRam, MultifdRam, RamTransport

log = logging.getLogger("migbed.source")
T = TypeVar("T")

# Past completion (the Shut, or the last byte without the return path) a cancel comes too
# late: QEMU honours migrate_cancel until migration_completion_end, not after.
COMPLETING = ("completing", "done")
_TRANSFER_PB = {"main": pb.DEVICE_STATE_TRANSFER_MAIN, "multifd": pb.DEVICE_STATE_TRANSFER_MULTIFD}
_LOAD_TRIGGER_PB = {"image-complete": pb.LOAD_TRIGGER_IMAGE_COMPLETE,
                    "per-chunk": pb.LOAD_TRIGGER_PER_CHUNK, "on-stop": pb.LOAD_TRIGGER_ON_STOP}


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
        multifd_ssl: ssl.SSLContext | None = None,
    ) -> None:
        # Time dilation (core/dilation.py): the parts run the scenario K times slower; what
        # leaves the engine (samples, events, the record) is divided back into virtual time.
        self.k = scenario.time_dilation
        virtual = undilate_scenario(scenario) if scenario.dilated else scenario
        self.scenario = scenario = dilate_scenario(virtual) if self.k != 1.0 else virtual
        on_sample, on_event = self._virtual(on_sample), self._virtual(on_event)
        self.multifd_ssl = multifd_ssl  # the multifd channels' TLS (the main channel's lab CA)
        mig = scenario.migration
        # The policy decides on the virtual view (its reasons read in virtual time).
        self.policy = in_virtual_time(make_policy(
            policy, virtual.migration.switchover_ack_timeout, mig.ack_timeout_action), self.k)
        self.profile = qemu_profile(mig.qemu_version)
        # QEMU refuses switchover-ack without the return path: a policy that needs the ACK
        # turns it on (the record says what was in effect).
        self.return_path = mig.return_path or self.policy.needs_ack
        self.target_address = target_address
        labels = dict(labels or {})
        record = RunRecord(run_id=run_id, scenario=scenario.name, policy=policy,
                           repeat=int(labels.pop("repeat", "0") or 0), outcome="running",
                           target_address=target_address, labels=labels,
                           time_dilation=self.k)
        self.recorder = Recorder(record, on_sample, on_event)
        self.link = Link(target_address, channel_credentials, mig.heartbeat_timeout,
                         len(scenario.devices), self.k)
        self.counters = Counters()
        self.phase = "boot"
        self.guest: RunningGuest[SourceDevice] | None = None
        self.parts: Parts | None = None
        self.precopy: Precopy | None = None
        self.cancel_reason = ""

    @property
    def record(self) -> RunRecord:
        """The record as it is being written: in the run's real time (see run())."""
        return self.recorder.record

    def _virtual(self, callback: Callable[[T], None] | None) -> Callable[[T], None] | None:
        """`callback` fed the virtual-time copy of each sample or event."""
        if callback is None or self.k == 1.0:
            return callback
        k, call = self.k, callback
        return lambda item: call(undilate(item, k))

    # ------------------------------------------------------------ public

    def cancel(self, reason: str = "cancelled by the user") -> tuple[bool, str]:
        """Ask the run to stop. Returns (accepted, state). Accepted until completion: the
        run then ends cancelled, its guest running on the source. Refused once completed
        (the run goes on to verify and its record says completed)."""
        if self.phase in COMPLETING or self.link.completed:
            return False, "completing"  # `migbed cancel` prints "already completing"
        if self.phase == "ended":
            return False, self.record.outcome
        if not self.cancel_reason:
            self.cancel_reason = reason
            self.link.cancel(reason)  # a write blocked on flow control ends too
        return True, self.phase

    async def run(self) -> RunRecord:
        try:
            self.guest = await asyncio.to_thread(boot_source_guest, self.scenario)
            self.guest.vcpu.start()
            await asyncio.sleep(self.scenario.migration.warmup)
            self.check()
            await self._migrate(self.guest)
        except MigrationFailed as e:
            self.recorder.ended(e.outcome, self._first_cause(e))
        except Exception as e:  # a bug must still leave the guest running and a record
            log.exception("migration %s", self.record.run_id)
            self.recorder.ended("failed", f"internal error: {type(e).__name__}: {e}")
        finally:
            await self._finish()
        return self._virtual_record()

    def _first_cause(self, e: MigrationFailed) -> str:
        """The failure's text, led by a dropped multifd channel when there is one: the target
        ends the main stream because of it, and that end may surface first, from check() or
        a write, as a bare transport error that names nothing (gRPC's "Internal error from
        Core"). Every failure passes here, whichever path raised it."""
        if e.outcome != "failed" or self.parts is None:
            return str(e)
        try:
            self.parts.ram.check()
        except MigrationFailed as channel:
            if str(channel) not in str(e):
                return f"{channel} (then: {e})"
        return str(e)

    def _virtual_record(self) -> RunRecord:
        """The finished record in virtual time. The decision's reason is the policy's, which
        decides in virtual time; an error's text keeps the run's real seconds."""
        if self.k == 1.0:
            return self.record
        rec = undilate(self.record, self.k)
        if rec.error:
            rec.error += f" (seconds in this message are the run's real ones: time-dilation {self.k:g})"
        return rec

    def check(self) -> None:
        """Raise MigrationFailed on a cancel, a lost target or a dead vCPU."""
        if self.cancel_reason and self.phase not in COMPLETING and not self.link.completed:
            raise MigrationFailed(self.cancel_reason, "cancelled")
        if self.phase not in ("boot",):
            self.link.check_alive()
        if self.guest is not None and self.guest.error is not None:
            raise MigrationFailed(f"vCPU thread died: {self.guest.error!r}")
        if self.parts is not None:
            self.parts.ram.check()  # a dropped multifd channel fails the run at once

    def _set_phase(self, phase: str) -> None:
        self.phase = phase
        self.link.phase = phase
        if self.precopy is not None:
            self.precopy.phase = phase

    # ------------------------------------------------------------ the migration

    async def _migrate(self, guest: RunningGuest[SourceDevice]) -> None:
        mig = self.scenario.migration
        self.recorder.start(self.return_path, self.profile.version, mig.device_state_transfer)
        self.record.device_drivers = {d.name: d.driver for d in self.scenario.devices}
        self._set_phase("setup")
        self.link.open()
        await self.link.write(pb.SourceMessage(setup=self._setup_message()))
        accepted = (await self.link.wait_for("setup_accepted", self.check,
                                             SETUP_TIMEOUT_S)).setup_accepted
        self.link.accepted(accepted)
        self.recorder.destination_ready()
        self.recorder.event("setup-accepted",
                            f"devices needing ACK: {accepted.devices_needing_ack}")
        parts = self._parts(guest, await self._ram_transport(guest, accepted))
        self.parts = parts
        # QEMU's setup: dirty logging on and the first sync (ram_init_bitmaps, with the
        # device trackers' report); with multifd, ram_save_setup also flushes and syncs the
        # channels once; each device's vfio_save_setup (PRE_COPY if supported).
        parts.scanner.start()
        await parts.devices.tracker_report(self.scenario.guest.ram_size)
        await parts.ram.round_done()
        parts.devices.save_setup()
        self.recorder.setup_done()
        self.precopy = Precopy(parts)
        self.link.on_ack = self.precopy.on_ack
        if "switchover_ack" in self.link.got:  # sent at once: no device needed one
            self.precopy.on_ack()
        self._set_phase("precopy")
        self.recorder.event("precopy")
        switch = await self.precopy.run()
        self.recorder.decision(switch.reason, switch.basis, switch.forced_by_cap,
                               parts.estimator.expected_downtime,
                               switch.predicted_downtime_s, self.precopy.ack_wait_s())
        self.check()  # nothing awaits between this check and the stop
        self._set_phase("stop-copy")
        switchover = Switchover(parts)
        await switchover.stop_copy()
        self._set_phase("completing")
        await switchover.resume_and_verify()
        self._set_phase("done")

    def _setup_message(self) -> pb.Setup:
        sc, mig = self.scenario, self.scenario.migration
        return pb.Setup(
            protocol_version=pb.PROTOCOL_VERSION_1, session_id=self.record.run_id,
            guest=pb.GuestShape(ram_bytes=sc.guest.ram_size, page_size=sc.guest.page_size),
            devices=[pb.DeviceShape(
                name=d.name, initial_bytes=d.initial_bytes, stop_copy_size=d.stop_copy_size,
                block_size=d.block_size, load_setup_time_s=d.load_setup_time,
                load_rate_bytes_per_s=d.load_rate, stop_copy_load_time_s=d.stop_copy_load_time,
                load_trigger=_LOAD_TRIGGER_PB[d.load_trigger],
                config_load_time_s=d.config_load_time, device_state_bytes=d.device_state_size,
                no_pre_copy=not driver_profile(d.driver).pre_copy, resume_time_s=d.resume_time)
                for d in sc.devices],
            switchover_ack=self.policy.needs_ack, source_boot_id=boot_id(),
            guest_seed=sc.guest.seed, vcpu_tick_s=sc.guest.vcpu_tick,
            dirty_rate_bytes_per_s=sc.guest.dirty_rate, working_set_bytes=sc.guest.working_set,
            uniform_dirtying=sc.guest.dirty_pattern == "uniform", scenario=sc.name,
            policy=self.policy.name, heartbeat_timeout_s=mig.heartbeat_timeout,
            return_path=self.return_path, qemu_version=self.profile.version,
            multifd_channels=mig.multifd_channels if mig.multifd else 0,
            device_state_transfer=_TRANSFER_PB[mig.device_state_transfer],
            time_dilation=self.k)

    async def _ram_transport(self, guest: RunningGuest[SourceDevice],
                             accepted: pb.SetupAccepted) -> RamTransport:
        mig = self.scenario.migration
        if not mig.multifd:
            return MainChannelRam(self.link, guest.memory)
        if not accepted.multifd_port:
            raise MigrationFailed(f"migration.multifd = true, but target {self.target_address} "
                                  "serves no multifd channels (setup_accepted.multifd_port = 0)")
        if self.link.credentials is not None and self.multifd_ssl is None:
            raise MigrationFailed("migration.multifd = true: the main channel uses TLS but this "
                                  "source has no TLS context for multifd channels")
        host = self.target_address.rpartition(":")[0].strip("[]")
        ram = MultifdRam(self.link, guest.memory, host, accepted.multifd_port,
                         bytes(accepted.multifd_token), mig.multifd_channels,
                         mig.heartbeat_timeout, self.multifd_ssl)
        await ram.connect()
        self.recorder.multifd(mig.multifd_channels)
        return ram

    def _parts(self, guest: RunningGuest[SourceDevice], ram: RamTransport) -> Parts:
        mig = self.scenario.migration
        avail = mig.avail_switchover_bandwidth if self.profile.avail_switchover_bandwidth else 0.0
        return Parts(
            scenario=self.scenario, profile=self.profile, policy=self.policy,
            return_path=self.return_path, guest=guest, link=self.link,
            scanner=PageScanner(guest.memory, real_seconds(RATE_PERIOD_S, self.k)), ram=ram,
            devices=DeviceStreams(self.link, guest.devices, self.counters,
                                  lambda name: self.recorder.event(f"init-data-sent:{name}")),
            counters=self.counters, recorder=self.recorder,
            limiter=RateLimiter(mig.max_bandwidth, real_seconds(WINDOW_S, self.k)),
            estimator=Estimator(mig.downtime_limit, avail, real_seconds(WINDOW_S, self.k)),
            check=self.check)

    # ------------------------------------------------------------ the end, either way

    async def _finish(self) -> None:
        rec, parts = self.record, self.parts
        completed = rec.outcome == "completed"
        self._set_phase("ended")
        self.recorder.counters(self.counters, parts.scanner.dirty_sync_count if parts else 0,
                               self.link.stop_ping_rtt_ms)
        if parts is not None:
            self.recorder.multifd_stats(*parts.ram.stats())
            parts.ram.close(completed)
        await self.link.close(completed, rec.error)
        g = self.guest
        if g is not None:
            if completed:
                g.vcpu.stop()  # the guest lives on the target now
            else:
                await self._resume_source(g)
        self.recorder.close()
        # Free the guest's memory: the parts (scanner, RAM transport, pre-copy) hold it too,
        # in reference cycles only the cyclic GC would break, seconds or runs later.
        self.guest = None
        self.parts = None
        self.precopy = None

    async def _resume_source(self, g: RunningGuest[SourceDevice]) -> None:
        """QEMU: a failed or cancelled migration leaves the VM running (and intact)."""
        resume_source_guest(g)
        self.recorder.event("source-resumed", self.record.error)
        await asyncio.sleep(real_seconds(0.05, self.k))  # 50 vCPU ticks at the default tick
        running = g.vcpu.running and g.vcpu.ticks > 0
        g.vcpu.stop()
        bad = await asyncio.to_thread(g.memory.check_integrity)
        self.recorder.source_after_failure(running, bad)
