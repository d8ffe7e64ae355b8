"""The pure parts of the QEMU harness: serial parsing, the cpio writer, settings, the table."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest

from migbed.core.scenario import MiB, parse_scenario
from migbed.measure.record import ProgressSample, RunRecord
from migbed.qemu.compare import ram_only_toml
from migbed.qemu.initramfs import guest_initramfs, newc_archive, regular_file
from migbed.qemu.install import QemuSetupError, check_version, find_qemu, parse_version
from migbed.qemu.migrate import QemuRecord, settings_for
from migbed.qemu.serial import (
    Ready,
    Tick,
    Verdict,
    event_monotonic_ns,
    measure_stall,
    parse_line,
    split_lines,
    split_stall,
)
from migbed.qemu.table import GOALS, ROWS, build_rows, format_markdown, format_table
from migbed.qemu.vm import QemuRunError

# ---------------------------------------------------------------- serial


def test_parse_lines_of_the_guest_and_ignore_the_rest() -> None:
    assert parse_line(7, "T 3 1000 42 1\r") == Tick(7, 3, 1000, 42, 1)
    assert parse_line(7, "R 100 10 4096 5 2000") == Ready(7, 100, 10, 4096, 5, 2000)
    assert parse_line(7, "V 100 0 00ff") == Verdict(7, 100, 0, "00ff")
    for noise in ("[    2.1] Run /init as init process", "T 1 2", "T a b c d", "", "V 1 x y"):
        assert parse_line(7, noise) is None


def test_split_lines_keeps_the_unfinished_tail() -> None:
    lines, rest = split_lines(b"T 1 2 3 4\nT 2 3 4 5\r\nT 3")
    assert lines == ["T 1 2 3 4", "T 2 3 4 5"]
    assert rest == b"T 3"


def _ticks(seqs: list[int], host0_ms: float, guest0_ms: float, period_ms: float = 5) -> list[Tick]:
    return [Tick(int((host0_ms + i * period_ms) * 1e6), s, int((guest0_ms + i * period_ms) * 1e6), 0, 0)
            for i, s in enumerate(seqs)]


def test_stall_is_last_source_tick_to_first_new_destination_tick_on_the_host_clock() -> None:
    src = _ticks([0, 1, 2, 3], 0, 0)  # last source tick at host 15 ms, guest 15 ms
    # The destination first re-prints tick 3 (still in the UART at the stop), then goes on.
    dst = _ticks([3, 4, 5], 140, 18)
    stall = measure_stall(src, dst)
    assert stall is not None
    assert stall.last_source_seq == 3 and stall.first_destination_seq == 4
    assert stall.host_ms == pytest.approx(145 - 15)
    assert stall.guest_ms == pytest.approx(23 - 15)
    assert stall.tick_period_ms == pytest.approx(5)
    assert stall.continuous


def test_stall_needs_ticks_on_both_sides_and_flags_a_gap() -> None:
    assert measure_stall([], _ticks([0], 0, 0)) is None
    assert measure_stall(_ticks([0, 1], 0, 0), []) is None
    assert measure_stall(_ticks([0, 1], 0, 0), _ticks([0, 1], 50, 50)) is None
    gap = measure_stall(_ticks([0, 1], 0, 0), _ticks([9], 50, 50))
    assert gap is not None and not gap.continuous


def test_stall_is_split_at_qemus_stop_and_resume_events() -> None:
    offset = 1_700_000_000_000_000_000  # realtime - monotonic
    stop = {"event": "STOP", "timestamp": {"seconds": 1_700_000_000, "microseconds": 120_000}}
    assert event_monotonic_ns(stop, offset) == 120_000_000
    parts = split_stall(100_000_000, 400_000_000, 120_000_000, 330_000_000)
    assert parts == {"before_stop_ms": 20.0, "stop_to_resume_ms": 210.0, "after_resume_ms": 70.0}
    assert sum(parts.values()) == 300.0  # the whole stall, nothing lost or counted twice


# ---------------------------------------------------------------- cpio


def _read_newc(data: bytes) -> list[tuple[str, int, bytes, tuple[int, int]]]:
    """An independent reader of the format: (name, mode, data, rdev) per member."""
    out, off = [], 0
    while True:
        assert data[off:off + 6] == b"070701", f"bad magic at {off}"
        f = [int(data[off + 6 + 8 * i: off + 14 + 8 * i], 16) for i in range(13)]
        mode, size, rmaj, rmin, namesize = f[1], f[6], f[9], f[10], f[11]
        name = data[off + 110: off + 110 + namesize - 1].decode()
        assert data[off + 110 + namesize - 1] == 0
        off = (off + 110 + namesize + 3) & ~3
        body = data[off: off + size]
        off = (off + size + 3) & ~3
        if name == "TRAILER!!!":
            assert off == len(data)
            return out
        out.append((name, mode, body, (rmaj, rmin)))


def test_newc_archive_holds_console_and_init_aligned() -> None:
    binary = b"\x7fELF" + bytes(range(256)) * 3 + b"xyz"  # a length that needs padding
    members = _read_newc(guest_initramfs(binary))
    assert [m[0] for m in members] == ["dev", "dev/console", "init"]
    dev, console, init = members
    assert stat.S_ISDIR(dev[1])
    assert stat.S_ISCHR(console[1]) and console[3] == (5, 1)
    assert stat.S_ISREG(init[1]) and init[1] & 0o111 and init[2] == binary


def test_newc_archive_of_odd_names_and_sizes() -> None:
    for n in range(1, 9):
        data = newc_archive([regular_file("a" * n, b"b" * n)])
        assert len(data) % 4 == 0
        assert _read_newc(data) == [("a" * n, stat.S_IFREG | 0o755, b"b" * n, (0, 0))]


# ---------------------------------------------------------------- version


def test_version_is_read_and_old_qemu_refused_naming_the_bug() -> None:
    assert parse_version("QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2)") == (10, 0, 2)
    assert parse_version("QEMU emulator version 9.0") == (9, 0, 0)
    check_version((9, 0, 0))
    with pytest.raises(QemuSetupError) as e:
        check_version((7, 2, 0), "/usr/bin/qemu-system-x86_64")
    msg = str(e.value)
    assert "7.2.0" in msg and "9.0" in msg and "03bfc2188f" in msg and "TCG" in msg
    with pytest.raises(QemuSetupError, match="cannot read a QEMU version"):
        parse_version("something else")


def test_a_fake_old_qemu_binary_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "qemu-system-x86_64"
    fake.write_text("#!/bin/sh\necho 'QEMU emulator version 7.2.15 (Debian 1:7.2+dfsg-7)'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("MIGBED_QEMU", str(fake))
    with pytest.raises(QemuSetupError, match=r"QEMU 7\.2\.15, older than 9\.0.*03bfc2188f"):
        find_qemu()
    monkeypatch.setenv("MIGBED_QEMU", str(tmp_path / "absent"))
    with pytest.raises(QemuSetupError, match="cannot run"):
        find_qemu()


# ---------------------------------------------------------------- settings


SCENARIO = """
name = "q"
[guest]
ram-size = "256MiB"
dirty-rate = "16MiB/s"
working-set = "32MiB"
[[device]]
name = "vf0"
initial-bytes = "8MB"
[migration]
downtime-limit = "250ms"
max-bandwidth = "64MiB/s"
avail-switchover-bandwidth = "100MiB/s"
[link]
rate = "1Gbit"
"""


def test_settings_follow_the_scenario_and_leave_room_for_the_kernel() -> None:
    sc = parse_scenario(SCENARIO)
    s = settings_for(sc, kernel_footprint=60 * MiB + 123)
    assert s.buffer_size == 196 * MiB - 4096  # whole pages, kernel + buffer <= ram-size
    assert s.memory_mib * MiB >= sc.guest.ram_size + 64 * MiB
    params = s.source_parameters()
    assert params == {"max-bandwidth": 64 * MiB, "downtime-limit": 250,
                      "avail-switchover-bandwidth": 100 * MiB}
    caps = {c["capability"]: c["state"] for c in s.capabilities()}
    assert caps == {"return-path": True, "multifd": False}  # the defaults, QEMU's/libvirt's
    assert f"MB_MEM={s.buffer_size}" in s.kernel_append() and "MB_RATE=16777216" in s.kernel_append()


def test_a_guest_too_small_for_its_kernel_is_refused_clearly() -> None:
    sc = parse_scenario(SCENARIO.replace('"256MiB"', '"64MiB"'))
    with pytest.raises(QemuRunError, match=r"ram-size = 64 MiB is too small.*kernel holds 60 MiB"):
        settings_for(sc, kernel_footprint=60 * MiB)


def test_migbed_side_gets_the_scenario_without_devices_or_link() -> None:
    text = ram_only_toml(parse_scenario(SCENARIO))
    sc = parse_scenario(text)
    assert sc.devices == () and sc.link.rate == 0
    assert sc.guest.ram_size == 256 * MiB and sc.migration.max_bandwidth == 64 * MiB
    assert sc.migration.avail_switchover_bandwidth == 100 * MiB


# ---------------------------------------------------------------- table


def _qemu(downtime: float, stall: float, transferred: int) -> QemuRecord:
    q = QemuRecord("QEMU emulator version 10.0.2", "tcg", {})
    q.final = {"status": "completed", "total-time": 1000, "setup-time": 2, "downtime": downtime,
               "ram": {"transferred": transferred, "dirty-sync-count": 4, "precopy-bytes": 90,
                       "downtime-bytes": 10, "multifd-bytes": 0}}
    q.samples = [{"t_ms": 0, "info": {"status": "active", "expected-downtime": 280}},
                 {"t_ms": 50, "info": {"status": "active", "expected-downtime": 310}},
                 {"t_ms": 100, "info": {"status": "device"}}]
    q.stall = {"host_ms": stall}
    return q


def _migbed(total: float, downtime: float, stall: float, syncs: int, transferred: int) -> RunRecord:
    r = RunRecord("r", "q", "legacy", 0, "completed", total_time_ms=total, downtime_ms=downtime,
                  guest_downtime_ms=stall, dirty_sync_count=syncs, ram_transferred_bytes=transferred,
                  setup_time_ms=5, precopy_bytes=80, downtime_bytes=20, expected_downtime_ms=999)
    sample = dict(ram_remaining_bytes=0, ram_transferred_bytes=0, device_transferred_bytes=0,
                  dirty_sync_count=0, bandwidth_bytes_per_s=0.0, threshold_bytes=0.0,
                  dirty_pages_rate=0.0, pending_bytes=0, ack_received=False)
    r.timeline = [ProgressSample(0, "precopy", expected_downtime_ms=250, **sample),  # type: ignore[arg-type]
                  ProgressSample(1, "stop-copy", expected_downtime_ms=10, **sample)]  # type: ignore[arg-type]
    return r


def test_table_has_every_row_with_values_ratios_and_goals() -> None:
    rows = build_rows(_qemu(100, 120, 1000), _migbed(1090, 140, 135, 5, 1200))
    by = {r.name: r for r in rows}
    assert list(by) == [name for name, *_ in ROWS]
    for name in ("total-time", "setup-time", "downtime", "guest stall", "dirty-sync-count",
                 "transferred", "precopy-bytes", "downtime-bytes", "expected-downtime"):
        assert by[name].qemu is not None and by[name].migbed is not None, name
    assert by["total-time"].ratio == pytest.approx(1.09) and by["total-time"].met is True
    assert by["transferred"].ratio == pytest.approx(1.2) and by["transferred"].met is False
    assert by["dirty-sync-count"].met is True  # 5 vs 4: within 1
    assert by["downtime"].met is True  # 140 vs 100: within 1.5x
    assert by["guest stall"].met is True  # 135 vs 120: within 20 ms
    assert by["expected-downtime"].qemu == 310  # the last pre-copy sample, not "device"
    assert by["expected-downtime"].migbed == 250  # migbed's last pre-copy sample too
    assert by["setup-time"].goal == "-" and by["setup-time"].met is None
    text = format_table(rows)
    assert "within 10 %: NO" in text and "within 1: yes" in text
    assert format_markdown(rows).count("\n") == len(rows) + 1


def test_goals_fail_where_they_should() -> None:
    assert not GOALS["downtime"].check(100, 151) and GOALS["downtime"].check(100, 150)
    assert GOALS["downtime"].check(4, 14) and not GOALS["downtime"].check(4, 15)
    assert not GOALS["dirty-sync-count"].check(3, 5)
    assert not GOALS["guest stall"].check(100, 121)
    assert not GOALS["total-time"].check(0, 0)
    missing = build_rows(_qemu(100, 120, 1000), _migbed(1000, 100, 100, 4, 1000))
    q = _qemu(100, 120, 1000)
    q.stall = None
    no_stall = {r.name: r for r in build_rows(q, _migbed(1000, 100, 100, 4, 1000))}
    assert no_stall["guest stall"].met is None and "n/a" in format_table(list(no_stall.values()))
    assert all(r.met in (True, None) for r in missing)


def test_guest_program_compiles_warning_free(tmp_path: Path) -> None:
    src = Path(__file__).resolve().parents[2] / "migbed/qemu/guest/init.c"
    done = subprocess.run(["gcc", "-static", "-O2", "-Wall", "-Wextra", "-Werror", "-o",
                           str(tmp_path / "init"), str(src)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_notes_say_what_was_dropped_and_where_the_time_went() -> None:
    from migbed.measure.record import Event
    from migbed.qemu.compare import notes_for

    sc = parse_scenario(SCENARIO.replace("[link]", "max-iterations = 50\n[link]"))
    q = _qemu(100, 120, 1000)
    q.settings = {"memory_mib": 356, "buffer_size": 196 * MiB, "ram_size": 256 * MiB,
                  "return_path": True, "multifd": False, "multifd_channels": 2}
    q.stall = {"host_ms": 120.0, "tick_period_ms": 5.0, "continuous": True}
    q.stall_parts = {"before_stop_ms": 5.0, "stop_to_resume_ms": 100.0, "after_resume_ms": 15.0}
    m = _migbed(1000, 100, 100, 4, 1000)
    m.events = [Event(20, "setup-accepted"), Event(900, "completed")]
    text = "\n".join(notes_for(sc, q, m))
    assert "devices are migbed's alone and were dropped" in text
    assert "[link] is ignored" in text
    assert "no max-iterations/max-time cap" in text
    assert "= 5 ms from the last source tick" in text and "+ 100 ms" in text
    assert "setup-accepted at 20 ms, completed at 900 ms, total_time_ms 1000" in text
