"""Real QEMU (TCG) beside migbed, end to end, and what is left after a failure: nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from migbed.core.scenario import MiB, parse_scenario
from migbed.qemu import compare as compare_module
from migbed.qemu import vm as vm_module
from migbed.qemu.compare import choose_accel, run_comparison
from migbed.qemu.install import GuestFiles, QemuSetupError
from migbed.qemu.migrate import kvm_usable, migrate_pair, settings_for
from migbed.qemu.table import ROWS, format_table
from migbed.qemu.vm import QemuRunError

Leftovers = Callable[[str], list[str]]

SMALL = """
name = "qemu-small"
[guest]
ram-size = "128MiB"
working-set = "16MiB"
dirty-rate = "8MiB/s"
[migration]
downtime-limit = "300ms"
max-bandwidth = "256MiB/s"
warmup = "300ms"
"""


def test_one_small_comparison_end_to_end(guest_files: GuestFiles, tmp_path: Path, qemu_tag: str,
                                         leftover_qemus: Leftovers) -> None:
    tag = qemu_tag
    cmp = run_comparison(parse_scenario(SMALL), tmp_path, accel="tcg", tag=tag)
    q, m = cmp.qemu, cmp.migbed
    print(format_table(cmp.rows))
    assert q.outcome == "completed" and q.final["status"] == "completed"
    assert m.outcome == "completed" and m.verified
    # The destination is the same guest, going on: its ticks follow the source's last one,
    # it kept ticking, and every page it owns still holds what it last wrote.
    assert q.stall is not None and q.stall["continuous"]
    assert q.destination_ticks_after >= 20
    assert q.destination_pages_checked == q.settings["buffer_size"] // 4096
    assert q.destination_bad_pages == 0 and q.intact
    assert len(q.samples) >= 3  # polled every 50 ms
    # The stall splits at QEMU's own STOP (source) and RESUME (destination) events.
    assert q.stall_parts is not None
    assert sum(q.stall_parts.values()) == pytest.approx(q.stall["host_ms"], abs=0.01)
    rows = {r.name: r for r in cmp.rows}
    assert list(rows) == [name for name, *_ in ROWS]
    for name in ("total-time", "downtime", "guest stall", "dirty-sync-count", "transferred"):
        assert rows[name].qemu is not None and rows[name].migbed is not None, name
        assert rows[name].met is not None, name
    # The QEMU guest's non-zero memory is the scenario's ram-size: transferred >= one pass.
    assert rows["transferred"].qemu is not None and rows["transferred"].qemu >= 0.9 * 128 * MiB
    for name in ("qemu.json", "migbed.json", "comparison.json", "remaining.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    saved = json.loads((tmp_path / "qemu.json").read_text())
    assert saved["samples"] and saved["final"]["status"] == "completed"
    assert leftover_qemus(tag) == []


def test_a_guest_that_does_not_boot_in_time_ends_both_qemus(
        guest_files: GuestFiles, tmp_path: Path, qemu_tag: str, leftover_qemus: Leftovers) -> None:
    tag = qemu_tag
    s = settings_for(parse_scenario(SMALL), kernel_footprint=60 * MiB)
    with pytest.raises(QemuRunError, match=r"booting and touching its memory not within 0\.5s"):
        migrate_pair(s, guest_files, tmp_path, "tcg", boot_timeout=0.5, tag=tag)
    assert leftover_qemus(tag) == []


def test_a_failed_migration_is_reported_and_ends_both_qemus(
        guest_files: GuestFiles, tmp_path: Path, qemu_tag: str, leftover_qemus: Leftovers,
        monkeypatch: pytest.MonkeyPatch) -> None:
    tag = qemu_tag
    real_qmp = vm_module.Vm.qmp

    def misdirected(self: vm_module.Vm, command: str, **arguments: Any) -> Any:
        if command == "migrate":  # to a port nobody listens on: QEMU's own failure path
            arguments["uri"] = "tcp:127.0.0.1:1"
        return real_qmp(self, command, **arguments)

    monkeypatch.setattr(vm_module.Vm, "qmp", misdirected)
    s = settings_for(parse_scenario(SMALL), kernel_footprint=60 * MiB)
    failed = r"QEMU migration failed: .*(refused|connect).*the source guest is running again"
    with pytest.raises(QemuRunError, match=failed) as failure:
        migrate_pair(s, guest_files, tmp_path, "tcg", tag=tag)
    assert leftover_qemus(tag) == []
    kept = failure.value.record  # what was measured up to the failure is not lost
    assert kept.final["status"] == "failed" and kept.samples and kept.error


def test_cli_names_an_old_qemu_and_the_bug_without_a_traceback(tmp_path: Path) -> None:
    fake = tmp_path / "qemu-system-x86_64"
    fake.write_text("#!/bin/sh\necho 'QEMU emulator version 7.2.0 (Debian 1:7.2+dfsg-7+deb12u18)'\n")
    fake.chmod(0o755)
    done = subprocess.run([sys.executable, "-m", "migbed", "qemu-compare",
                           "tiny", "--accel", "tcg", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=60,
                          env={"MIGBED_QEMU": str(fake), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 2
    assert "QEMU 7.2.0, older than 9.0" in done.stderr and "03bfc2188f" in done.stderr
    assert "Traceback" not in done.stderr


def test_qemu_dies_with_a_harness_killed_by_sigkill(guest_files: GuestFiles, tmp_path: Path,
                                                    qemu_tag: str, leftover_qemus: Leftovers) -> None:
    """No finally block runs under SIGKILL: the parent-death signal ends QEMU anyway."""
    code = (
        "import sys, time\nfrom pathlib import Path\n"
        "from migbed.qemu.install import find_guest_files\n"
        "from migbed.qemu.initramfs import guest_initramfs\n"
        "from migbed.qemu.vm import Vm, VmSpec\n"
        f"work = Path({str(tmp_path)!r})\n"
        "files = find_guest_files()\n"
        "(work / 'i.cpio').write_bytes(guest_initramfs(files.init.read_bytes()))\n"
        f"vm = Vm(files, VmSpec({qemu_tag!r}, 160, 'console=ttyS0', work / 'i.cpio'), work)\n"
        "vm.start()\nprint('up', flush=True)\ntime.sleep(120)\n")
    harness = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert harness.stdout is not None and harness.stdout.readline().strip() == "up"
        assert leftover_qemus(qemu_tag), "QEMU should be running under the harness"
    finally:
        harness.kill()
        harness.wait()
    deadline = time.monotonic() + 10
    while leftover_qemus(qemu_tag) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert leftover_qemus(qemu_tag) == []


def test_the_kvm_probe_answers_and_leaves_nothing(guest_files: GuestFiles, tmp_path: Path, qemu_tag: str,
                                                  leftover_qemus: Leftovers,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """On machines whose /dev/kvm runs no guest (nested PVM) the probe says False and the
    comparison uses TCG; where KVM works it says True. Either way no QEMU is left."""
    usable = kvm_usable(guest_files, tmp_path, tag=qemu_tag)
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        assert usable is False
    assert leftover_qemus(qemu_tag) == []
    monkeypatch.setitem(compare_module._kvm_probed, "kvm", usable)  # probed once per process
    assert choose_accel("auto", tmp_path) == ("kvm" if usable else "tcg")
    if usable:
        assert choose_accel("kvm", tmp_path) == "kvm"
    else:  # asked for explicitly where it does not work: said clearly, before any run
        with pytest.raises(QemuSetupError, match="--accel kvm: /dev/kvm"):
            choose_accel("kvm", tmp_path)
