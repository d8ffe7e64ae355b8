"""Switchover: stop the guest, send what is left, complete; then resume and verify.

  stop-copy   vm_stop (downtime starts): each device to STOP_COPY in turn (a synchronous
              driver's save runs inside that arc, an asynchronous one's starts there and
              overlaps what follows); the rate limit off; the final dirty sync (with the
              device trackers' report); the rest of RAM; then each device in turn: the rest
              of an image begun in pre-copy, its final image once its save is done, its
              non-iterable state; Complete (the last byte).
  completion  with the return path, when the target's Shut arrives (it has loaded every
              device); without it, when the last byte is written (QEMU's
              migration_completion -> close_return_path_on_source -> migration_completion_end).
              Downtime and total-time end here.
  resume      digests of the stopped source go out (outside the downtime); the target's
              Resumed (first tick there) gives the guest downtime; its Verified proves the
              state equal.
"""

from __future__ import annotations

import asyncio

from migbed.core.clock import now_ns
from migbed.core.device import VfioState
from migbed.runtime.gcpause import DOWNTIME_GC_PAUSE
from migbed.wire import migration_pb2 as pb

from .device_state import MultifdDeviceState
from .failure import MigrationFailed
from .link import STOP_PING_SEQ
from .parts import Parts
from .recorder import StopCopyTimes, TargetTimes
from .transport import MultifdRam, send_scan

INITIAL_REPORT_WAIT_S = 0.25  # five of the target's progress periods


class Switchover:
    def __init__(self, parts: Parts) -> None:
        self.p = parts
        self.times: StopCopyTimes | None = None
        self.parallel: MultifdDeviceState | None = None
        if parts.scenario.migration.device_state_transfer == "multifd":
            if not isinstance(parts.ram, MultifdRam):  # the scenario check makes this a bug
                raise MigrationFailed("device-state-transfer = multifd without multifd channels")
            self.parallel = MultifdDeviceState(parts.ram, parts.devices, parts.check)

    async def stop_copy(self) -> StopCopyTimes:
        """From the stop to completion; returns what was measured. No garbage collection
        runs in this process meanwhile (runtime/gcpause.py)."""
        DOWNTIME_GC_PAUSE.hold()
        try:
            return await self._stop_copy()
        finally:
            DOWNTIME_GC_PAUSE.release()

    async def _stop_copy(self) -> StopCopyTimes:
        p = self.p
        last_tick = p.guest.vcpu.stop()  # vm_stop: downtime starts
        stop_ns = now_ns()
        p.recorder.event("stop")
        await p.devices.stop_devices()
        p.limiter.enabled = False  # the final copy goes as fast as the link allows
        await p.link.write(pb.SourceMessage(stop_copy=pb.StopCopy(source_stop_ns=stop_ns)))
        # A Ping right behind StopCopy: its round trip is the queue the stop-copy data waits
        # behind (pre-copy bytes still in socket buffers or a shaped link's queue).
        await p.link.ping(STOP_PING_SEQ)
        p.scanner.final_sync()
        # ram_save_complete's sync asks the device trackers too: inside the downtime.
        report_s = await p.devices.tracker_report(p.scenario.guest.ram_size)
        ram_sent_ns = await self._send_rest()
        await p.link.write(pb.SourceMessage(complete=pb.Complete(
            source_last_tick_ns=last_tick, ram_pages_sent=p.ram.pages_sent,
            device_next_seq=p.devices.next_seq)))
        last_byte = now_ns()
        completion = last_byte
        if not p.return_path:
            p.link.completed = True  # QEMU completes here without the return path
        if p.return_path:
            completion = await self._wait_shut()
        self.times = StopCopyTimes(last_tick, stop_ns, last_byte, completion, ram_sent_ns,
                                   report_s)
        p.recorder.stop_copy(self.times)
        p.recorder.device_stop_copy([d.cfg.name for d in p.guest.devices],
                                    p.devices.save_times, stop_ns)
        return self.times

    async def _send_rest(self) -> int:
        """RAM, then each device in turn on the main stream; or, with QEMU 10's multifd
        device state, every device's state queued on the multifd channels beside the RAM's
        final pass. Returns when RAM's last byte was written (CLOCK_MONOTONIC ns)."""
        if self.parallel is None:
            await self._send_ram()
            ram_sent = now_ns()
            await self._send_devices()
            return ram_sent
        devices = asyncio.ensure_future(self.parallel.send())
        try:
            await self._send_ram()
            ram_sent = now_ns()
            await devices
            return ram_sent
        finally:
            devices.cancel()

    async def _send_ram(self) -> None:
        p = self.p
        want = max(1, p.ram.batch_bytes // p.scanner.page_size)
        while True:  # until a search goes round RAM and finds nothing (it syncs on the way)
            scan = p.scanner.take(want)
            p.counters.ram(await send_scan(p.ram, scan), downtime=True)
            p.check()
            if scan.clean:
                break

    async def _send_devices(self) -> None:
        """Each device in turn on the main channel (qemu_savevm_state_complete_precopy)."""
        for i in range(len(self.p.guest.devices)):
            await self.p.devices.save_device(i)
            self.p.check()

    async def _wait_shut(self) -> int:
        """MIG_RP_MSG_SHUT: the target has loaded everything. Returns its arrival (ns)."""
        link = self.p.link
        await link.wait_for("shut", self.p.check)
        return link.got_at_ns["shut"]

    # ------------------------------------------------------------ after completion

    async def resume_and_verify(self) -> None:
        p, times = self.p, self.times
        assert times is not None
        for dev in p.guest.devices:
            dev.set_state(VfioState.STOP)
        # Digests of the stopped source, outside the downtime (the source stays stopped).
        ram_digest = await asyncio.to_thread(p.guest.memory.digest)
        dev_digests = [await asyncio.to_thread(d.digest, config)
                       for d, config in zip(p.guest.devices, p.devices.config, strict=True)]
        await p.link.write(pb.SourceMessage(digests=pb.Digests(ram=ram_digest,
                                                               devices=dev_digests)))
        resumed = (await p.link.wait_for("resumed", p.check)).resumed
        received = (await p.link.wait_for("received", p.check)).received
        shut = p.link.got.get("shut")  # absent without the return path
        loads_done = shut.shut.target_loads_done_ns if shut else resumed.target_loads_done_ns
        p.recorder.resumed(times, TargetTimes(received.target_recv_ns, loads_done,
                                              resumed.target_devices_running_ns,
                                              resumed.target_first_tick_ns),
                           p.link.offset.estimate(), p.guest.vcpu.tick_ns)
        p.recorder.device_initial_loads([d.cfg.name for d in p.guest.devices],
                                        list(resumed.device_initial_load_s))
        v = (await p.link.wait_for("verified", p.check)).verified
        mismatches = [] if v.ram == ram_digest else ["RAM"]
        mismatches += [d.cfg.name for d, mine, theirs in zip(
            p.guest.devices, dev_digests, v.devices, strict=False) if mine != theirs]
        if not v.ok or mismatches:
            raise MigrationFailed(f"target state differs from the source: {v.detail or mismatches}")
        p.recorder.verified()
        # The target reports a device's initial data loaded within a progress period of the
        # marker; a report still on its way (legacy's stop right after the load) is awaited.
        marked = [i for i, v in enumerate(p.devices.vfio) if v.initial_data_sent]
        await p.link.initial_loads_reported(marked, INITIAL_REPORT_WAIT_S)
        p.recorder.initial_loaded([d.cfg.name for d in p.guest.devices], p.link.initial_loaded_ns,
                                  p.link.offset.estimate())
