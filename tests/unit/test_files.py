"""Results files a crash or a full disk never leaves corrupt (migbed/measure/files.py).

The full disk here is injected at the write call: `os.write` writes part of what it is
given and then raises ENOSPC, as the kernel does when a filesystem fills in the middle of a
write. That is the one moment that can tear a line, and it is reproducible to the byte.
tests/faults/test_results_disk_full.py fills a real (small, mounted) tmpfs instead.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from migbed.measure import files
from migbed.measure.files import (
    append_line,
    atomic_write_text,
    journal_has,
    read_journal,
    repair_journal,
)


def disk_fills_after(monkeypatch: pytest.MonkeyPatch, room: int) -> None:
    """From now on the disk has `room` bytes left: writes beyond it fail with ENOSPC after
    writing what fits (a short write first, then the error, as write(2) does)."""
    real_write = os.write
    left = [room]

    def write(fd: int, data: bytes | memoryview) -> int:
        if left[0] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = real_write(fd, bytes(data[: left[0]]))
        left[0] -= n
        return n

    monkeypatch.setattr(files.os, "write", write)


def test_append_line_adds_whole_synced_lines(tmp_path: Path) -> None:
    j = tmp_path / "results.jsonl"
    append_line(j, json.dumps({"run_id": "a"}))
    append_line(j, json.dumps({"run_id": "b"}) + "\n")
    assert j.read_text() == '{"run_id": "a"}\n{"run_id": "b"}\n'
    assert journal_has(j, "run_id", "b") and not journal_has(j, "run_id", "c")


def test_a_full_disk_mid_line_leaves_the_journal_whole(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    j = tmp_path / "results.jsonl"
    append_line(j, json.dumps({"run_id": "first"}))
    before = j.read_bytes()
    disk_fills_after(monkeypatch, room=10)  # 10 bytes of the next line fit, then ENOSPC
    with pytest.raises(OSError) as e:
        append_line(j, json.dumps({"run_id": "second", "pad": "x" * 500}))
    assert e.value.errno == errno.ENOSPC
    assert j.read_bytes() == before, "the partial line was left in the journal"
    assert [json.loads(x)["run_id"] for x in read_journal(j)] == ["first"]


def test_a_torn_last_line_is_moved_aside_on_the_next_open(tmp_path: Path) -> None:
    j = tmp_path / "results.jsonl"
    whole = '{"run_id": "a"}\n'
    torn = '{"run_id": "b", "downtime_ms": 12'  # a crash in the middle of the write
    j.write_text(whole + torn)
    aside = repair_journal(j)
    assert aside is not None and aside.name.startswith("results.jsonl.torn-")
    assert aside.read_text() == torn
    assert j.read_text() == whole
    assert repair_journal(j) is None  # whole now: nothing more to do


def test_appending_after_a_crash_does_not_glue_onto_the_torn_line(tmp_path: Path) -> None:
    j = tmp_path / "runs.jsonl"
    j.write_text('{"n": 1}\n{"n": 2, "x"')
    append_line(j, '{"n": 3}')
    assert [json.loads(x)["n"] for x in j.read_text().splitlines()] == [1, 3]
    assert len(list(tmp_path.glob("runs.jsonl.torn-*"))) == 1


def test_a_journal_of_one_torn_line_becomes_empty(tmp_path: Path) -> None:
    j = tmp_path / "results.jsonl"
    j.write_text('{"run_id": "a", "tim')
    assert read_journal(j) == []
    assert j.read_bytes() == b""


def test_reading_without_repair_skips_the_torn_line_and_leaves_the_file(tmp_path: Path) -> None:
    j = tmp_path / "results.jsonl"
    j.write_text('{"a": 1}\n{"b"')
    assert read_journal(j, repair=False) == ['{"a": 1}']
    assert j.read_text() == '{"a": 1}\n{"b"'


def test_atomic_write_keeps_the_old_file_when_the_disk_fills(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "results.json"
    atomic_write_text(f, '[{"run_id": "old"}]')
    disk_fills_after(monkeypatch, room=5)
    with pytest.raises(OSError):
        atomic_write_text(f, json.dumps([{"run_id": "new", "pad": "y" * 1000}]))
    assert json.loads(f.read_text()) == [{"run_id": "old"}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"], "a temp file was left"


def test_atomic_write_replaces_a_symlink_not_its_target(tmp_path: Path) -> None:
    """A results.json that points elsewhere is replaced by a file (the rename), not written
    through: the other file is not touched."""
    other = tmp_path / "other.json"
    other.write_text("keep")
    link = tmp_path / "results.json"
    link.symlink_to(other)
    atomic_write_text(link, "[]")
    assert not link.is_symlink() and link.read_text() == "[]" and other.read_text() == "keep"


def test_a_source_outliving_its_orchestrator_adds_only_records_not_there(tmp_path: Path) -> None:
    """--orphan-records: the record of a run the orchestrator wrote before it died is not
    written twice; the others are appended."""
    from migbed.measure.record import RunRecord
    from migbed.services.source.server import keep_record as _keep_record

    j = tmp_path / "results.jsonl"
    append_line(j, RunRecord("a", "s", "legacy", 0, "completed", verified=True).to_json())
    _keep_record(j, RunRecord("a", "s", "legacy", 0, "completed", verified=True))
    _keep_record(j, RunRecord("b", "s", "legacy", 1, "cancelled", error="orchestrator died"))
    assert [json.loads(x)["run_id"] for x in read_journal(j)] == ["a", "b"]
