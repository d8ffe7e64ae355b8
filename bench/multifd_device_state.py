"""QEMU 10's multifd device state against the main stream, measured in one run.

    .venv/bin/python bench/multifd_device_state.py [--repeat 3]

The `multifd-device-state` comparison (migbed/scenarios/multifd-device-state.toml): four VFs
of ~100 MiB stop-copy state each, a published per-VF stop-copy load cost (~230 ms) and an
mlx5-like initial image, switchover-ack, QEMU 10.0, multifd with 4 channels. Per repeat,
alternating the order, one run with `device-state-transfer = "main"` (each device's state on
the main stream, loaded inline one after another) and one with `"multifd"` (QEMU 10.0's
default with multifd: every device's state in device-state packets on the four shared
multifd channels beside the RAM, each device loaded by its own task from switchover start).
The inputs are the per-device figures in the scenario file; the downtimes are results.

The figure: median QEMU-reported downtime (multifd) / median (main). The published shape
(4 ConnectX-7 VFs, ~400 MiB, 100 GbE, switchover-ack): ~2100 -> ~1100 ms, a ratio of ~0.52.
Nothing is asserted; the load average is printed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from _common import header, load_average, median, migrate, require_ok, scenario_toml, stack, table

from migbed.measure.record import RunRecord

MODES = ("main", "multifd")
PUBLISHED_RATIO = 1100 / 2100


def _row(mode: str, i: int, rec: RunRecord) -> list[str]:
    return [mode, str(i), f"{rec.downtime_ms:.0f}", f"{rec.guest_downtime_ms:.0f}",
            f"{rec.stop_copy_ms:.0f}", f"{rec.destination_load_ms:.0f}",
            f"{rec.downtime_bytes / 2**20:.0f}", load_average()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    header(f"multifd device state vs the main stream, 4 VFs x ~100 MiB ({args.repeat} repeats)")
    rows = [["device state", "#", "downtime ms", "guest downtime ms", "stop-copy ms",
             "destination load ms", "downtime MiB", "load avg"]]
    downtimes: dict[str, list[float]] = {m: [] for m in MODES}
    with tempfile.TemporaryDirectory(prefix="migbed-mds-") as tmp, \
            stack(Path(tmp)) as (source, target):
        for i in range(1, args.repeat + 1):
            for mode in MODES if i % 2 else tuple(reversed(MODES)):
                toml = scenario_toml("multifd-device-state",
                                     f"migration.device-state-transfer={mode}")
                rec = require_ok(migrate(source, target.address, toml, "switchover-ack"))
                downtimes[mode].append(rec.downtime_ms)
                rows.append(_row(mode, i, rec))
                print(f"  {mode:7s} #{i}: downtime {rec.downtime_ms:.0f} ms (stop-copy "
                      f"{rec.stop_copy_ms:.0f}, destination load {rec.destination_load_ms:.0f})",
                      flush=True)
    print()
    print(table(rows))
    main_ms, multifd_ms = median(downtimes["main"]), median(downtimes["multifd"])
    print(f"\ndowntime multifd / main = {multifd_ms:.0f} / {main_ms:.0f} ms = "
          f"{multifd_ms / main_ms:.2f} (published ~2100 -> ~1100 ms: {PUBLISHED_RATIO:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
