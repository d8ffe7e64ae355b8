"""One QEMU process with its QMP monitor and its serial console, ended on every exit path.

`running_vm()` is the only way the harness starts QEMU: a context manager whose exit (normal,
exception, KeyboardInterrupt) kills the process and waits for it. QEMU is also started with
the parent-death signal set to SIGKILL, so it dies with us even if we are killed -9.
"""

from __future__ import annotations

import contextlib
import ctypes
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migbed.qemu.install import GuestFiles
from migbed.qemu.serial import ConsoleReader

PR_SET_PDEATHSIG = 1


class QemuRunError(RuntimeError):
    """A QEMU run that went wrong (did not boot, migration failed...); str() says what.
    `record` holds what was measured up to the failure (the samples), when there is one."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.record: Any = None


def _die_with_parent() -> None:  # runs in the child between fork and exec
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class VmSpec:
    name: str  # also QEMU's -name: tests find our processes by it
    memory_mib: int
    append: str  # kernel command line
    initrd: Path
    accel: str = "tcg"
    incoming: bool = False  # start with -incoming defer (a migration destination)
    extra: list[str] = field(default_factory=list)


def qemu_command(files: GuestFiles, spec: VmSpec, qmp_path: Path, serial_path: Path) -> list[str]:
    cmd = [
        files.qemu.path, "-name", spec.name, "-machine", "q35", "-accel", spec.accel,
        "-cpu", "max" if spec.accel == "tcg" else "host", "-smp", "1", "-m", f"{spec.memory_mib}M",
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-kernel", str(files.kernel), "-initrd", str(spec.initrd), "-append", spec.append,
        "-chardev", f"socket,id=console,path={serial_path},server=on,wait=off",
        "-serial", "chardev:console",
        "-qmp", f"unix:{qmp_path},server=on,wait=off",
        *spec.extra,
    ]
    if spec.incoming:
        cmd += ["-incoming", "defer"]
    return cmd


class Vm:
    def __init__(self, files: GuestFiles, spec: VmSpec, workdir: Path) -> None:
        self.spec = spec
        self.workdir = workdir
        # Unix socket paths are limited to 108 bytes: keep them in a short folder of their own.
        self.socket_dir = Path(tempfile.mkdtemp(prefix="migbed-qemu-"))
        self.qmp_path = self.socket_dir / "qmp"
        self.log_path = workdir / f"{spec.name}.log"
        self.command = qemu_command(files, spec, self.qmp_path, self.socket_dir / "serial")
        self.console = ConsoleReader(str(self.socket_dir / "serial"), spec.name)
        self.process: subprocess.Popen[bytes] | None = None
        self._monitor: Any = None
        self.event_log: list[dict[str, Any]] = []  # every QMP event seen, in order

    def start(self, timeout: float = 20.0) -> None:
        from qemu.qmp import QMPError
        from qemu.qmp.legacy import QEMUMonitorProtocol

        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while not (self.qmp_path.exists() and self.console.path and Path(self.console.path).exists()):
            self.check_alive()
            if time.monotonic() > deadline:
                raise QemuRunError(f"{self.spec.name}: QEMU made no QMP socket in {timeout:g}s; "
                                   f"see {self.log_path}")
            time.sleep(0.02)
        try:
            self.console.connect(timeout)
            self._monitor = QEMUMonitorProtocol(str(self.qmp_path))
            self._monitor.connect()
        except (QMPError, OSError) as e:
            time.sleep(0.2)  # QEMU closing its sockets is usually QEMU exiting: say why
            self.check_alive()
            raise QemuRunError(f"{self.spec.name}: cannot talk to QEMU ({e}); see {self.log_path}") from None
        self._monitor.settimeout(30)

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise QemuRunError(f"{self.spec.name}: QEMU exited with {self.process.returncode}: "
                               f"{self.log_text()[-1500:]}")

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def qmp(self, command: str, **arguments: Any) -> Any:
        from qemu.qmp import QMPError

        self.check_alive()
        try:
            return self._monitor.cmd(command, **arguments)
        except QMPError as e:
            raise QemuRunError(f"{self.spec.name}: QMP {command} failed: {e}") from None
        except (TimeoutError, OSError) as e:  # asyncio's timeout is the builtin one in 3.11
            self.check_alive()
            raise QemuRunError(f"{self.spec.name}: QMP {command}: no answer ({e!r}); "
                               f"see {self.log_path}") from None

    def events(self) -> list[dict[str, Any]]:
        """Every QMP event so far (STOP, RESUME, MIGRATION...), each with QEMU's timestamp."""
        self.qmp("query-status")  # lets the client read what QEMU has sent meanwhile
        self.event_log += self._monitor.get_events(wait=False)
        return self.event_log

    def stop(self) -> None:
        """Kill QEMU (nothing of the guest is kept) and wait for it; safe to call twice."""
        if self._monitor is not None:
            with contextlib.suppress(Exception):
                self._monitor.close()
            self._monitor = None
        self.console.close()
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.socket_dir, ignore_errors=True)


@contextlib.contextmanager
def running_vm(files: GuestFiles, spec: VmSpec, workdir: Path) -> Iterator[Vm]:
    vm = Vm(files, spec, workdir)
    try:
        vm.start()
        yield vm
    finally:
        vm.stop()
