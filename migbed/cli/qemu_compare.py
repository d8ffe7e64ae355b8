"""`migbed qemu-compare SCENARIO`: the scenario's RAM side on real QEMU and on migbed, side by side.

SCENARIO is a TOML file or the name of a built-in scenario. Prints the table (QEMU's names,
migbed's fields, both values, the ratio, the fidelity goal) and writes qemu.json,
migbed.json, comparison.json and remaining.png into the results folder.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import Any

from migbed.cli.args import progress_wanted
from migbed.core.scenario import ScenarioError, resolve_scenario

REAL_TIME = ("real QEMU runs in real time (its clocks, its migration thread, the guest's vCPUs): "
             "it cannot be dilated, and a comparison needs both sides in the same time")


def load(arg: str) -> Any:
    sc = resolve_scenario(arg)  # the one resolver: a file or a built-in name
    if sc.time_dilation != 1.0:
        raise ScenarioError(f"scenario.time-dilation = {sc.time_dilation:g}: qemu-compare refuses it: "
                            f"{REAL_TIME}; remove the key")
    return sc


def _refuse_dilation(value: str) -> str:
    raise argparse.ArgumentTypeError(f"qemu-compare takes no time dilation: {REAL_TIME}")


def _seconds(value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not 0 < x <= 3600:
        raise argparse.ArgumentTypeError(f"{x:g} is out of range (0..3600 s)")
    return x


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("qemu-compare", help="migrate the scenario's RAM side on real QEMU "
                              "and on migbed, print both side by side",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario", help="TOML file or built-in scenario name")
    p.add_argument("--out", help="results folder (default results/qemu-<timestamp>)")
    p.add_argument("--accel", choices=["auto", "tcg", "kvm"], default="auto",
                   help="auto: KVM only if a guest really ticks under it within seconds, else TCG")
    p.add_argument("--boot-timeout", type=_seconds, default=90.0,
                   help="seconds the guest has to boot and touch its memory (90)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar for migbed's run (there is none when stderr is not a terminal)")
    p.add_argument("--time-dilation", type=_refuse_dilation, metavar="K|auto",
                   help="refused: real QEMU cannot be dilated (run, up, deploy, sweep and "
                   "evacuate take it)")
    p.set_defaults(func=main)
    return p


def main(args: argparse.Namespace) -> int:
    from migbed.qemu.compare import MigbedRunError, run_comparison
    from migbed.qemu.install import QemuSetupError
    from migbed.qemu.table import format_table
    from migbed.qemu.vm import QemuRunError

    out = Path(args.out or Path("results") / dt.datetime.now().strftime("qemu-%Y%m%d-%H%M%S"))
    try:
        import matplotlib  # noqa: F401  (the plot)
        import qemu.qmp  # noqa: F401  (the QMP client)
    except ImportError as e:
        print(f"migbed qemu-compare: error: needs {e.name}: install the `qemu` extra "
              "(pip install 'migbed[qemu]'; bin/migbed's .venv has it)", file=sys.stderr)
        return 2
    try:
        sc = load(args.scenario)
        print(f"migbed qemu-compare: scenario {sc.name}; results in {out}", flush=True)
        cmp = run_comparison(sc, out, args.accel, show_progress=progress_wanted(args.no_progress),
                             boot_timeout=args.boot_timeout)
    except (ScenarioError, QemuSetupError, QemuRunError, MigbedRunError) as e:
        print(f"migbed qemu-compare: error: {e}", file=sys.stderr)
        return 2
    print()
    print(format_table(cmp.rows))
    print()
    for note in cmp.notes:
        print(f"  {note}")
    print(f"\nrecords: {out / 'qemu.json'}  {out / 'migbed.json'}  {out / 'comparison.json'}\n"
          f"plot:    {out / 'remaining.png'}")
    return 0 if cmp.qemu.intact and cmp.migbed.verified else 1
