"""Build migbed's Grafana dashboards as code (grafana-foundation-sdk, pinned in requirements).

    python grafana/build_dashboards.py           # rewrite grafana/dashboards/*.json
    python grafana/build_dashboards.py --check   # exit 1 if the committed JSON is stale

The JSON files are committed so Grafana's file provider (grafana/provisioning/dashboards)
loads them as they are; tests check that they match this script, that the SDK parses them
back unchanged, and that every query returns data from a real Prometheus.

One module per dashboard in grafana/migbed_dashboards/ (policy_comparison.py, live_migration.py),
what they share in parts.py. The aggregates (means, quantiles, bytes per migration) are
Prometheus recording rules (prometheus/rules/migbed.yml): the panels read the recorded series.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from grafana_foundation_sdk.cog.encoder import JSONEncoder

# The dashboards' modules (grafana/migbed_dashboards/) beside this script, also when it is
# loaded by path (tests/observability/test_obs_dashboards.py).
sys.path.insert(0, str(Path(__file__).resolve().parent))

from migbed_dashboards.live_migration import live_migration
from migbed_dashboards.parts import SCHEMA_VERSION
from migbed_dashboards.policy_comparison import policy_comparison

HERE = Path(__file__).resolve().parent
OUT_DIR = HERE / "dashboards"


DASHBOARDS = {
    "policy-comparison.json": policy_comparison,
    "live-migration.json": live_migration,
}


def render() -> dict[str, str]:
    """File name -> dashboard JSON text, exactly as committed."""
    encoder = JSONEncoder(sort_keys=True, indent=2)
    out = {}
    for name, build in DASHBOARDS.items():
        model = build().build()
        model.schema_version = SCHEMA_VERSION
        out[name] = encoder.encode(model) + "\n"
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--check", action="store_true", help="fail if the committed JSON is stale")
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    args = ap.parse_args(argv)
    stale = []
    for name, text in render().items():
        path = args.out / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            json.loads(text)
            print(f"wrote {path}")
    if stale:
        print(f"stale dashboards (run grafana/build_dashboards.py): {stale}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
