"""Issue 23, item 3: a results folder whose disk fills during the write. A real, small
filesystem (a tmpfs of a few pages, mounted here and unmounted after) and a real
`migbed run` writing its records into it: the record does not fit, the write fails part-way
with ENOSPC, and what is left in --out is whole (here: an empty journal), never a torn,
unparseable line; the record is in the printed fallback, and the exit code says so (4).

tests/unit/test_files.py injects ENOSPC at the write call instead (every byte boundary,
and the torn-line repair after a crash)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from faultlab import Lab, require_root
from orchlab import CLI, ROOT

pytestmark = pytest.mark.timeout(240)


@contextlib.contextmanager
def small_disk(where: Path, size: str) -> Iterator[Path]:
    require_root("mounting a small tmpfs")
    where.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)],
                   check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    lab = Lab(tmp_path_factory.mktemp("diskfull-logs"))  # logs elsewhere: only records on the disk
    try:
        yield lab.start("source").address, lab.start("target").address
    finally:
        lab.close()


def run_into(pair: tuple[str, str], out: Path, fallback: Path,
             *sets: str) -> subprocess.CompletedProcess[str]:
    source, target = pair
    args = [arg for kv in sets for arg in ("--set", kv)]
    return subprocess.run(
        [*CLI, "run", "--source", source, "--target", target, "--comparison", "smoke",
         "--policy", "legacy", *args, "--no-report", "--no-progress", "--out", str(out)],
        capture_output=True, text=True, timeout=180, cwd=ROOT,
        env={**os.environ, "MIGBED_FALLBACK_DIR": str(fallback)})


def whole_lines(path: Path) -> list[dict]:  # type: ignore[type-arg]
    """The journal's records; fails on a torn or unparseable line."""
    raw = path.read_bytes() if path.exists() else b""
    assert raw == b"" or raw.endswith(b"\n"), f"a torn line was left: {raw[-80:]!r}"
    return [json.loads(x) for x in raw.splitlines()]


def test_a_record_larger_than_the_room_left_is_cut_back(pair: tuple[str, str],
                                                        tmp_path: Path) -> None:
    """One page free; a record of a few seconds' timeline is larger: the journal's write
    fills the disk part-way and fails; the part written is cut off again."""
    fallback = tmp_path / "fallback"
    with small_disk(tmp_path / "small", "8k") as disk:
        (disk / "filler").write_bytes(b"f" * 4096)  # one of its two pages
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        assert free == 4096, free
        out = disk / "out"
        proc = run_into(pair, out, fallback, "guest.ram-size=32MiB",
                        "migration.max-bandwidth=16MiB/s")
        assert proc.returncode == 4, (proc.stdout, proc.stderr)
        assert "No space left on device" in proc.stderr and "Traceback" not in proc.stderr
        assert whole_lines(out / "results.jsonl") == []
        assert not list(out.glob(".*.tmp-*")), "a temporary file was left"
    [saved] = fallback.glob("results-*.jsonl")
    [rec] = whole_lines(saved)
    assert rec["outcome"] == "completed" and rec["verified"]
    assert saved.stat().st_size > free, "the record fitted: the test did not fill the disk"
    assert str(saved) in proc.stderr
    print(f"{free} bytes free; the record is {saved.stat().st_size} bytes")
    # The views went beside the fallback, written whole.
    assert json.loads(saved.with_suffix(".json").read_text())[0]["run_id"] == rec["run_id"]


def test_views_that_do_not_fit_leave_the_journal_whole(pair: tuple[str, str],
                                                      tmp_path: Path) -> None:
    """The record fits in the journal; results.json and .csv then do not: each is written
    whole or not at all (no temporary file left), the journal stays, exit 4 says so."""
    fallback = tmp_path / "fallback"
    with small_disk(tmp_path / "small", "8k") as disk:
        out = disk / "out"
        proc = run_into(pair, out, fallback)
        assert proc.returncode == 4, (proc.stdout, proc.stderr)
        assert "No space left on device" in proc.stderr and "Traceback" not in proc.stderr
        [rec] = whole_lines(out / "results.jsonl")
        assert rec["outcome"] == "completed" and rec["verified"]
        for view in ("results.json", "results.csv"):
            if (out / view).exists():  # the first may fit; then it is whole
                assert (out / view).read_text().strip()
        assert json.loads((out / "results.json").read_text()) == [rec] \
            if (out / "results.json").exists() else True
        assert not list(out.glob(".*.tmp-*")), "a temporary file was left"
        assert f"every record is in {out / 'results.jsonl'}" in proc.stderr
