"""Driver x policy: the same guest, link and device inputs under each driver profile.

    .venv/bin/python bench/driver_matrix.py [--repeat 3] [--scenario cover-letter]
        [--driver mlx5 --driver generic ...] [--policy legacy ...] [--set KEY=VALUE ...]
        [--out DIR]

Each driver is one real `migbed run` (local source and target processes over gRPC) of the
scenario with `device.vf0.driver` set to it, under legacy, switchover-ack and time-aware
(or the --policy ones). The scenario
(default `cover-letter`) sets every timing input of its VF explicitly (setup, load rate,
stop-copy load and save, suspend, resume, tracker report rate), so the drivers differ only
in their semantics (migbed/core/drivers.py): MIG_DATA_SIZE, when images are cut, whether
the device has PRE_COPY, sync or async save, when the destination loads. The sizes are the
scenario's for every driver (a 300 MB initial image is mlx5's kind of state, not hisi_acc's
176 bytes): the table shows what each driver's semantics do to one device, not each
driver's typical device.

Printed per (driver, policy): medians [min-max] of the QEMU-reported downtime, the
guest-visible downtime and total time; how pre-copy ended (what the policy's go rested on,
the record's decision_basis: data, prediction, floor, data (no prediction); or the
cap that forced it); the policy's own downtime prediction at its decision (median; legacy
and switchover-ack's is their data time); the model's (`migbed predict --unshaped`, same
scenario and driver, its default wire rate); the load average when the driver's runs
ended. Results: one folder per driver under --out (results.json, as `migbed run` writes).
Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import ROOT, header, load_average, median, table

from migbed.core.drivers import DRIVERS
from migbed.core.policy import policy_names
from migbed.core.scenario import resolve_scenario
from migbed.measure.record import RunRecord
from migbed.model import ModelParams, predict
from migbed.report.stats import format_spread
from migbed.report.summary import switched_on

POLICIES = ("legacy", "switchover-ack", "time-aware")


def model_downtimes(driver: str, args: argparse.Namespace) -> dict[str, float]:
    """ms per policy: `migbed predict --unshaped` of the same scenario and driver."""
    sc = resolve_scenario(args.scenario, [*args.overrides, f"device.vf0.driver={driver}"])
    pred = predict(sc, args.policies, ModelParams(shaped=False))
    return {p: pred.outcomes[p].downtime_s * 1e3 for p in args.policies}


def run_driver(driver: str, args: argparse.Namespace, out: Path) -> list[RunRecord]:
    folder = out / driver
    cmd = [str(ROOT / "bin" / "migbed"), "run", "--scenario", args.scenario, "--repeat",
           str(args.repeat), "--out", str(folder), "--no-report", "--no-progress",
           "--set", f"device.vf0.driver={driver}"]
    for kv in args.overrides:
        cmd += ["--set", kv]
    for p in args.policies:
        cmd += ["--policy", p]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"{driver}: migbed run failed:\n{proc.stderr[-2000:]}")
    return [RunRecord.from_dict(x) for x in json.loads((folder / "results.json").read_text())]


def rows_of(driver: str, records: list[RunRecord], model: dict[str, float], load: str,
            policies: list[str]) -> list[list[str]]:
    rows = []
    for p in policies:
        done = [r for r in records if r.policy == p and r.outcome == "completed"]
        rows.append([driver, p, f"{len(done)}/{sum(r.policy == p for r in records)}",
                     format_spread([r.downtime_ms for r in done]),
                     format_spread([r.guest_downtime_ms for r in done]),
                     format_spread([r.total_time_ms for r in done]), switched_on(done),
                     f"{median([r.predicted_downtime_ms for r in done]):.0f}",
                     f"{model[p]:.0f}", load])
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--scenario", default="cover-letter")
    p.add_argument("--driver", action="append", choices=sorted(DRIVERS), dest="drivers")
    p.add_argument("--policy", action="append", choices=policy_names(), dest="policies")
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    drivers = args.drivers or list(DRIVERS)
    args.policies = list(dict.fromkeys(args.policies or POLICIES))
    header(f"driver x policy on {args.scenario} {' '.join(args.overrides)} "
           f"({args.repeat} repeats)")
    rows = [["driver", "policy", "ok", "downtime ms (QEMU)", "guest downtime ms",
             "total ms", "switched on", "policy's prediction ms", "model ms", "load avg"]]
    with tempfile.TemporaryDirectory(prefix="migbed-drivers-") as tmp:
        out = args.out or Path(tmp)
        for d in drivers:
            records = run_driver(d, args, out)
            rows += rows_of(d, records, model_downtimes(d, args), load_average(), args.policies)
            medians = ", ".join(
                f"{pol} {median([r.downtime_ms for r in records if r.policy == pol]):.0f} ms"
                for pol in args.policies)
            print(f"  {d:9s} {medians}", flush=True)
    print()
    print(table(rows))
    print("\n| " + " | ".join(rows[0]) + " |\n|" + " --- |" * len(rows[0]))
    for r in rows[1:]:
        print("| " + " | ".join(r) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
