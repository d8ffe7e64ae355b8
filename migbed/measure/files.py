"""Results files that a crash or a full disk never leaves corrupt.

- A whole file (results.json, results.csv, fleet.json, a sweep's spec) is written to a
  temporary name in the same folder, fsynced, then renamed over the old one: a reader sees
  the old file or the new one, never half of one. On a failure the temporary file is
  removed and the old file is untouched.
- A journal (results.jsonl, a sweep's runs.jsonl) gets one line per record, each fsynced
  before the next run starts. A write that fails part-way (ENOSPC in the middle of a line)
  is cut back off at once, so the file still ends at a line boundary. A torn last line
  that a crash left (the process killed mid-write, the machine lost power) is detected the
  next time the journal is opened (appended to, or read): it is moved aside to
  `NAME.torn-<UTC time>` and cut off, so every line left is a whole record.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("migbed.files")


def _fsync_folder(folder: Path) -> None:
    """The rename itself reaches the disk (ext4 with data=ordered does not promise it)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace `path` with `data` all at once (temporary file, fsync, rename); OSError on a
    failure, with the old file untouched and no temporary file left."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_folder(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj: Any, **dumps: Any) -> None:
    atomic_write_text(path, json.dumps(obj, **dumps))


# ---------------------------------------------------------------- journals (JSONL)


def _torn_tail(fd: int) -> tuple[int, bytes]:
    """(offset of the end of the last whole line, the bytes after it) of an open journal."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return size, b""
    # Read backwards for the last newline; a record line is at most a few MiB.
    pos, chunk = size, 1 << 16
    while pos > 0:
        start = max(0, pos - chunk)
        block = os.pread(fd, pos - start, start)
        nl = block.rfind(b"\n")
        if nl >= 0:
            good = start + nl + 1
            return good, os.pread(fd, size - good, good)
        pos = start
    return 0, os.pread(fd, size, 0)


def _set_aside(path: Path, tail: bytes) -> Path | None:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    aside = path.with_name(f"{path.name}.torn-{stamp}")
    try:
        atomic_write_bytes(aside, tail)
    except OSError as e:  # a full disk: the torn bytes are no record; cutting them matters more
        log.warning("%s: could not keep the torn last line aside (%s); cutting it off",
                    path, e.strerror or e)
        return None
    return aside


def _repair_open(fd: int, path: Path) -> Path | None:
    """Cut a torn last line off the open journal `fd` (moved aside first); returns where
    it was kept (None: nothing was torn, or there was no room to keep it)."""
    good, tail = _torn_tail(fd)
    if not tail:
        return None
    aside = _set_aside(path, tail)
    os.ftruncate(fd, good)
    os.fsync(fd)
    log.warning("%s ended in a torn line (%d bytes, a write cut short by a crash or a full "
                "disk): cut off%s", path, len(tail), f", kept in {aside}" if aside else "")
    return aside


@contextlib.contextmanager
def _locked(path: Path, flags: int) -> Iterator[int]:
    """The journal open and locked: one writer at a time (the CLI, and a source service
    that outlived it and writes the records of the runs it cancelled)."""
    fd = os.open(path, flags | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)


def append_line(path: Path, line: str) -> None:
    """Append one line (a newline is added when missing) and fsync it. A torn last line
    already there is moved aside first; if this write fails part-way, it is cut back off,
    so the journal always ends at a line boundary. Raises OSError when it fails."""
    data = (line if line.endswith("\n") else line + "\n").encode()
    path = Path(path)
    with _locked(path, os.O_RDWR | os.O_CREAT) as fd:
        _repair_open(fd, path)
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        except OSError:
            with contextlib.suppress(OSError):  # shrinking a file needs no free space
                os.ftruncate(fd, start)
                os.fsync(fd)
            raise


def repair_journal(path: Path) -> Path | None:
    """Open the journal for a reader: a torn last line is moved aside and cut off. Returns
    where it went (None when the journal was whole or is missing)."""
    path = Path(path)
    if not path.exists():
        return None
    with _locked(path, os.O_RDWR) as fd:
        return _repair_open(fd, path)


def read_journal(path: Path, repair: bool = True) -> list[str]:
    """The whole lines of a journal (a torn last line repaired first, or skipped)."""
    path = Path(path)
    if repair:
        repair_journal(path)
    raw = path.read_bytes()
    good = raw.rfind(b"\n") + 1
    return [line for line in raw[:good].decode().splitlines() if line.strip()]


def journal_has(path: Path, key: str, value: str) -> bool:
    """Whether a whole line of the journal is a JSON object with `key` == `value`."""
    with contextlib.suppress(OSError):
        for line in read_journal(path, repair=False):
            with contextlib.suppress(ValueError, AttributeError):
                if json.loads(line).get(key) == value:
                    return True
    return False
