"""Sweeps: a base scenario crossed with axes of values, each cell run under several policies.

A sweep is data (``SweepSpec``): a base scenario, fixed overrides, axes (``KEY=v1,v2,...``
with KEY a scenario path: ``migration.max-bandwidth``, ``device.vf0.load-setup-time``),
policies and repeats. Everything is validated before anything runs, with the scenario's own
validator, so a bad axis is refused naming its key.

A run directory holds ``sweep.json`` (the spec), ``runs.jsonl`` (one line per finished run,
appended, flushed and fsynced at once: a killed sweep loses only the run in flight) and
``predictions.json`` (the model for every cell). ``resume`` continues a directory: runs
already in ``runs.jsonl`` are not redone, so each (cell, policy) ends with exactly
``repeat`` runs.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from migbed.core.bounded import InputError, loads_toml
from migbed.core.overrides import OverrideError, dump_toml, override_values, parse_value
from migbed.core.policy import DEFAULT_POLICIES, policy_names
from migbed.core.scenario import (
    Scenario,
    ScenarioError,
    builtin_scenario_text,
    parse_scenario,
    read_scenario_text,
)
from migbed.experiments.follow import RECORDED_BY, StartedRun, dilation_of, follow_run
from migbed.experiments.interrupt import INTERRUPTED_LABEL, Interruption
from migbed.measure.files import append_line, atomic_write_json, read_journal
from migbed.measure.record import RunRecord

MAX_CELLS_RUN = 1000  # a measured sweep bigger than this is a mistake (hours of runs)
MAX_CELLS_PREDICT = 200_000


class SweepError(ScenarioError):
    """A sweep that cannot run as asked; str() names the key or file and what is allowed."""


# ---------------------------------------------------------------- scenario overrides


def apply_overrides(scenario_text: str, overrides: dict[str, Any]) -> str:
    """The scenario with each KEY (a dotted path) set to its value, as TOML text.

    Only the shape is checked here (the section, the device name); the values are the
    scenario validator's business (parse_scenario on the result)."""
    return _overridden(_toml_data(scenario_text), overrides)


def _overridden(data: dict[str, Any], overrides: dict[str, Any]) -> str:
    data = copy.deepcopy(data)  # `data` is parsed once and shared by every cell
    try:
        override_values(data, overrides)
    except OverrideError as e:
        raise SweepError(str(e)) from None
    return dump_toml(data)


def _toml_data(scenario_text: str) -> dict[str, Any]:
    try:
        return loads_toml(scenario_text, "base scenario")
    except InputError as e:
        raise SweepError(str(e)) from None


# ---------------------------------------------------------------- the spec


@dataclass(frozen=True)
class Axis:
    key: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Cell:
    index: int
    values: dict[str, Any]
    text: str  # the cell's scenario TOML
    scenario: Scenario | None = field(default=None, compare=False, repr=False)  # once validated

    @property
    def label(self) -> str:
        return ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in self.values.items())


@dataclass
class SweepSpec:
    name: str
    base_text: str  # the base scenario with the fixed overrides applied
    axes: list[Axis]
    policies: list[str]
    repeat: int = 1
    description: str = ""
    local: bool = True  # measured between two local processes (the link is not shaped)
    sweep_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def cells(self) -> list[Cell]:
        combos = itertools.product(*(a.values for a in self.axes))
        base = _toml_data(self.base_text)
        out = []
        for i, combo in enumerate(combos):
            values = dict(zip((a.key for a in self.axes), combo, strict=True))
            # One scenario name for every cell: Prometheus labels stay bounded (the sweep's
            # name is the scenario label; the cell goes only into the run record).
            out.append(Cell(i, values, _overridden(base, {**values, "name": self.name})))
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["axes"] = [{"key": a.key, "values": list(a.values)} for a in self.axes]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SweepSpec:
        d = dict(d)
        d["axes"] = [Axis(a["key"], tuple(a["values"])) for a in d["axes"]]
        return cls(**d)

    @property
    def cell_count(self) -> int:
        n = 1
        for a in self.axes:
            n *= len(a.values)
        return n


def parse_vary(items: Iterable[str]) -> list[Axis]:
    """--vary KEY=v1,v2,... into axes (values typed as TOML would)."""
    axes: list[Axis] = []
    for item in items:
        key, eq, rest = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise SweepError(f"--vary {item!r}: expected KEY=v1,v2,... "
                             "(e.g. --vary device.vf0.load-setup-time=200ms,1s)")
        values = [v.strip() for v in rest.split(",")] if rest.strip() else []
        if any(not v for v in values):
            raise SweepError(f"--vary {key}: an empty value in {rest!r}")
        axes.append(Axis(key, tuple(parse_value(v) for v in values)))
    return axes


def validate(spec: SweepSpec, max_cells: int = MAX_CELLS_RUN) -> list[Cell]:
    """Every axis and every cell checked by the scenario validator; the cells, or SweepError."""
    if not spec.axes:
        raise SweepError("a sweep needs at least one axis (--vary KEY=v1,v2,...)")
    bad = [p for p in spec.policies if p not in policy_names()]
    if bad or not spec.policies:
        raise SweepError(f"policy {', '.join(bad) or '(none)'}: allowed {', '.join(policy_names())}")
    if not 1 <= spec.repeat <= 100:
        raise SweepError(f"repeat = {spec.repeat}: allowed 1..100")
    seen: set[str] = set()
    for axis in spec.axes:
        _check_axis(spec, axis, seen)
    if spec.cell_count > max_cells:
        raise SweepError(f"{spec.cell_count} cells: at most {max_cells} here")
    cells = []
    for cell in spec.cells():
        try:
            cells.append(replace(cell, scenario=parse_scenario(cell.text, f"cell {cell.index}")))
        except ScenarioError as e:
            raise SweepError(f"cell {cell.label}: {e}") from None
    return cells


def _check_axis(spec: SweepSpec, axis: Axis, seen: set[str]) -> None:
    if axis.key in seen:
        raise SweepError(f"--vary {axis.key}: given twice")
    seen.add(axis.key)
    if not axis.values:
        raise SweepError(f"--vary {axis.key}: an empty list of values")
    if len(set(map(str, axis.values))) != len(axis.values):
        raise SweepError(f"--vary {axis.key}: a value is repeated in {list(axis.values)}")
    if axis.key == "name":
        raise SweepError("--vary name: the scenario name is the sweep's (a bounded metric label)")
    if spec.local and axis.key.startswith("link."):
        raise SweepError(f"--vary {axis.key}: local processes on loopback have no shaped link "
                         "(nothing applies [link] there); vary migration.max-bandwidth instead")
    for v in axis.values:
        try:
            parse_scenario(apply_overrides(spec.base_text, {axis.key: v}), axis.key)
        except ScenarioError as e:
            raise SweepError(f"--vary {axis.key}={v}: {e}") from None


# ---------------------------------------------------------------- sweep files


def builtin_sweeps() -> list[str]:
    from importlib import resources

    folder = resources.files("migbed").joinpath("sweeps")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def _sweep_text(name_or_path: str) -> tuple[str, Path | None]:
    from importlib import resources

    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        try:  # bounded: a regular UTF-8 file of at most 256 KiB (migbed/core/bounded.py)
            return read_scenario_text(path), path.parent
        except ScenarioError as e:
            raise SweepError(str(e).replace("scenario file", "sweep file")) from None
    res = resources.files("migbed").joinpath(f"sweeps/{name_or_path}.toml")
    if not res.is_file():
        raise SweepError(f"no built-in sweep {name_or_path!r} (have: {', '.join(builtin_sweeps())})")
    return res.read_text(), None


def base_scenario_text(name_or_path: str, folder: Path | None = None) -> str:
    path = Path(name_or_path)
    if folder is not None and not path.is_absolute() and (folder / path).exists():
        path = folder / path
    if path.suffix == ".toml" or path.exists():
        try:  # bounded, like every scenario file (migbed/core/bounded.py)
            text = read_scenario_text(path)
        except ScenarioError as e:
            raise SweepError(str(e)) from None
    else:
        text = builtin_scenario_text(name_or_path)
    parse_scenario(text, str(name_or_path))
    return text


def load_sweep(name_or_path: str, local: bool = True) -> SweepSpec:
    """A sweep file (TOML: name, description, scenario, policies, repeat, [set], [[axis]])."""
    text, folder = _sweep_text(name_or_path)
    try:
        data = loads_toml(text, f"sweep {name_or_path}")
    except InputError as e:
        raise SweepError(str(e)) from None
    allowed = {"name", "description", "scenario", "policies", "repeat", "set", "axis"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise SweepError(f"sweep {name_or_path}: unknown key(s) {', '.join(unknown)} "
                         f"(allowed: {', '.join(sorted(allowed))})")
    for key in ("name", "scenario", "axis"):
        if key not in data:
            raise SweepError(f"sweep {name_or_path}: {key} is required")
    base = base_scenario_text(str(data["scenario"]), folder)
    fixed = data.get("set", {})
    if not isinstance(fixed, dict):
        raise SweepError(f"sweep {name_or_path}: [set] must be a table of KEY = value")
    if not isinstance(data["axis"], list):
        raise SweepError(f"sweep {name_or_path}: axis must be [[axis]] tables (key, values)")
    axes = []
    for i, a in enumerate(data["axis"]):
        if not isinstance(a, dict) or set(a) != {"key", "values"} or not isinstance(a["values"], list):
            raise SweepError(f"sweep {name_or_path}: axis[{i}] needs exactly key and values (a list)")
        axes.append(Axis(str(a["key"]), tuple(a["values"])))
    try:
        base = apply_overrides(base, fixed)
        parse_scenario(base, f"sweep {name_or_path} [set]")
    except ScenarioError as e:
        raise SweepError(f"sweep {name_or_path} [set]: {e}") from None
    policies = data.get("policies", list(DEFAULT_POLICIES))
    if not isinstance(policies, list) or not all(isinstance(p, str) for p in policies):
        raise SweepError(f"sweep {name_or_path}: policies must be a list of names ({', '.join(policy_names())})")
    repeat = data.get("repeat", 1)
    if isinstance(repeat, bool) or not isinstance(repeat, int):
        raise SweepError(f"sweep {name_or_path}: repeat = {repeat!r}: an integer 1..100")
    return SweepSpec(str(data["name"]), base, axes, policies, repeat, str(data.get("description", "")), local)


# ---------------------------------------------------------------- the run directory


SPEC_FILE, RUNS_FILE, PREDICTIONS_FILE = "sweep.json", "runs.jsonl", "predictions.json"
# The records a local source appends when the sweep dies under it (its runs cancelled):
# kept, and run again by --resume (see to_redo).
ORPHANS_FILE = "orphans.jsonl"


def write_spec(out: Path, spec: SweepSpec, extra: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / SPEC_FILE, {**spec.to_dict(), **extra}, indent=1)


def read_spec(out: Path) -> tuple[SweepSpec, dict[str, Any]]:
    try:
        d = json.loads((out / SPEC_FILE).read_text())
    except (OSError, ValueError) as e:
        raise SweepError(f"--resume {out}: no readable {SPEC_FILE} ({e})") from None
    if not isinstance(d, dict):
        raise SweepError(f"--resume {out}: {SPEC_FILE} is not a sweep definition")
    extra = {k: d.pop(k) for k in list(d) if k not in SweepSpec.__dataclass_fields__}
    try:
        return SweepSpec.from_dict(d), extra
    except (KeyError, TypeError, ValueError) as e:
        raise SweepError(f"--resume {out}: {SPEC_FILE} is not a sweep definition ({e!r})") from None


@dataclass
class FinishedRun:
    cell: int
    policy: str
    repeat: int
    record: RunRecord


def append_run(out: Path, run: FinishedRun) -> None:
    """One line, flushed and fsynced before the next run starts."""
    append_line(out / RUNS_FILE, json.dumps({"cell": run.cell, "policy": run.policy,
                                             "repeat": run.repeat, "record": run.record.to_dict()}))


def read_runs(out: Path, repair: bool = False) -> list[FinishedRun]:
    """The finished runs; a torn last line (killed mid-write) is skipped (and moved aside
    to runs.jsonl.torn-<time> with repair=True); a (cell, policy, repeat) seen twice keeps
    its first record that is a measurement: a run cut short by a stop signal or by its lost
    source (`to_redo`) gives way to the run that --resume made in its place. A record the
    source kept when the sweep died under it (orphans.jsonl) counts only for a run that
    runs.jsonl does not hold."""
    path = out / RUNS_FILE
    runs: dict[tuple[int, str, int], FinishedRun] = {}
    lines = read_journal(path, repair=repair) if path.exists() else []
    for number, line in enumerate(lines, start=1):
        try:
            d = json.loads(line)
            key = (int(d["cell"]), str(d["policy"]), int(d["repeat"]))
            if key not in runs or to_redo(runs[key].record):
                runs[key] = FinishedRun(*key, RunRecord.from_dict(d["record"]))
        except (ValueError, KeyError, TypeError) as e:
            raise SweepError(f"{path}:{number}: not a run record this migbed can read ({e!r}); edited by "
                             "hand, or written by another migbed version?") from None
    for orphan in _orphans(out, repair):
        runs.setdefault((orphan.cell, orphan.policy, orphan.repeat), orphan)
    return list(runs.values())


def _orphans(out: Path, repair: bool) -> list[FinishedRun]:
    """The records in orphans.jsonl, by the cell and repeat their labels name."""
    path = out / ORPHANS_FILE
    if not path.exists():
        return []
    found = []
    for line in read_journal(path, repair=repair):
        with contextlib.suppress(ValueError, KeyError, TypeError):
            rec = RunRecord.from_json(line)
            found.append(FinishedRun(int(rec.labels["cell"]), rec.policy, rec.repeat, rec))
    return found


def to_redo(record: RunRecord) -> bool:
    """A record that measured nothing about its cell: its run was cancelled because the sweep
    got a stop signal or died (its source wrote the record), or its source was lost. Kept
    (runs.jsonl, orphans.jsonl); --resume runs it again."""
    by = record.labels.get(RECORDED_BY, "")
    cut_short = by.startswith("source") and record.outcome != "completed"
    return INTERRUPTED_LABEL in record.labels or by == "orchestrator" or cut_short


def remaining(spec: SweepSpec, done: Iterable[FinishedRun]) -> list[tuple[int, int, str]]:
    """(cell, repeat, policy) still to run, cell by cell, policies interleaved per repeat."""
    have = {(r.cell, r.policy, r.repeat) for r in done if not to_redo(r.record)}
    return [(c, r, p) for c in range(spec.cell_count) for r in range(spec.repeat)
            for p in spec.policies if (c, p, r) not in have]


# ---------------------------------------------------------------- predictions


def predict_cells(spec: SweepSpec, cells: list[Cell], params: Any) -> list[dict[str, Any]]:
    """The model for every cell: [{cell, values, prediction}] (JSON-ready)."""
    from migbed.model import predict

    out = []
    for cell in cells:
        sc = cell.scenario or parse_scenario(cell.text, f"cell {cell.index}")
        out.append({"cell": cell.index, "values": cell.values,
                    "prediction": predict(sc, spec.policies, params).to_dict()})
    return out


def write_predictions(out: Path, predictions: list[dict[str, Any]], params: Any) -> None:
    atomic_write_json(out / PREDICTIONS_FILE, {"params": asdict(params), "cells": predictions},
                      indent=1, default=_json_number)


def _json_number(x: Any) -> Any:
    return str(x)


# ---------------------------------------------------------------- running


def _run_one(control: Any, spec: SweepSpec, cell: Cell, policy: str, repeat: int,
             source: str, target: str, interruption: Interruption | None) -> RunRecord:
    run_id = f"{spec.name}-c{cell.index}-{policy}-r{repeat}-{spec.sweep_id}"
    labels = {"repeat": str(repeat), "sweep": spec.sweep_id, "cell": str(cell.index),
              **{f"axis:{k}": str(v) for k, v in cell.values.items()}}
    control.start(cell.text, policy, target, run_id, labels)
    labels.pop("repeat")
    run = StartedRun(run_id, spec.name, policy, repeat, source, target, labels,
                     time_dilation=dilation_of(cell.text))
    record = follow_run(control, run, interruption)
    record.labels.update(labels)
    return record


@contextlib.contextmanager
def services(out: Path, source: str = "", target: str = "") -> Iterator[tuple[str, str]]:
    """(source, target) addresses: the given ones, or two local processes started here (their
    pids in out/logs/stack.json) and stopped on the way out, or with us if we are killed."""
    if source:
        yield source, target
        return
    from migbed.experiments.localstack import start_service

    logs = out / "logs"
    with contextlib.ExitStack() as stack:  # bound: they die with this process, however it dies
        tsvc = start_service("target", logs, bound=True)
        stack.callback(tsvc.stop)
        ssvc = start_service("source", logs, bound=True, orphan_records=out / ORPHANS_FILE)
        stack.callback(ssvc.stop)
        (logs / "stack.json").write_text(json.dumps(
            {svc.role: {"pid": svc.process.pid, "address": svc.address} for svc in (tsvc, ssvc)}))
        yield ssvc.address, tsvc.address


CALIBRATION_SCENARIO = """\
# The wire's rate, as the model's input: a threshold so high that the first check switches
# over, so the whole RAM goes in the final copy, at the wire's speed (no rate limit there).
name = "wire-calibration"
[guest]
ram-size = "256MiB"
[migration]
max-bandwidth = "1MiB/s"
avail-switchover-bandwidth = "100GiB/s"
downtime-limit = "2000s"
warmup = "100ms"
"""


PRECOPY_CALIBRATION_SCENARIO = """\
# The engine's pre-copy sending rate, as the model's input: an idle RAM-only guest with no rate
# limit and a downtime-limit so small that pre-copy sends the whole RAM (the bulk stage).
name = "precopy-calibration"
[guest]
ram-size = "256MiB"
dirty-rate = "0B/s"
[migration]
max-bandwidth = "100GiB/s"
downtime-limit = "1ms"
warmup = "100ms"
"""


def _downtime_rate(rec: RunRecord) -> float | None:
    if rec.downtime_ms <= 0 or rec.downtime_bytes < (64 << 20):
        return None
    return rec.downtime_bytes / (rec.downtime_ms / 1e3)


def _bulk_stage_rate(rec: RunRecord) -> float | None:
    """The record's bulk-stage rate, if enough RAM went in pre-copy to be a measurement."""
    return rec.bulk_stage_rate() if rec.precopy_bytes >= (64 << 20) else None


def _best_rate(source: str, target: str, scenario: str, rate_of: Any, what: str, runs: int,
               interruption: Interruption | None = None) -> float:
    """The best of `runs` migrations of `scenario`: a rate is a capacity, and a busy host only
    ever lowers a reading."""
    from migbed.experiments.controller import SourceControl

    rates = []
    control = SourceControl(source)
    try:
        for _ in range(runs):
            run_id = f"{what}-calibration-{uuid.uuid4().hex[:8]}"
            control.start(scenario, "legacy", target, run_id, {"repeat": "0"})
            rec = follow_run(control, StartedRun(run_id, f"{what}-calibration", "legacy", 0,
                                                 source, target,
                                                 time_dilation=dilation_of(scenario)),
                             interruption)
            if interruption is not None:
                interruption.check()
            rate = rate_of(rec) if rec.outcome == "completed" else None
            if rate is None:
                raise SweepError(f"measuring the {what} rate failed ({rec.outcome}: {rec.error}); "
                                 f"give --{what}-rate instead")
            rates.append(rate)
    finally:
        control.close()
    return max(rates)


def measure_wire_rate(source: str, target: str, runs: int = 3,
                      interruption: Interruption | None = None, time_dilation: float = 1.0) -> float:
    """Bytes/s the engine's own stream moves between these services with no rate limit: a
    RAM-only migration whose RAM all goes in the final copy (downtime bytes / downtime).
    Dilated by K, in virtual time: K x what the host moves (a dilated sweep's model input)."""
    return _best_rate(source, target, _dilated(CALIBRATION_SCENARIO, time_dilation), _downtime_rate,
                      "wire", runs, interruption)


def _dilated(scenario: str, k: float) -> str:
    return scenario if k == 1.0 else f"time-dilation = {k!r}\n{scenario}"


def measure_precopy_rate(source: str, target: str, runs: int = 3,
                         interruption: Interruption | None = None, multifd_channels: int = 0,
                         time_dilation: float = 1.0) -> float:
    """Bytes/s the engine sends pre-copy RAM at between these services with no rate limit:
    the bulk stage of a RAM-only migration with no dirtying (bench/stream_throughput.py's
    figure), on the main stream or on `multifd_channels` channels. Slower than the final
    copy: dirty-bitmap scans, 50 ms rounds, checks."""
    scenario = PRECOPY_CALIBRATION_SCENARIO
    if multifd_channels:
        scenario += f"multifd = true\nmultifd-channels = {multifd_channels}\n"
    return _best_rate(source, target, _dilated(scenario, time_dilation), _bulk_stage_rate, "precopy",
                      runs, interruption)


def run_sweep(spec: SweepSpec, out: Path, source: str, target: str, progress: bool = True,
              interruption: Interruption | None = None) -> list[FinishedRun]:
    """Run every (cell, repeat, policy) not yet in out/runs.jsonl; returns all finished runs.
    After a stop signal the run in flight is cancelled, recorded, and Interrupted raised;
    after a lost source (its run recorded) no other run starts."""
    import sys

    from tqdm import tqdm

    from migbed.experiments.controller import SourceControl

    cells = spec.cells()
    todo = remaining(spec, read_runs(out, repair=True))
    total = spec.cell_count * spec.repeat * len(spec.policies)
    interactive = progress and sys.stderr.isatty()
    with contextlib.ExitStack() as stack:
        control = SourceControl(source)
        stack.callback(control.close)
        bar = stack.enter_context(tqdm(total=total, initial=total - len(todo), unit="run",
                                       disable=not interactive or not todo, dynamic_ncols=True))
        for n, (ci, repeat, policy) in enumerate(todo, start=total - len(todo) + 1):
            if interruption is not None:
                interruption.check()
            cell = cells[ci]
            bar.set_description(f"cell {ci + 1}/{len(cells)} [{cell.label}] {policy} #{repeat + 1}")
            record = _run_one(control, spec, cell, policy, repeat, source, target, interruption)
            append_run(out, FinishedRun(ci, policy, repeat, record))
            bar.update(1)
            if not interactive and progress:
                print(f"[{n}/{total}] cell {ci + 1} [{cell.label}] {policy} #{repeat + 1}: "
                      f"{record.outcome}, guest downtime {record.guest_downtime_ms:.0f} ms", flush=True)
            if record.labels.get(RECORDED_BY) == "orchestrator":
                break  # the source is lost; --resume runs this one again
    if interruption is not None:
        interruption.check()
    return read_runs(out)
