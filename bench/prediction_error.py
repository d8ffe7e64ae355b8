"""How far off is a downtime prediction? time-aware's and QEMU's expected-downtime, per scenario.

For each shipped scenario and policy, one migration between two local processes (loopback,
unshaped: a scenario's [link] is not applied here), then three figures from its record:
the downtime QEMU would report (`downtime_ms`, with the return path: up to the target's
Shut), the policy's own prediction at its decision (`predicted_downtime_ms`; legacy and
switchover-ack predict the data time, time-aware adds what the target measured of its
loads) and QEMU's expected-downtime as last computed before the stop.

    python bench/prediction_error.py [--scenario NAME ...] [--policy NAME ...] [--repeat N]

Inputs: the scenarios (migbed/scenarios/*.toml). Results: every number printed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import header, median, table

from migbed.core.scenario import builtin_scenario_text, builtin_scenarios
from migbed.experiments.comparison import Plan, run_plan
from migbed.experiments.localstack import local_stack
from migbed.measure.record import RunRecord


def _row(scenario: str, policy: str, runs: list[RunRecord]) -> list[str]:
    ok = [r for r in runs if r.outcome == "completed"]
    if not ok:
        return [scenario, policy, "-", "-", "-", "-", "-", f"{runs[0].outcome}: {runs[0].error[:40]}"]
    actual = median([r.downtime_ms for r in ok])
    predicted = median([r.predicted_downtime_ms for r in ok])
    expected = median([r.expected_downtime_ms for r in ok])
    err = median([r.predicted_downtime_ms - r.downtime_ms for r in ok])
    qerr = median([r.expected_downtime_ms - r.downtime_ms for r in ok])
    return [scenario, policy, f"{actual:.0f}", f"{predicted:.0f}", f"{err:+.0f}",
            f"{expected:.0f}", f"{qerr:+.0f}", ok[0].decision_reason[:48]]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", action="append", choices=builtin_scenarios())
    ap.add_argument("--policy", action="append",
                    choices=["legacy", "initial-bytes-sent", "switchover-ack", "time-aware"])
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    scenarios = args.scenario or ["tiny", "mlx5-like", "two-vfs", "slow-link"]
    policies = args.policy or ["legacy", "time-aware"]
    header("prediction error: predicted vs QEMU-reported downtime (ms)")
    rows = [["scenario", "policy", "downtime", "predicted", "error", "qemu expected",
             "error", "decision"]]
    with local_stack(Path(tempfile.mkdtemp(prefix="migbed-predict-")), bound=True) as (source, target):
        for name in scenarios:
            plan = Plan(name, builtin_scenario_text(name), policies, args.repeat,
                        source.address, target.address)
            records = run_plan(plan, show_progress=False)
            for policy in policies:
                rows.append(_row(name, policy, [r for r in records if r.policy == policy]))
    print(table(rows))
    print("error = prediction - downtime; downtime ends at the target's Shut (return path).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
