"""The simulation against the lab-host evacuation of tests/deploy, in one go: two source
hosts, two target hosts and a monitor as sshd containers reached over real SSH (`migbed
deploy --evacuate`), tiny guests on a 400 Mbit/s tbf link on each source's egress, 6 guests
at P=2, C=3, both policies; then `migbed simulate` of the same.

    .venv/bin/python bench/datacenter_lab_evacuation.py

Needs Docker (lab containers: under the shared lock). Builds deploy/labhost's image (a no-op
when up to date) and a wheelhouse, as tests/deploy does.

Inputs given to the simulation, measured in the same run: the per-migration time outside
QEMU's total time (boot, warm-up, allocation before; verification after), from a calibration
evacuation of two guests per source host, one in flight per source (two rounds of two, one
onto each target: it also warms every target), per policy, the median over its guests; the
link: 400 Mbit/s out of each source (the tbf the deploy puts there), the targets' receive
side not shaped (nic-in: the Docker bridge, taken as 10 Gbit/s).
Two simulations per policy:
- "from calibration": every migration begins the calibration's median overhead after its
  slot opened. Nothing of the checked evacuation goes in: a prediction.
- "measured starts": each migration begins its own measured overhead (boot, warm-up,
  allocation: start to QEMU's clock zero) after its slot opened, taken from the checked
  evacuation, as bench/datacenter_sharing.py gives each run its measured start. The planner,
  the sharing of the links and each migration's course stay the simulation's. This checks
  the sharing rule and the model where the first misses on when the final copies overlap
  (the same overhead everywhere starts a source's migrations in step).
Goal (issue 25): drain time and median guest-visible downtime within 10 %, per policy.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import ROOT, header, table

sys.path.insert(0, str(ROOT / "tests" / "deploy"))

import docker
from deploylab import build_labhost, run_deploy, start_lab

from migbed.datacenter.course import CourseCache
from migbed.datacenter.report import summarise
from migbed.datacenter.simulator import Simulation
from migbed.datacenter.spec import DatacenterSpec, parse_datacenter

SOURCES = ["lab-src1", "lab-src2"]
TARGETS = ["lab-tgt1", "lab-tgt2"]
RATE = "400Mbit"
GOAL = 0.10
POLICIES = ["legacy", "switchover-ack"]


def deploy_evacuation(inventory: Path, out: Path, wheelhouse: Path, scenario: Path, guests: int,
                      per_source: int, per_cluster: int) -> list[dict[str, Any]]:
    out.mkdir(parents=True, exist_ok=True)
    res = run_deploy(inventory, out, "--wheelhouse", str(wheelhouse), "--evacuate", "--scenario", str(scenario),
                     *(a for p in POLICIES for a in ("--policy", p)), "--guests", str(guests),
                     "--per-source", str(per_source), "--per-cluster", str(per_cluster), "--no-progress",
                     timeout=1800)
    if res.rc != 0:
        raise RuntimeError(f"migbed deploy --evacuate failed ({res.rc}): {res.stderr[-2000:]}")
    fleet: list[dict[str, Any]] = json.loads((out / "fleet.json").read_text())
    return fleet


def verification_ms(out: Path) -> dict[str, float]:
    """Each run's verification time, from an evacuation's results.json."""
    return {r["run_id"]: r["verification_ms"] for r in json.loads((out / "results.json").read_text())}


def guest_overheads(verification: dict[str, float],
                    res: dict[str, Any]) -> list[tuple[dict[str, Any], float, float]]:
    """(guest, before s, after s) for each of one policy's guests: before = its start to
    QEMU's clock zero, after = its verification."""
    rows = []
    for g in res["guests"]:
        v = verification[g["run_id"]] / 1e3
        rows.append((g, (g["end_ms"] - g["start_ms"] - g["total_time_ms"]) / 1e3 - v, v))
    return rows


def overheads(out: Path, fleet: list[dict[str, Any]]) -> tuple[float, float]:
    """(before, after) s: medians over the calibration's guests, as bench/datacenter_evacuation.py."""
    verification = verification_ms(out)
    rows = [row for res in fleet for row in guest_overheads(verification, res)]
    return statistics.median(b for _, b, _ in rows), statistics.median(a for _, _, a in rows)


def measured_start_delays(verification: dict[str, float], res: dict[str, Any], before: float) -> list[float]:
    """Per simulated guest (m1.. numbered host by host, SOURCES[i] = host i, as the
    simulation deals them), its real counterpart's overhead beyond `before`: the k-th guest
    started on a source host stands for that host's k-th simulated guest."""
    by_host: dict[str, list[float]] = {h: [] for h in SOURCES}
    for g, b, _ in sorted(guest_overheads(verification, res), key=lambda row: row[0]["start_ms"]):
        by_host[g["source_host"]].append(b - before)
    return [d for h in SOURCES for d in by_host[h]]


def lab_datacenter(scenario: Path, before: float, after: float) -> DatacenterSpec:
    return parse_datacenter(f"""name = "lab-evacuation"
[topology]
racks = 1
hosts-per-rack = 4
nic = "{RATE}"
nic-in = "10Gbit"
oversubscription = 1
[[guests]]
scenario = "{scenario}"
per-host = 3
[drain]
hosts = [0, 1]
[limits]
per-source = 2
per-cluster = 3
[simulation]
policies = {json.dumps(POLICIES)}
overhead-before = "{before * 1e3:.0f}ms"
overhead-after = "{after * 1e3:.0f}ms"
""")


def simulated(spec: DatacenterSpec, cache: CourseCache, policy: str, start_delays: list[float]) -> dict[str, Any]:
    return summarise(spec, Simulation(spec, policy, cache, start_delays=start_delays).run())


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    header("simulation vs the lab-host evacuation (2 sources, 2 targets, 6 x tiny at 400 Mbit/s, P=2, C=3)")
    client = docker.from_env()
    image = build_labhost("migbed/labhost:bookworm")
    with tempfile.TemporaryDirectory(prefix="migbed-dc-lab-") as tmp_name:
        tmp = Path(tmp_name)
        wheelhouse = tmp / "wheelhouse"
        subprocess.run(["bash", str(ROOT / "images" / "fetch-wheels.sh"), str(wheelhouse)], check=True,
                       capture_output=True, env=os.environ | {"MIGBED_PYTHON": sys.executable})
        scenario = tmp / "tiny-shaped.toml"
        scenario.write_text((ROOT / "migbed" / "scenarios" / "tiny.toml").read_text() + f'\n[link]\nrate = "{RATE}"\n')
        (tmp / "lab").mkdir()
        with start_lab(client, image, tmp / "lab", (*SOURCES, *TARGETS, "lab-mon")) as lab:
            inventory = lab.fleet_inventory({"source": SOURCES, "target": TARGETS, "monitor": ["lab-mon"]})
            calibration = deploy_evacuation(inventory, tmp / "calibration", wheelhouse, scenario, 4, 1, 2)
            before, after = overheads(tmp / "calibration", calibration)
            print(f"   per-migration overhead (measured): before {before * 1e3:.0f} ms, after {after * 1e3:.0f} ms",
                  flush=True)
            measured = deploy_evacuation(inventory, tmp / "evacuation", wheelhouse, scenario, 6, 2, 3)
        spec = lab_datacenter(scenario, before, after)
        cache = CourseCache([m.scenario for m in spec.mix], spec.bandwidth_step)  # both simulations
        verification = verification_ms(tmp / "evacuation")
        rows = [["policy", "simulation", "figure", "measured", "simulated", "sim / measured", f"within {GOAL:.0%}"]]
        for res in measured:
            delays = measured_start_delays(verification, res, before)
            for kind, sim in (("from calibration", simulated(spec, cache, res["policy"], [])),
                              ("measured starts", simulated(spec, cache, res["policy"], delays))):
                rows += compare(res, kind, sim)
    print()
    print(table(rows))
    return 0


def compare(res: dict[str, Any], kind: str, sim: dict[str, Any]) -> list[list[str]]:
    """One policy's measured figures beside one simulation's, and the verified count."""
    guests = [g for g in res["guests"] if g["outcome"] == "completed" and g["verified"]]
    pairs = [("drain time s", res["drain_time_ms"] / 1e3, sim["drain_time_s"]),
             ("guest downtime ms (median)", statistics.median(g["guest_downtime_ms"] for g in guests),
              sim["guest_downtime_s"]["p50"] * 1e3),
             ("total time ms (median)", statistics.median(g["total_time_ms"] for g in guests),
              sim["total_time_s"]["p50"] * 1e3)]
    policy = str(res["policy"])
    rows = [[policy, kind, name, f"{m:.1f}" if m < 100 else f"{m:.0f}", f"{v:.1f}" if v < 100 else f"{v:.0f}",
             f"{v / m:.3f}", "yes" if abs(v / m - 1) <= GOAL else "NO"] for name, m, v in pairs]
    rows.append([policy, kind, "verified", f"{len(guests)}/{len(res['guests'])}", "-", "-", "-"])
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
