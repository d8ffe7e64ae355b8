"""Results that are never lost: each run's record is appended to results.jsonl and fsynced the
moment the run ends, before anything else (the next run, the table, the report) can fail.
A write cut short (a full disk) is cut back off at once, and a torn last line a crash left
is moved aside the next time the journal is opened (migbed/measure/files.py): the journal
always holds whole records only.

When the results folder cannot be written (a full disk, a folder gone), the record goes to a
fallback file whose path is printed at once; as a last resort the record itself is printed on
stderr. `saved_elsewhere` tells the command to exit with EXIT_RESULTS_ELSEWHERE.
results.json and results.csv are written at the end from the same records (the views).
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import tempfile
from pathlib import Path
from typing import TextIO

from migbed.measure.files import append_line, journal_has
from migbed.measure.record import RunRecord, dump_results, load_journal, write_csv

JSONL = "results.jsonl"


def fallback_folder() -> Path:
    """$MIGBED_FALLBACK_DIR, else $XDG_STATE_HOME/migbed (~/.local/state/migbed), else /tmp."""
    env = os.environ.get("MIGBED_FALLBACK_DIR")
    if env:
        return Path(env)
    state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(state) / "migbed"


class ResultsSink:
    """Where one command's run records go, one line each, as the runs end."""

    def __init__(self, folder: Path, err: TextIO = sys.stderr) -> None:
        self.folder = folder
        self.path = folder / JSONL
        self.err = err
        self.records: list[RunRecord] = []
        self.fallback: Path | None = None  # set once the folder failed
        self.problems: list[str] = []

    @property
    def saved_elsewhere(self) -> bool:
        return bool(self.problems)

    def add(self, record: RunRecord) -> None:
        self.records.append(record)
        line = record.to_json() + "\n"
        if self.fallback is None:
            try:
                append_line(self.path, line)
                return
            except OSError as e:
                self._problem(f"cannot write {self.path}: {e.strerror or e}")
        self._to_fallback(line, record.run_id)

    def _problem(self, text: str) -> None:
        self.problems.append(text)
        print(f"migbed: {text}", file=self.err, flush=True)

    def _to_fallback(self, line: str, run_id: str) -> None:
        for folder in (fallback_folder(), Path(tempfile.gettempdir())):
            path = self.fallback or folder / (
                f"results-{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%SZ')}-{os.getpid()}.jsonl")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                append_line(path, line)
            except OSError:
                self.fallback = None
                continue
            if self.fallback is None:
                print(f"migbed: records saved instead to {path}", file=self.err, flush=True)
            self.fallback = path
            return
        print(f"migbed: no folder can be written; the record of {run_id} follows:\n{line}",
              file=self.err, flush=True)

    def finish(self) -> list[Path]:
        """results.json and results.csv beside results.jsonl (or beside the fallback)."""
        folder = self.folder if self.fallback is None else self.fallback.parent
        stem = "results" if self.fallback is None else self.fallback.stem
        written = []
        try:
            dump_results(self.records, str(folder / f"{stem}.json"))
            write_csv(self.records, folder / f"{stem}.csv")
            written += [folder / f"{stem}.json", folder / f"{stem}.csv"]
        except OSError as e:
            self._problem(f"cannot write {folder / stem}.json/.csv: {e.strerror or e} "
                          f"(every record is in {self.fallback or self.path})")
        return written


def add_once(folder: Path, record: RunRecord) -> ResultsSink | None:
    """A record fetched later (`migbed watch`) into a results folder: appended to its journal
    unless a record of the run is there already (then None), and the views rewritten from
    the whole journal."""
    if journal_has(folder / JSONL, "run_id", record.run_id):
        return None
    sink = ResultsSink(folder)
    sink.add(record)
    if sink.fallback is None:
        sink.records = load_journal(str(sink.path))
    return sink
