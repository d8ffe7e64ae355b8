"""Evacuations, one per policy, and what they write: the runner `migbed evacuate` (locally)
and `migbed deploy --evacuate` (across lab hosts, fleet/lab.py) share.

Locally the hosts are processes on loopback: one source service holding every guest and
N target services (local_hosts).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from migbed.experiments.interrupt import Interruption
from migbed.fleet.evacuation import Endpoints, Evacuation, EvacuationResult, GuestRun
from migbed.fleet.planner import EvacuationPlan, FleetGuest, Limits, spread_guests
from migbed.measure.record import RunRecord

SOURCE_HOST = "source-0"


def guests_from_scenario(name: str, toml: str, count: int, host: str = SOURCE_HOST) -> list[FleetGuest]:
    return spread_guests(name, toml, count, [host])


@contextlib.contextmanager
def local_hosts(log_dir: Path, targets: int, orphan_records: Path | None = None) -> Iterator[Endpoints]:
    """One source and `targets` target services as local processes, always stopped, and
    bound to this process (they die with it, however it dies; the source then appends the
    records of the runs it cancels to `orphan_records`)."""
    from migbed.experiments.localstack import start_service

    services: list[Any] = []
    try:
        target_addr = {}
        for i in range(targets):
            svc = start_service("target", log_dir / f"target-{i}", bound=True)
            services.append(svc)
            target_addr[f"target-{i}"] = svc.address
        source = start_service("source", log_dir / SOURCE_HOST, bound=True,
                               orphan_records=orphan_records)
        services.append(source)
        yield Endpoints({SOURCE_HOST: source.address}, target_addr)
    finally:
        for svc in reversed(services):
            svc.stop()


def run_policies(endpoints: Endpoints, fleet: list[FleetGuest], scenario_texts: dict[str, str],
                 policies: Sequence[str], limits: Limits, order: str, stop_on_target_loss: bool,
                 progress: bool, on_record: Callable[[RunRecord], None] | None = None,
                 interruption: Interruption | None = None) -> list[EvacuationResult]:
    """One evacuation per policy; after a stop signal the guests in flight are cancelled
    and recorded, and nothing more starts."""
    from tqdm import tqdm

    results = []
    for policy in policies:
        if interruption is not None and interruption.fired:
            break
        plan = EvacuationPlan(fleet, list(endpoints.targets), limits, order)
        # A bar only on a terminal, whoever calls: a log gets no carriage returns.
        bar = tqdm(total=len(fleet), unit="guest", desc=f"evacuate ({policy})",
                   disable=not (progress and sys.stderr.isatty()))

        def done(g: GuestRun, bar: Any = bar) -> None:
            bar.set_postfix_str(f"{g.guest} {g.outcome}, downtime {g.guest_downtime_ms:.0f} ms")
            bar.update(1)

        try:
            results.append(Evacuation(plan, endpoints, scenario_texts, policy, stop_on_target_loss,
                                      done, on_record, interruption).run(order))
        finally:
            bar.close()
    return results


def finish(results: Sequence[EvacuationResult], out: Path) -> int:
    """Write every view into `out` (fleet.json, fleet.csv, results.json, gantt.png), print
    the table; 0 when every guest completed verified, else 1."""
    from migbed.fleet.report import fleet_table, plot_gantt, write_fleet

    paths = write_fleet(results, out)
    try:
        paths.append(plot_gantt(results, out / "gantt.png"))
    except ImportError as e:  # matplotlib is an optional extra
        print(f"gantt chart skipped: {e}")
    print()
    print(fleet_table(results))
    print("\n" + "  ".join(str(p) for p in paths), flush=True)
    ok = all(g.outcome == "completed" and g.verified for r in results for g in r.guests)
    return 0 if ok and not any(r.not_started for r in results) else 1
