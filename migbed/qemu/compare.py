"""Real QEMU beside migbed: the same RAM-side scenario migrated by both, on this machine.

QEMU runs first (the comparison guest, see migrate.py), then migbed (a local source and
target over gRPC, legacy policy). Devices are migbed's alone, so the migbed run gets the
scenario without its [[device]] tables; neither side shapes the link (loopback). The
result folder gets qemu.json (every query-migrate sample), migbed.json (the RunRecord),
comparison.json (the table as data) and remaining.png.
"""

from __future__ import annotations

import json
import os
import tomllib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migbed.core.scenario import Scenario, parse_scenario
from migbed.measure.record import RunRecord
from migbed.qemu.install import QemuSetupError, find_guest_files
from migbed.qemu.migrate import QemuRecord, kvm_usable, run_qemu_migration
from migbed.qemu.table import Row, build_rows
from migbed.qemu.vm import QemuRunError


class MigbedRunError(RuntimeError):
    """migbed's own migration in a comparison did not complete."""


@dataclass
class Comparison:
    scenario: str
    qemu: QemuRecord
    migbed: RunRecord
    rows: list[Row]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "notes": self.notes,
                "rows": [r.to_dict() for r in self.rows]}


# ---------------------------------------------------------------- the migbed side


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    raise ValueError(f"cannot write {type(v).__name__} {v!r} to TOML")


def ram_only_toml(sc: Scenario) -> str:
    """The scenario without its devices and its link (neither side is shaped here)."""
    data = tomllib.loads(sc.source_text)
    lines = [f"name = {_toml_value(data.get('name', sc.name))}"]
    for table in ("guest", "migration"):
        if table in data:
            lines.append(f"\n[{table}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in data[table].items()]
    text = "\n".join(lines) + "\n"
    parse_scenario(text, f"{sc.name} (RAM only)")  # the same validation migbed applies
    return text


def run_migbed(sc: Scenario, out: Path, show_progress: bool = False) -> RunRecord:
    from migbed.experiments.comparison import Plan, run_plan
    from migbed.experiments.localstack import local_stack

    toml = ram_only_toml(sc)
    with local_stack(out / "migbed-logs", bound=True) as (source, target):  # die with us
        plan = Plan(sc.name, toml, ["legacy"], 1, source.address, target.address)
        record = run_plan(plan, show_progress=show_progress)[0]
    if record.outcome != "completed":
        raise MigbedRunError(f"migbed's migration {record.outcome}: {record.error}")
    return record


# ---------------------------------------------------------------- both


def notes_for(sc: Scenario, q: QemuRecord, m: RunRecord) -> list[str]:
    s = q.settings
    notes = [
        f"{q.qemu_version}, accel {q.accel}; -m {s['memory_mib']} MiB, guest program buffer "
        f"{s['buffer_size'] / 2**20:.1f} MiB + idle kernel {q.kernel_footprint_bytes / 2**20:.1f} MiB "
        f"non-zero = ram-size {s['ram_size'] / 2**20:.0f} MiB",
        "RAM only: the scenario's devices are migbed's alone and were dropped for both sides"
        if sc.devices else "RAM only (the scenario has no device)",
        "link: loopback, unshaped on both sides" + (" (the scenario's [link] is ignored)"
                                                    if sc.link.rate else ""),
        *([f"QEMU has no max-iterations/max-time cap: the scenario's ({sc.migration.max_iterations} "
            f"iterations, {sc.migration.max_time:g} s) bind migbed only"]
          if sc.migration.max_iterations or sc.migration.max_time else []),
        f"return-path {'on' if s['return_path'] else 'off'}, multifd "
        + (f"on ({s['multifd_channels']} channels)" if s["multifd"] else "off"),
        f"destination guest: {q.destination_ticks_after} ticks after the switchover, "
        f"{q.destination_pages_checked} pages checked, {q.destination_bad_pages} bad",
        f"migbed: verified {m.verified}; {_migbed_timeline(m)}",
        *(["with multifd QEMU counts page data in multifd-bytes only: its precopy-bytes and "
           "downtime-bytes hold the main channel's few bytes"] if s["multifd"] else []),
        "Under TCG, total-time, transferred and dirty-sync-count reproduce run to run; downtime "
        "and guest stall depend on this host's CPU",
    ]
    profile = getattr(sc.migration, "qemu_version", None)  # migbed's QEMU behaviour profile
    real = ".".join(str(x) for x in q.qemu_semver[:2]) if q.qemu_semver else ""
    if profile and real and profile != real:
        notes.append(f"migbed emulates QEMU {profile} (migration.qemu-version); the real QEMU is {real}")
    if q.stall and q.stall_parts:
        p = q.stall_parts
        notes.append(f"QEMU guest stall {q.stall['host_ms']:.0f} ms = {p['before_stop_ms']:.0f} ms from the "
                     f"last source tick to the source's STOP + {p['stop_to_resume_ms']:.0f} ms to the "
                     f"destination's RESUME + {p['after_resume_ms']:.0f} ms to its first tick "
                     f"(ticks every {q.stall['tick_period_ms']:.0f} ms)")
    if q.stall and not q.stall.get("continuous", True):
        notes.append("WARNING: the destination's first tick does not follow the source's last")
    return notes


def _migbed_timeline(m: RunRecord) -> str:
    """Where migbed's total_time_ms went, from its own events (for reading a total-time miss)."""
    accepted, done = m.event_time("setup-accepted"), m.event_time("completed")
    if accepted is None or done is None:
        return f"total_time_ms {m.total_time_ms:.0f}"
    return (f"setup-accepted at {accepted:.0f} ms, completed at {done:.0f} ms, "
            f"total_time_ms {m.total_time_ms:.0f}")


_kvm_probed: dict[str, bool] = {}


def _kvm_works(workdir: Path) -> bool:
    """The probe costs up to 6 s where KVM hangs: once per process."""
    if "kvm" not in _kvm_probed:
        _kvm_probed["kvm"] = kvm_usable(find_guest_files(), workdir)
    return _kvm_probed["kvm"]


def choose_accel(requested: str, out: Path) -> str:
    """tcg as asked; kvm only where a guest really runs under it; auto: kvm if so, else tcg."""
    if requested == "tcg":
        return "tcg"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        if requested == "kvm":
            raise QemuSetupError("--accel kvm: /dev/kvm is missing or not accessible to this user; "
                                 "use --accel tcg (or auto)")
        return "tcg"
    if _kvm_works(out / "kvm-probe"):
        return "kvm"
    if requested == "kvm":
        raise QemuSetupError("--accel kvm: /dev/kvm exists but a guest does not run under it (no "
                             "tick within 6 s or QEMU aborted; e.g. a nested PVM device); use --accel tcg")
    return "tcg"


def run_comparison(sc: Scenario, out: Path, accel: str = "tcg", show_progress: bool = False,
                   tag: str = "", boot_timeout: float = 90.0) -> Comparison:
    out.mkdir(parents=True, exist_ok=True)
    files = find_guest_files()
    accel = choose_accel(accel, out)
    tag = tag or f"migbed-{uuid.uuid4().hex[:8]}"
    try:
        q = run_qemu_migration(sc, files, out / "qemu", accel, boot_timeout, tag)
    except QemuRunError as e:  # what was measured up to the failure is kept too
        if e.record is not None:
            (out / "qemu.json").write_text(json.dumps(e.record.to_dict(), indent=1))
        raise
    (out / "qemu.json").write_text(json.dumps(q.to_dict(), indent=1))
    m = run_migbed(sc, out, show_progress)
    (out / "migbed.json").write_text(json.dumps(m.to_dict(), indent=1))
    cmp = Comparison(sc.name, q, m, build_rows(q, m), notes_for(sc, q, m))
    (out / "comparison.json").write_text(json.dumps(cmp.to_dict(), indent=1))
    plot_remaining(q, m, out / "remaining.png")
    return cmp


def plot_remaining(q: QemuRecord, m: RunRecord, path: Path) -> Path:
    """Remaining and transferred bytes over time, both sides. QEMU's remaining counts the
    guest's zero pages until its first pass has scanned them; transferred compares directly."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    qs = [s["info"] for s in q.samples if "ram" in s["info"] and "total-time" in s["info"]]
    q_t = [i["total-time"] for i in qs]
    m_t = [s.t_ms for s in m.timeline]
    for ax, key, attr, label in ((axes[0], "remaining", "ram_remaining_bytes", "RAM remaining (MiB)"),
                                 (axes[1], "transferred", "ram_transferred_bytes", "RAM transferred (MiB)")):
        ax.plot(q_t, [i["ram"][key] / 2**20 for i in qs], label=f"QEMU ({q.accel})", marker=".", linewidth=1)
        ax.plot(m_t, [getattr(s, attr) / 2**20 for s in m.timeline], label="migbed (legacy)",
                marker=".", linewidth=1)
        # Where each side stopped the guest: QEMU's downtime ends at its total-time.
        q_end, q_down = q.final.get("total-time"), q.final.get("downtime")
        if q_end is not None and q_down is not None:
            ax.axvline(q_end - q_down, color="C0", linestyle="--", linewidth=0.8, label="QEMU stop")
        m_stop = m.event_time("stop")
        if m_stop is not None:
            ax.axvline(m_stop, color="C1", linestyle="--", linewidth=0.8, label="migbed stop")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend()
    axes[0].set_title(f"{m.scenario}: QEMU vs migbed")
    axes[1].set_xlabel("ms since migration start")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
