"""QEMU 10's multifd device state against the main stream, measured in one run.

    .venv/bin/python bench/multifd_device_state.py [--repeat 3]
    .venv/bin/python bench/multifd_device_state.py \\
        --link-rate 100Gbit --time-dilation auto [--repeat 3]

The `multifd-device-state` comparison (migbed/scenarios/multifd-device-state.toml): four VFs
of ~100 MiB stop-copy state each, a published per-VF stop-copy load cost (~230 ms) and an
mlx5-like initial image, switchover-ack, QEMU 10.0, multifd with 4 channels. Per repeat,
alternating the order, one run with `device-state-transfer = "main"` (each device's state on
the main stream, loaded inline one after another) and one with `"multifd"` (QEMU 10.0's
default with multifd: every device's state in device-state packets on the four shared
multifd channels beside the RAM, each device loaded by its own task from switchover start).
The inputs are the per-device figures in the scenario file; the downtimes are results.

--link-rate puts the published link (100 GbE) in: a veth pair to a network namespace, its
egress shaped by tc tbf at the rate / K (needs root). A 100 Gbit
link is more than this host moves, so --time-dilation runs the experiment K times slower
(auto: the smallest K at which the link's rate is at most half of this host's multifd rate,
migbed/core/dilation.py); every figure printed is virtual. Beside the measured medians: what
`migbed predict` says for the same inputs (the analytical model, migbed/model/).

The figure: median QEMU-reported downtime (multifd) / median (main). The published shape
(4 ConnectX-7 VFs, ~400 MiB, 100 GbE, switchover-ack): ~2100 -> ~1100 ms, a ratio of ~0.52.
Nothing is asserted; the load average is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from _common import (
    NetnsLink,
    can_make_namespaces,
    header,
    load_average,
    median,
    migrate,
    require_ok,
    scenario_toml,
    stack,
    table,
)

from migbed.core.dilation import shaped_link
from migbed.core.scenario import Scenario, parse_scenario
from migbed.env.shaping import clear_commands, link_shape, shaping_commands
from migbed.experiments.localstack import Service
from migbed.measure.record import RunRecord
from migbed.model import ModelParams, predict

MODES = ("main", "multifd")
POLICY = "switchover-ack"
PUBLISHED_RATIO = 1100 / 2100


def _row(mode: str, i: int, rec: RunRecord) -> list[str]:
    return [mode, str(i), f"{rec.downtime_ms:.0f}", f"{rec.guest_downtime_ms:.0f}",
            f"{rec.stop_copy_ms:.0f}", f"{rec.destination_load_ms:.0f}",
            f"{rec.downtime_bytes / 2**20:.0f}", f"{rec.time_dilation:g}", load_average()]


def scenario(mode: str, link_rate: str, k: float) -> str:
    sets = [f"migration.device-state-transfer={mode}"]
    sets += [f"link.rate={link_rate}"] if link_rate else []
    sets += [f"time-dilation={k!r}"] if k != 1.0 else []
    return scenario_toml("multifd-device-state", *sets)


def choose_k(flag: str, link_rate: str) -> float:
    if flag != "auto":
        return float(flag)
    from migbed.experiments.hostrate import choose

    chosen = choose(parse_scenario(scenario("multifd", link_rate, 1.0)))
    print(f"   time-dilation auto: {chosen.reason}", flush=True)
    return chosen.factor


@contextlib.contextmanager
def services(sc: Scenario, tmp: Path) -> Iterator[tuple[Service, Service]]:
    """A source and a target; across a shaped netns link when the scenario has one."""
    shape = link_shape(shaped_link(sc))
    if shape is None:
        with stack(tmp) as pair:
            yield pair
        return
    with NetnsLink() as link:
        try:
            print("   " + link.shape(shaping_commands(link.host_if, shape, netem_available=False)), flush=True)
            with stack(tmp, target_prefix=link.wrapper, target_host=link.ns_ip) as pair:
                yield pair
        finally:
            for cmd in clear_commands(link.host_if):
                subprocess.run(cmd, capture_output=True, check=False)


def predictions(link_rate: str) -> dict[str, tuple[float, float]]:
    """(QEMU-reported, guest-visible) downtime in ms that the model predicts per mode."""
    out = {}
    for mode in MODES:
        o = predict(parse_scenario(scenario(mode, link_rate, 1.0)), [POLICY], ModelParams()).outcomes[POLICY]
        out[mode] = (o.downtime_s * 1e3, o.guest_downtime_s * 1e3)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--link-rate", default="", help="a tbf link at this rate (e.g. 100Gbit; needs root)")
    p.add_argument("--time-dilation", default="1", metavar="K|auto")
    args = p.parse_args(argv)
    if args.link_rate and can_make_namespaces():
        print(f"multifd_device_state: --link-rate {can_make_namespaces()}", file=sys.stderr)
        return 2
    link = f", a {args.link_rate} tbf link" if args.link_rate else ""
    header(f"multifd device state vs the main stream, 4 VFs x ~100 MiB{link} ({args.repeat} repeats)")
    k = choose_k(args.time_dilation, args.link_rate)
    rows = [["device state", "#", "downtime ms", "guest downtime ms", "stop-copy ms",
             "destination load ms", "downtime MiB", "K", "load avg"]]
    runs: dict[str, list[RunRecord]] = {m: [] for m in MODES}
    with tempfile.TemporaryDirectory(prefix="migbed-mds-") as tmp, \
            services(parse_scenario(scenario("main", args.link_rate, k)), Path(tmp)) as (source, target):
        for i in range(1, args.repeat + 1):
            for mode in MODES if i % 2 else tuple(reversed(MODES)):
                rec = require_ok(migrate(source, target.address, scenario(mode, args.link_rate, k), POLICY))
                runs[mode].append(rec)
                rows.append(_row(mode, i, rec))
                print(f"  {mode:7s} #{i}: downtime {rec.downtime_ms:.0f} ms (stop-copy "
                      f"{rec.stop_copy_ms:.0f}, destination load {rec.destination_load_ms:.0f})",
                      flush=True)
    print()
    print(table(rows))
    print_summary(runs, predictions(args.link_rate), k)
    return 0


def print_summary(runs: dict[str, list[RunRecord]], pred: dict[str, tuple[float, float]], k: float) -> None:
    rows = [["device state", "downtime ms (median)", "predicted ms", "guest downtime ms", "predicted ms"]]
    for mode in MODES:
        rows.append([mode, f"{median([r.downtime_ms for r in runs[mode]]):.0f}", f"{pred[mode][0]:.0f}",
                     f"{median([r.guest_downtime_ms for r in runs[mode]]):.0f}", f"{pred[mode][1]:.0f}"])
    print()
    print(table(rows))
    main_ms, multifd_ms = (median([r.downtime_ms for r in runs[m]]) for m in MODES)
    virtual = f" (virtual time, K = {k:g})" if k != 1.0 else ""
    print(f"\ndowntime multifd / main = {multifd_ms:.0f} / {main_ms:.0f} ms = {multifd_ms / main_ms:.2f}"
          f"{virtual}; predicted {pred['multifd'][0] / pred['main'][0]:.2f} "
          f"(published ~2100 -> ~1100 ms: {PUBLISHED_RATIO:.2f})")


if __name__ == "__main__":
    sys.exit(main())
