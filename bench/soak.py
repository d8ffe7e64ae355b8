"""The randomized fault soak, long and configurable (the suite runs a short one:
tests/soak/test_soak.py).

A seeded generator of migrations (policies, QEMU versions, tiny guests with and without
devices, multifd on/off, device state on the main stream or on multifd) runs against real
`migbed serve source|target` processes, the target in its own network namespace; a nemesis
kills (SIGKILL, then a restart), freezes (SIGSTOP 0.2-3 s, then SIGCONT) source or target,
cuts and restores the link, or cancels the run, at seeded random moments. Some runs go through
a real `migbed run` process with its own services instead, and the nemesis strikes the
orchestrator: SIGTERM or SIGKILL of that process, or SIGKILL of the source service it
started; or a `migbed run --source/--target` against the soak's own services is SIGKILLed
(the source cancels the run once unwatched, and keeps its record in --orphan-records).
After every run a checker asserts migbed's promises (see docs/faults.md,
"Randomized soak").

    sudo .venv/bin/python bench/soak.py --duration 360            # a random seed, printed
    sudo .venv/bin/python bench/soak.py --seed 1234 --duration 360 # replays seed 1234

Exit status 1 when any invariant was violated. Needs root and iproute2 for the link cuts
(--no-netns runs without them, and without link cuts).
"""

from __future__ import annotations

import argparse
import json
import secrets
import shlex
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, ROOT / "tests", ROOT / "tests" / "soak"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from soaklib import MiB, Soak, SoakConfig  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=None, help="replay this seed (default: random)")
    ap.add_argument("--duration", type=float, default=300.0,
                    help="seconds after which no new run starts (default 300)")
    ap.add_argument("--max-runs", type=int, default=100_000)
    ap.add_argument("--fault-share", type=float, default=0.7,
                    help="share of runs the nemesis strikes (default 0.7)")
    ap.add_argument("--no-netns", action="store_true",
                    help="target on loopback: no root needed, no link cuts")
    ap.add_argument("--no-orchestrator-faults", action="store_true",
                    help="no runs through `migbed run`, no faults of the orchestrator")
    ap.add_argument("--rss-slack-mib", type=int, default=160,
                    help="how far an idle service's RSS may exceed its baseline (default 160)")
    ap.add_argument("--log-dir", type=Path, default=None, help="services' logs (default: a temp dir)")
    ap.add_argument("--json", type=Path, default=None, help="write the summary here as JSON")
    args = ap.parse_args(argv)
    if not 0.0 <= args.fault_share <= 1.0:
        ap.error(f"--fault-share must be within 0..1 (got {args.fault_share})")
    if args.duration <= 0 or args.max_runs < 1:
        ap.error("--duration must be > 0 and --max-runs >= 1")
    seed = args.seed if args.seed is not None else secrets.randbelow(10**9)
    command = shlex.join(["bench/soak.py", "--seed", str(seed), "--duration", f"{args.duration:g}",
                          "--fault-share", f"{args.fault_share:g}",
                          *(["--no-netns"] if args.no_netns else []),
                          *(["--no-orchestrator-faults"] if args.no_orchestrator_faults else []),
                          *(["--max-runs", str(args.max_runs)] if args.max_runs != 100_000 else [])])
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="migbed-soak-"))
    cfg = SoakConfig(seed=seed, duration_s=args.duration, max_runs=args.max_runs,
                     fault_share=args.fault_share, netns=not args.no_netns,
                     rss_slack=args.rss_slack_mib * MiB, log_dir=log_dir, command=command,
                     orchestrator_faults=not args.no_orchestrator_faults)
    summary = Soak(cfg, say=lambda s: print(s, flush=True)).run()
    print(summary.text())
    print(f"services' logs: {log_dir}")
    if args.json:
        args.json.write_text(json.dumps(summary.as_dict(), indent=2) + "\n")
    return 1 if summary.violations else 0


if __name__ == "__main__":
    sys.exit(main())
