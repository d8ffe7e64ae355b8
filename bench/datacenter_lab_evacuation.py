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

from migbed.datacenter.report import summarise
from migbed.datacenter.simulator import simulate_datacenter
from migbed.datacenter.spec import parse_datacenter

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


def overheads(out: Path, fleet: list[dict[str, Any]]) -> tuple[float, float]:
    """(before, after) s: medians over the calibration's guests, as bench/datacenter_evacuation.py."""
    verification = {r["run_id"]: r["verification_ms"] for r in json.loads((out / "results.json").read_text())}
    before, after = [], []
    for res in fleet:
        for g in res["guests"]:
            v = verification[g["run_id"]] / 1e3
            after.append(v)
            before.append((g["end_ms"] - g["start_ms"] - g["total_time_ms"]) / 1e3 - v)
    return statistics.median(before), statistics.median(after)


def simulated(scenario: Path, before: float, after: float) -> dict[str, dict[str, Any]]:
    spec = parse_datacenter(f"""name = "lab-evacuation"
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
    return {r.policy: summarise(spec, r) for r in simulate_datacenter(spec)}


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
        sim = simulated(scenario, before, after)
    rows = [["policy", "figure", "measured", "simulated", "sim / measured", f"within {GOAL:.0%}"]]
    for res in measured:
        guests = [g for g in res["guests"] if g["outcome"] == "completed" and g["verified"]]
        s = sim[res["policy"]]
        pairs = [("drain time s", res["drain_time_ms"] / 1e3, s["drain_time_s"]),
                 ("guest downtime ms (median)", statistics.median(g["guest_downtime_ms"] for g in guests),
                  s["guest_downtime_s"]["p50"] * 1e3),
                 ("total time ms (median)", statistics.median(g["total_time_ms"] for g in guests),
                  s["total_time_s"]["p50"] * 1e3)]
        for name, m, v in pairs:
            rows.append([str(res["policy"]), name, f"{m:.1f}" if m < 100 else f"{m:.0f}",
                         f"{v:.1f}" if v < 100 else f"{v:.0f}", f"{v / m:.3f}",
                         "yes" if abs(v / m - 1) <= GOAL else "NO"])
        rows.append([str(res["policy"]), "verified", f"{len(guests)}/{len(res['guests'])}", "-", "-", "-"])
    print()
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
