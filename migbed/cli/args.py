"""The CLI's one vocabulary: argument types and flags shared by run, up, deploy and sweep.

Every flag means the same everywhere (--out, --scenario NAME|FILE, --set KEY=VALUE,
--comparison NAME, --policy from the one policy registry, a bounded --repeat) and is checked
by the same code, before anything is built or started.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from migbed.core.address import AddressError, parse_address
from migbed.core.bounded import clip
from migbed.core.policy import DEFAULT_POLICIES, policy_names
from migbed.core.scenario import DEFAULT_SCENARIO, Scenario, ScenarioError, resolve_scenario

# Exit codes, the same for every subcommand.
EXIT_OK = 0
EXIT_FAILED = 1  # a run failed or was not verified (or the command's work failed)
EXIT_USAGE = 2  # bad arguments or input: nothing was started
EXIT_UNREACHABLE = 3  # a service did not answer
EXIT_RESULTS_ELSEWHERE = 4  # runs ended but their records could not be written where asked


# A command's exit code from its runs' records (experiments/follow.py runs_outcome): 3 when a
# source was lost with a run in flight, 1 when a run failed, was cancelled or did not verify
# (or none ran), 0 when every one completed and verified. A stop signal (128+N) and records
# written elsewhere (4) come first, where the command knows them.
EXIT_OF_RUNS = {"ok": EXIT_OK, "failed": EXIT_FAILED, "source-lost": EXIT_UNREACHABLE}

DEFAULT_REPEAT = 3
MAX_REPEAT = 100


class UsageError(Exception):
    """Bad arguments found by a command (argparse's own errors exit 2 the same way)."""


class Unreachable(Exception):
    """A service that does not answer; exits EXIT_UNREACHABLE."""


# ---------------------------------------------------------------- types


def address(value: str) -> str:
    """HOST:PORT, [IPv6]:PORT; port 1-65535."""
    try:
        return parse_address(value, "HOST:PORT")
    except AddressError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def listen_address(value: str) -> str:
    """HOST:PORT to listen on; port 0 = any free port."""
    try:
        return parse_address(value, "HOST:PORT", allow_zero=True)
    except AddressError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def size(lo: int = 0, hi: int = 2**50) -> Callable[[str], int]:
    """Bytes from a size with a unit ("8GiB", QEMU's "512M"), bounded."""
    def parse(value: str) -> int:
        from migbed.core.units import UnitError, format_bytes, parse_size

        try:
            n = parse_size(value)
        except UnitError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        if not lo <= n <= hi:
            raise argparse.ArgumentTypeError(f"{clip(value, 40)} is out of range "
                                             f"({format_bytes(lo)}..{format_bytes(hi)})")
        return n
    parse.__name__ = "size"
    return parse


def bounded_int(lo: int, hi: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        text = value.strip()
        if not text.lstrip("+-").isdigit() or len(text) > 12:
            raise argparse.ArgumentTypeError(f"{clip(repr(value), 40)} is not an integer ({lo}..{hi})")
        n = int(text)
        if not lo <= n <= hi:
            raise argparse.ArgumentTypeError(f"{n} is out of range ({lo}..{hi})")
        return n
    parse.__name__ = "integer"
    return parse


def seconds(lo: float = 0.0, hi: float = 3600.0) -> Callable[[str], float]:
    def parse(value: str) -> float:
        try:
            x = float(value) if len(value) <= 24 else float("nan")
        except ValueError:
            x = float("nan")
        if x != x:
            raise argparse.ArgumentTypeError(f"{clip(repr(value), 40)} is not a number of seconds")
        if not lo < x <= hi:
            raise argparse.ArgumentTypeError(f"{x:g} is out of range ({lo:g}..{hi:g} s)")
        return x
    parse.__name__ = "seconds"
    return parse


def time_dilation(value: str) -> float | str:
    """--time-dilation K|auto: K a number within the scenario key's bounds, or "auto"."""
    from migbed.core.limits import TIME_DILATION

    if value.strip().lower() == "auto":
        return "auto"
    lo, hi = TIME_DILATION
    try:
        k = float(value) if len(value) <= 24 else float("nan")
    except ValueError:
        k = float("nan")
    if not lo <= k <= hi:  # NaN too
        raise argparse.ArgumentTypeError(f"{clip(repr(value), 40)}: auto, or a number from {lo:g} to "
                                         f"{hi:g} (the run takes K times as long)")
    return k


def override(value: str) -> str:
    """KEY=VALUE (checked for its form here; against the scenario when it is resolved)."""
    from migbed.core.overrides import OverrideError, split_override

    try:
        split_override(value)
    except OverrideError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return value


# ---------------------------------------------------------------- flags


def add_scenario_args(p: argparse.ArgumentParser, comparison: bool = True) -> None:
    p.add_argument("--scenario", metavar="NAME|FILE",
                   help=f"a scenario file or a built-in name (`migbed scenarios`; default {DEFAULT_SCENARIO})")
    p.add_argument("--set", dest="overrides", action="append", type=override, default=[],
                   metavar="KEY=VALUE",
                   help="override a scenario key, e.g. migration.downtime-limit=500ms or "
                        "device.vf0.load-setup-time=1s (repeatable)")
    if comparison:
        p.add_argument("--comparison", metavar="NAME",
                       help="a named comparison (`migbed scenarios`): its scenario, policies, "
                            "repeats and overrides; --scenario, --set, --policy and --repeat still apply on top")


def add_dilation_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--time-dilation", type=time_dilation, metavar="K|auto",
                   help="run K times slower and report in virtual time, so this host emulates "
                   "links and devices K times faster (docs/fidelity.md); auto: the smallest K "
                   "at which the scenario's rate is at most half of what this host measured "
                   "(measured once, cached). Sets the scenario key time-dilation")


def add_policy_args(p: argparse.ArgumentParser, repeat_default: int | None = DEFAULT_REPEAT) -> None:
    p.add_argument("--policy", action="append", choices=policy_names(), metavar="POLICY",
                   help=f"switchover policy, repeatable ({', '.join(policy_names())}); "
                        f"default: {' and '.join(DEFAULT_POLICIES)}")
    p.add_argument("--repeat", type=bounded_int(1, MAX_REPEAT), default=None, metavar="N",
                   help=f"runs per policy, 1-{MAX_REPEAT} (default {repeat_default})")


def add_out_arg(p: argparse.ArgumentParser, default_help: str) -> None:
    p.add_argument("--out", metavar="DIR", help=f"results folder (default {default_help})")


# ---------------------------------------------------------------- resolving


@dataclass(frozen=True)
class Experiment:
    """What run, up, deploy and sweep resolve their flags to, before anything starts."""

    scenario: Scenario
    scenario_arg: str  # as given (a file or a name), for commands that pass it on
    policies: tuple[str, ...]
    repeat: int
    overrides: tuple[str, ...]
    dilation_note: str = ""  # what --time-dilation auto chose, and why


def resolve_experiment(args: argparse.Namespace) -> Experiment:
    """--comparison, --scenario, --set, --policy and --repeat, into one validated Experiment."""
    name = getattr(args, "comparison", None)
    overrides: tuple[str, ...] = tuple(getattr(args, "overrides", None) or ())
    policies: tuple[str, ...] = tuple(dict.fromkeys(args.policy or ()))
    try:
        if name:
            from migbed.comparisons import comparison

            cmp = comparison(name)
            scenario_arg = args.scenario or cmp.scenario
            overrides = (*cmp.overrides, *overrides)
            policies = policies or cmp.policies
            repeat = args.repeat or cmp.repeat
        else:
            scenario_arg = args.scenario or DEFAULT_SCENARIO
            policies = policies or DEFAULT_POLICIES
            repeat = args.repeat or DEFAULT_REPEAT
        scenario = resolve_scenario(scenario_arg, overrides)
        scenario, overrides, note = with_dilation(scenario, scenario_arg, overrides,
                                                  getattr(args, "time_dilation", None))
    except ScenarioError as e:
        raise UsageError(str(e)) from None
    return Experiment(scenario, scenario_arg, policies, repeat, overrides, note)


def with_dilation(scenario: Scenario, scenario_arg: str, overrides: tuple[str, ...],
                  flag: float | str | None) -> tuple[Scenario, tuple[str, ...], str]:
    """--time-dilation K|auto as the scenario key `time-dilation` (one more override, so
    every command that passes the scenario on passes K with it). auto measures this host
    (once, cached: migbed/experiments/hostrate.py) and says what it chose and why."""
    if flag is None:
        return scenario, overrides, ""
    note = ""
    if flag == "auto":
        from migbed.core.dilation import DilationError
        from migbed.experiments.hostrate import choose

        try:
            chosen = choose(scenario)
        except DilationError as e:
            raise UsageError(str(e)) from None
        k, note = chosen.factor, f"time-dilation auto: {chosen.reason}"
        print(f"migbed: {note}", flush=True)
    else:
        k = float(flag)
    overrides = (*overrides, f"time-dilation={k!r}")
    return resolve_scenario(scenario_arg, overrides), overrides, note


def writable_folder(path: Path, flag: str = "--out") -> Path:
    """Create `path` (and parents) and prove a file can be written and synced there; else
    UsageError naming the flag. Called before any migration starts."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".migbed-write-test-{os.getpid()}"
        with open(probe, "wb") as fh:
            fh.write(b"ok\n")
            fh.flush()
            os.fsync(fh.fileno())
        probe.unlink()
    except OSError as e:
        raise UsageError(f"{flag} {clip(str(path), 120)}: cannot write there ({e.strerror or e})") from None
    return path


def progress_wanted(no_progress: bool) -> bool:
    """Progress bars only on a terminal: piped logs get no carriage returns."""
    return not no_progress and sys.stderr.isatty()
