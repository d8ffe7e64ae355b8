"""The side-by-side table, as data: one row per QEMU figure with migbed's, their ratio and
whether the fidelity goal (issue 12) is met. Pure: built from a QemuRecord and a RunRecord.

Goals, migbed against QEMU on RAM-only runs: total-time and transferred within 10 %,
dirty-sync-count within 1, downtime within 1.5x or 10 ms, guest stall within 20 ms.
Rows without a goal are shown for the reader; their "goal" cell is "-".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from migbed.measure.record import RunRecord
from migbed.qemu.migrate import QemuRecord

MiB = 1024 * 1024


@dataclass(frozen=True)
class Goal:
    text: str
    check: Callable[[float, float], bool]  # (qemu, migbed) -> met


def _within_ratio(frac: float) -> Callable[[float, float], bool]:
    return lambda q, m: q > 0 and abs(m / q - 1) <= frac


def _downtime_ok(q: float, m: float) -> bool:
    return abs(m - q) <= 10 or (q > 0 and m > 0 and max(m / q, q / m) <= 1.5)


GOALS: dict[str, Goal] = {
    "total-time": Goal("within 10 %", _within_ratio(0.10)),
    "transferred": Goal("within 10 %", _within_ratio(0.10)),
    "dirty-sync-count": Goal("within 1", lambda q, m: abs(m - q) <= 1),
    "downtime": Goal("within 1.5x or 10 ms", _downtime_ok),
    "guest stall": Goal("within 20 ms", lambda q, m: abs(m - q) <= 20),
}


@dataclass(frozen=True)
class Row:
    name: str  # QEMU's name
    migbed_field: str  # RunRecord's
    unit: str  # "ms", "bytes" or "" (a count)
    qemu: float | None
    migbed: float | None
    goal: str  # "-" when the row has none
    met: bool | None  # None: no goal, or a value is missing

    @property
    def ratio(self) -> float | None:
        if self.qemu is None or self.migbed is None or self.qemu == 0:
            return None
        return self.migbed / self.qemu

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"ratio": self.ratio}


def qemu_transferred(ram: dict[str, Any]) -> float:
    """QEMU 10's `ram.transferred` already holds the multifd channels' bytes (measured here:
    transferred 142143824 with multifd-bytes 142065152 on a multifd run); `multifd-bytes` is
    reported beside it and must not be added again."""
    return float(ram.get("transferred", 0))


def last_expected_downtime(samples: list[dict[str, Any]]) -> float | None:
    """expected-downtime of the last sample taken while still in pre-copy."""
    for s in reversed(samples):
        info = s["info"]
        if info.get("status") == "active" and "expected-downtime" in info:
            return float(info["expected-downtime"])
    return None


def migbed_expected_downtime(r: RunRecord) -> float:
    pre = [s for s in r.timeline if s.phase == "precopy"]
    return pre[-1].expected_downtime_ms if pre else r.expected_downtime_ms


def qemu_values(q: QemuRecord) -> dict[str, float | None]:
    f, ram = q.final, q.final.get("ram", {})
    return {
        "total-time": f.get("total-time"), "setup-time": f.get("setup-time"),
        "downtime": f.get("downtime"),
        "guest stall": q.stall["host_ms"] if q.stall else None,
        "dirty-sync-count": ram.get("dirty-sync-count"),
        "transferred": qemu_transferred(ram) if ram else None,
        "precopy-bytes": ram.get("precopy-bytes"), "downtime-bytes": ram.get("downtime-bytes"),
        "multifd-bytes": ram.get("multifd-bytes"),
        "expected-downtime": last_expected_downtime(q.samples),
    }


# (QEMU name, RunRecord field, unit, how migbed's value is read)
ROWS: list[tuple[str, str, str, Callable[[RunRecord], float | None]]] = [
    ("total-time", "total_time_ms", "ms", lambda r: r.total_time_ms),
    ("setup-time", "setup_time_ms", "ms", lambda r: r.setup_time_ms),
    ("downtime", "downtime_ms", "ms", lambda r: r.downtime_ms),
    ("guest stall", "guest_downtime_ms", "ms", lambda r: r.guest_downtime_ms),
    ("dirty-sync-count", "dirty_sync_count", "", lambda r: r.dirty_sync_count),
    ("transferred", "ram_transferred_bytes", "bytes", lambda r: r.ram_transferred_bytes),
    ("precopy-bytes", "precopy_bytes", "bytes", lambda r: r.precopy_bytes),
    ("downtime-bytes", "downtime_bytes", "bytes", lambda r: r.downtime_bytes),
    ("multifd-bytes", "-", "bytes", lambda r: None),
    ("expected-downtime", "expected_downtime_ms (last pre-copy sample)", "ms", migbed_expected_downtime),
]


def build_rows(q: QemuRecord, r: RunRecord) -> list[Row]:
    qv = qemu_values(q)
    rows = []
    for name, field_name, unit, read in ROWS:
        qemu, mig = qv.get(name), read(r)
        qemu = None if qemu is None else float(qemu)
        mig = None if mig is None else float(mig)
        goal = GOALS.get(name)
        met = goal.check(qemu, mig) if goal and qemu is not None and mig is not None else None
        rows.append(Row(name, field_name, unit, qemu, mig, goal.text if goal else "-", met))
    return rows


def _show(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    return f"{v / MiB:.1f} MiB" if unit == "bytes" else f"{v:.0f}{' ' + unit if unit else ''}"


def _goal_cell(row: Row) -> str:
    if row.goal == "-":
        return "-"
    if row.met is None:
        return f"{row.goal}: n/a"
    return f"{row.goal}: {'yes' if row.met else 'NO'}"


def format_table(rows: list[Row]) -> str:
    head = ["QEMU", "migbed field", "QEMU value", "migbed value", "ratio", "goal met"]
    body = [[r.name, r.migbed_field, _show(r.qemu, r.unit), _show(r.migbed, r.unit),
             f"{r.ratio:.2f}" if r.ratio is not None else "-", _goal_cell(r)] for r in rows]
    cells = [head, *body]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_markdown(rows: list[Row]) -> str:
    out = ["| QEMU | migbed field | QEMU | migbed | ratio | goal met |", "|---|---|---:|---:|---:|---|"]
    for r in rows:
        ratio = f"{r.ratio:.2f}" if r.ratio is not None else "-"
        out.append(f"| {r.name} | {r.migbed_field} | {_show(r.qemu, r.unit)} | "
                   f"{_show(r.migbed, r.unit)} | {ratio} | {_goal_cell(r)} |")
    return "\n".join(out)
