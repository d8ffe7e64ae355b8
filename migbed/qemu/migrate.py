"""One real-QEMU migration of the comparison guest, configured from a migbed scenario.

Source and destination are two QEMU processes on this machine; the stream goes over
loopback TCP. Parameters and capabilities are set through QMP on both sides as QEMU needs
them (capabilities and multifd-channels on both, the rate and downtime knobs on the source),
query-migrate is polled every 50 ms and every sample is kept (guestperf does the same).
After completion the destination guest must keep ticking and answer a page check with no
bad page.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from migbed.core.scenario import MiB, Scenario
from migbed.qemu.initramfs import guest_initramfs
from migbed.qemu.install import GuestFiles
from migbed.qemu.serial import ConsoleReader, Stall, event_monotonic_ns, measure_stall, split_stall
from migbed.qemu.vm import QemuRunError, Vm, VmSpec, running_vm

# QMP events carry the host's realtime clock, console lines our monotonic one.
_REALTIME_MINUS_MONOTONIC_NS = time.time_ns() - time.monotonic_ns()
POLL_S = 0.05
TICK_MS = 5
KERNEL_OVERHEAD = 96 * MiB  # the Debian kernel needs this much beside the guest's buffer


@dataclass(frozen=True)
class QemuSettings:
    """What QEMU is told, derived from the scenario in one place (`settings_for`)."""

    ram_size: int  # the scenario's ram-size: the guest's non-zero memory, kernel + program
    buffer_size: int  # the guest program's buffer: ram-size less the kernel's footprint
    memory_mib: int  # -m: ram-size plus room for the kernel
    working_set: int
    dirty_rate: int  # bytes/s
    seed: int  # of the guest's page choice
    max_bandwidth: int  # bytes/s
    downtime_limit_ms: int
    avail_switchover_bandwidth: int  # bytes/s, 0 = unset
    return_path: bool
    multifd: bool
    multifd_channels: int
    warmup_s: float
    max_time_s: float  # 0 = the harness's own limit

    def capabilities(self) -> list[dict[str, Any]]:
        return [{"capability": "return-path", "state": self.return_path},
                {"capability": "multifd", "state": self.multifd}]

    def source_parameters(self) -> dict[str, Any]:
        params: dict[str, Any] = {"max-bandwidth": self.max_bandwidth,
                                  "downtime-limit": self.downtime_limit_ms,
                                  "avail-switchover-bandwidth": self.avail_switchover_bandwidth}
        if self.multifd:
            params["multifd-channels"] = self.multifd_channels
        return params

    def kernel_append(self) -> str:
        return (f"console=ttyS0 quiet panic=-1 MB_MEM={self.buffer_size} MB_WS={self.working_set} "
                f"MB_RATE={self.dirty_rate} MB_SEED={self.seed} MB_TICK_MS={TICK_MS}")


def memory_mib_for(ram_size: int) -> int:
    return -(-(ram_size + KERNEL_OVERHEAD + ram_size // 64) // MiB)


def settings_for(sc: Scenario, kernel_footprint: int) -> QemuSettings:
    """QEMU's knobs for the scenario. The guest's non-zero memory is made equal to ram-size
    (migbed's simulated guest has no zero page): the program's buffer is ram-size less
    `kernel_footprint`, the non-zero bytes the idle kernel itself makes QEMU send."""
    m = sc.migration
    buffer = (sc.guest.ram_size - kernel_footprint) // 4096 * 4096
    if buffer < sc.guest.working_set:
        raise QemuRunError(
            f"guest.ram-size = {sc.guest.ram_size >> 20} MiB is too small for the QEMU comparison: "
            f"its kernel holds {kernel_footprint / MiB:.0f} MiB, leaving {max(buffer, 0) >> 20} MiB "
            f"for a working-set of {sc.guest.working_set >> 20} MiB")
    return QemuSettings(
        ram_size=sc.guest.ram_size, buffer_size=buffer, memory_mib=memory_mib_for(sc.guest.ram_size),
        working_set=buffer if sc.guest.dirty_pattern == "uniform" else sc.guest.working_set,
        dirty_rate=int(sc.guest.dirty_rate), seed=sc.guest.seed,
        max_bandwidth=int(m.max_bandwidth), downtime_limit_ms=max(1, round(m.downtime_limit * 1e3)),
        avail_switchover_bandwidth=int(m.avail_switchover_bandwidth),
        # Keys another part of migbed is adding; read with their QEMU/libvirt defaults.
        return_path=bool(getattr(m, "return_path", True)),
        multifd=bool(getattr(m, "multifd", False)),
        multifd_channels=int(getattr(m, "multifd_channels", 2)),
        warmup_s=m.warmup, max_time_s=m.max_time)


@dataclass
class QemuRecord:
    """One real-QEMU migration: inputs, every query-migrate sample, the guest's evidence."""

    qemu_version: str
    accel: str
    settings: dict[str, Any]
    outcome: str = "failed"  # completed | failed
    error: str = ""
    qemu_semver: list[int] = field(default_factory=list)  # e.g. [10, 0, 2]
    kernel_footprint_bytes: int = 0  # non-zero bytes of the idle kernel (see kernel_footprint)
    boot_s: float = 0.0  # QEMU start -> the guest's R line (memory touched)
    samples: list[dict[str, Any]] = field(default_factory=list)  # {"t_ms": host, "info": query-migrate}
    final: dict[str, Any] = field(default_factory=dict)  # query-migrate at completion
    stall: dict[str, Any] | None = None
    stall_parts: dict[str, float] | None = None  # see serial.split_stall
    source_events: list[dict[str, Any]] = field(default_factory=list)  # QMP events
    destination_events: list[dict[str, Any]] = field(default_factory=list)
    destination_ticks_after: int = 0  # ticks the destination printed after resuming
    destination_pages_checked: int = 0
    destination_bad_pages: int = -1  # -1: no check answered
    source_console_tail: str = ""
    destination_console_tail: str = ""

    @property
    def intact(self) -> bool:
        return self.destination_pages_checked > 0 and self.destination_bad_pages == 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _wait_for(what: str, vm: Vm, check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        vm.check_alive()
        time.sleep(0.02)
    raise QemuRunError(f"{vm.spec.name}: {what} not within {timeout:g}s; console ends with:\n"
                       f"{vm.console.tail(8)}")


def _configure(vm: Vm, s: QemuSettings, source: bool) -> None:
    vm.qmp("migrate-set-capabilities", capabilities=s.capabilities())
    if source:
        vm.qmp("migrate-set-parameters", **s.source_parameters())
    elif s.multifd:
        vm.qmp("migrate-set-parameters", **{"multifd-channels": s.multifd_channels})


def _poll(source: Vm, record: QemuRecord, limit_s: float) -> dict[str, Any]:
    start = time.monotonic()
    while True:
        info = source.qmp("query-migrate")
        record.samples.append({"t_ms": (time.monotonic() - start) * 1e3, "info": info})
        status = info.get("status")
        if status in ("completed", "failed", "cancelled"):
            return dict(info)
        if time.monotonic() - start > limit_s:
            with contextlib.suppress(QemuRunError):
                source.qmp("migrate_cancel")
            raise QemuRunError(f"QEMU migration not finished in {limit_s:g}s (status {status}, "
                               f"remaining {info.get('ram', {}).get('remaining')} bytes): cancelled")
        time.sleep(POLL_S)


def _check_destination(dest: Vm, record: QemuRecord, src_console: ConsoleReader) -> None:
    """The destination keeps ticking from where the source stopped and its pages verify."""
    last_src = src_console.snapshot_ticks()[-1].seq if src_console.ticks else -1
    fresh = lambda: [t for t in dest.console.snapshot_ticks() if t.seq > last_src]  # noqa: E731
    _wait_for("the destination guest ticking after the switchover", dest,
              lambda: len(fresh()) >= 20, 30)
    dest.console.send("v\n")
    verdict = _wait_for("the destination guest's page check", dest,
                        lambda: dest.console.verdicts[-1] if dest.console.verdicts else None, 60)
    record.destination_ticks_after = len(fresh())
    record.destination_pages_checked = verdict.pages
    record.destination_bad_pages = verdict.bad_pages


def _stall_parts(record: QemuRecord, src: ConsoleReader, dst: ConsoleReader) -> dict[str, float] | None:
    stop = [e for e in record.source_events if e.get("event") == "STOP"]
    resume = [e for e in record.destination_events if e.get("event") == "RESUME"]
    if not record.stall or not stop or not resume:
        return None
    last_src = next(t for t in src.snapshot_ticks() if t.seq == record.stall["last_source_seq"])
    first_dst = next(t for t in dst.snapshot_ticks() if t.seq == record.stall["first_destination_seq"])
    return split_stall(last_src.host_ns, first_dst.host_ns,
                       event_monotonic_ns(stop[-1], _REALTIME_MINUS_MONOTONIC_NS),
                       event_monotonic_ns(resume[-1], _REALTIME_MINUS_MONOTONIC_NS))


def _source_after_failure(source: Vm) -> str:
    """QEMU restarts the source VM when a migration fails: show that the guest goes on."""
    before = len(source.console.snapshot_ticks())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if len(source.console.snapshot_ticks()) >= before + 5:
            return "the source guest is running again"
        time.sleep(0.05)
    return "the source guest did NOT resume"


def _boot(source: Vm, s: QemuSettings, boot_timeout: float, started: float) -> float:
    ready = _wait_for("the guest booting and touching its memory", source,
                      lambda: source.console.ready, boot_timeout)
    if ready.pages != s.buffer_size // 4096:
        raise QemuRunError(f"guest owns {ready.pages} pages, expected {s.buffer_size // 4096}")
    return time.monotonic() - started


def migrate_pair(s: QemuSettings, files: GuestFiles, workdir: Path, accel: str = "tcg",
                 boot_timeout: float = 90.0, tag: str = "migbed",
                 check_destination: bool = True) -> QemuRecord:
    """Boot a source and a destination, migrate, check. Raises QemuRunError on any failure;
    both QEMU processes have ended whichever way this returns."""
    workdir.mkdir(parents=True, exist_ok=True)
    initrd = workdir / "initramfs.cpio"
    initrd.write_bytes(guest_initramfs(files.init.read_bytes()))
    record = QemuRecord(files.qemu.version_text, accel, asdict(s), qemu_semver=list(files.qemu.version))
    spec = lambda role, incoming: VmSpec(f"{tag}-{role}", s.memory_mib, s.kernel_append(),  # noqa: E731
                                         initrd, accel, incoming)
    try:
        _migrate_pair(s, files, workdir, spec, boot_timeout, check_destination, record)
    except QemuRunError as e:
        record.error = str(e)
        e.record = record
        raise
    return record


def _migrate_pair(s: QemuSettings, files: GuestFiles, workdir: Path, spec: Any, boot_timeout: float,
                  check_destination: bool, record: QemuRecord) -> None:
    started = time.monotonic()
    with running_vm(files, spec("dst", True), workdir) as dest, \
            running_vm(files, spec("src", False), workdir) as source:
        record.boot_s = _boot(source, s, boot_timeout, started)
        time.sleep(s.warmup_s)
        _configure(dest, s, source=False)
        _configure(source, s, source=True)
        port = _free_port()
        dest.qmp("migrate-incoming", uri=f"tcp:127.0.0.1:{port}")
        source.qmp("migrate", uri=f"tcp:127.0.0.1:{port}")
        final = _poll(source, record, s.max_time_s * 2 if s.max_time_s else 600.0)
        record.final = final
        if final.get("status") != "completed":
            raise QemuRunError(f"QEMU migration {final.get('status')}: "
                               f"{final.get('error-desc', 'no reason given')}; "
                               f"{_source_after_failure(source)}")
        if check_destination:
            _check_destination(dest, record, source.console)
        stall: Stall | None = measure_stall(source.console.snapshot_ticks(),
                                            dest.console.snapshot_ticks())
        record.stall = asdict(stall) | {"continuous": stall.continuous} if stall else None
        record.source_events, record.destination_events = source.events(), dest.events()
        record.stall_parts = _stall_parts(record, source.console, dest.console)
        record.source_console_tail = source.console.tail(5)
        record.destination_console_tail = dest.console.tail(5)
        record.outcome = "completed"


_footprints: dict[tuple[str, str, int, str], int] = {}


def kernel_footprint(files: GuestFiles, memory_mib: int, accel: str, workdir: Path,
                     tag: str = "migbed") -> int:
    """Non-zero bytes QEMU sends for the idle guest kernel alone: one migration, unthrottled,
    of the same VM whose program owns a single page and writes nothing. Kept per process."""
    key = (files.qemu.version_text, str(files.kernel), memory_mib, accel)
    if key not in _footprints:
        idle = QemuSettings(ram_size=0, buffer_size=4096, memory_mib=memory_mib, working_set=4096,
                            dirty_rate=0, seed=1, max_bandwidth=100 * 1024 * MiB, downtime_limit_ms=300,
                            avail_switchover_bandwidth=0, return_path=True, multifd=False,
                            multifd_channels=2, warmup_s=0.2, max_time_s=60)
        rec = migrate_pair(idle, files, workdir / "footprint", accel, tag=f"{tag}-idle",
                           check_destination=False)
        _footprints[key] = int(rec.final["ram"]["normal-bytes"]) - 4096
    return _footprints[key]


def run_qemu_migration(sc: Scenario, files: GuestFiles, workdir: Path, accel: str = "tcg",
                       boot_timeout: float = 90.0, tag: str = "migbed") -> QemuRecord:
    footprint = kernel_footprint(files, memory_mib_for(sc.guest.ram_size), accel, workdir, tag)
    record = migrate_pair(settings_for(sc, footprint), files, workdir, accel, boot_timeout, tag)
    record.kernel_footprint_bytes = footprint
    return record


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def kvm_usable(files: GuestFiles, workdir: Path, within_s: float = 6.0,
               tag: str = "migbed-kvm-probe") -> bool:
    """KVM counts only if a guest really runs under it: nested PVM devices create VMs in which
    a stock kernel makes no progress. Boot a small guest and require its first tick in time."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    workdir.mkdir(parents=True, exist_ok=True)
    initrd = workdir / "probe.cpio"
    initrd.write_bytes(guest_initramfs(files.init.read_bytes()))
    append = f"console=ttyS0 quiet panic=-1 MB_MEM={8 * MiB} MB_TICK_MS={TICK_MS}"
    try:
        with running_vm(files, VmSpec(tag, 160, append, initrd, "kvm"), workdir) as vm:
            deadline = time.monotonic() + within_s
            while time.monotonic() < deadline:
                if vm.console.ticks:
                    return True
                if vm.process is not None and vm.process.poll() is not None:
                    return False
                time.sleep(0.05)
    except QemuRunError:
        return False
    return False
