"""`migbed predict` and `migbed sweep`: the analytical model, and sweeps measured beside it.

  migbed predict [SCENARIO] [--policy P] [--set KEY=V] [--vary KEY=v1,v2] [--wire-rate R]
                 [--precopy-rate R]
  migbed sweep --scenario S --vary KEY=v1,v2 [--vary ...] | --sweep NAME|FILE | --resume DIR
               [--policy P] [--repeat N] [--predict] [--out DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import Any

from migbed.cli.args import EXIT_OF_RUNS, EXIT_OK, EXIT_UNREACHABLE, add_dilation_arg
from migbed.cli.args import address as _address
from migbed.core.overrides import OverrideError, split_override
from migbed.core.policy import DEFAULT_POLICIES, policy_names
from migbed.core.scenario import DEFAULT_SCENARIO, parse_scenario
from migbed.core.units import UnitError, format_bytes, parse_byte_rate, parse_size
from migbed.experiments.follow import runs_outcome
from migbed.experiments.interrupt import Interrupted, Interruption
from migbed.experiments.sweep import (
    MAX_CELLS_PREDICT,
    MAX_CELLS_RUN,
    RUNS_FILE,
    SPEC_FILE,
    SweepError,
    SweepSpec,
    apply_overrides,
    base_scenario_text,
    builtin_sweeps,
    load_sweep,
    measure_precopy_rate,
    measure_wire_rate,
    parse_vary,
    predict_cells,
    read_spec,
    run_sweep,
    services,
    validate,
    write_predictions,
    write_spec,
)
from migbed.model import DEFAULT_WIRE_RATE, CellPrediction, ModelParams, predict
from migbed.model.predict import regime_text


def _rate(text: str) -> float:
    try:
        return parse_byte_rate(text)
    except UnitError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _positive_rate(text: str) -> float:
    rate = _rate(text)
    if rate <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a rate above 0 (or leave the flag out)")
    return rate


def _size(text: str) -> float:
    try:
        return float(parse_size(text))
    except UnitError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _model_args(p: argparse.ArgumentParser, measured: bool = False) -> None:
    default = "measured before a measured sweep (a RAM-only migration), else 1GB/s" if measured else "1GB/s"
    p.add_argument("--wire-rate", type=_rate, default=None if measured else DEFAULT_WIRE_RATE,
                   help=f"bytes/s the unshaped wire moves (local processes; default: {default}), e.g. 800MB/s")
    precopy = "measured beside the wire rate (the bulk stage of a RAM-only migration)" if measured \
        else "the wire rate"
    p.add_argument("--precopy-rate", type=_positive_rate, default=None,
                   help="bytes/s the unshaped wire moves in pre-copy, where the engine's sending is "
                        f"slower than its final copy (default: {precopy}), e.g. 1600MB/s")
    p.add_argument("--stream-buffer", type=_size, default=ModelParams().stream_buffer,
                   help="bytes the source may run ahead of a stalled destination (default 8MiB)")


def _params(args: argparse.Namespace, shaped: bool | None) -> ModelParams:
    return ModelParams(wire_rate=args.wire_rate, precopy_rate=args.precopy_rate, shaped=shaped,
                       stream_buffer=args.stream_buffer)


def _overrides(items: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        try:
            parts, value = split_override(item)
        except OverrideError as e:
            raise SweepError(str(e)) from None
        if value == "":
            raise SweepError(f"--set {item!r}: expected KEY=VALUE (e.g. --set guest.ram-size=64MiB)")
        out[".".join(parts)] = value
    return out


# ---------------------------------------------------------------- predict


def _ms(x: float | None) -> str:
    return "-" if x is None or x != x else f"{x * 1e3:.0f}"  # NaN (undefined) prints as "-"


def switched_on(o: Any) -> str:
    """What a predicted stop rested on (its Outcome's basis, core/policy.py Basis), or the cap."""
    if o.outcome != "completed":
        return "-"
    return o.forced_by_cap or o.basis


def format_prediction(pred: CellPrediction, policies: list[str]) -> str:
    head = f"{'policy':18s} {'outcome':10s} {'total ms':>9s} {'downtime ms':>11s} {'guest ms':>9s} " \
           f"{'iter':>5s} {'stop ms':>8s} {'setup in dt ms':>14s}  switched on"
    lines = [head, "-" * len(head)]
    for p in policies:
        o = pred.outcomes[p]
        lines.append(f"{p:18s} {o.outcome:10s} {_ms(o.total_time_s):>9s} {_ms(o.downtime_s):>11s} "
                     f"{_ms(o.guest_downtime_s):>9s} {o.iterations:>5d} {_ms(o.stop_s):>8s} "
                     f"{_ms(o.setup_in_downtime_s):>14s}  {switched_on(o)}")
    lines.append(f"regime: {regime_text(pred)} (legacy leaves {_ms(pred.setup_in_downtime_s)} ms of device "
                 f"setup/initial load inside the downtime)")
    forced = [p for p in ("legacy", "switchover-ack") if pred.outcomes[p].forced_by_cap]
    lines.append(f"legacy penalty {_ms(pred.legacy_penalty_s)} ms guest-visible, "
                 f"{_ms(pred.legacy_penalty_qemu_s)} ms QEMU-reported; the ACK costs "
                 f"{_ms(pred.ack_cost_s)} ms of total time"
                 + (f" (between stops forced by a cap: {', '.join(forced)})" if forced else ""))
    return "\n".join(lines)


def cmd_predict(args: argparse.Namespace) -> int:
    text = apply_overrides(base_scenario_text(args.scenario or DEFAULT_SCENARIO), _overrides(args.set))
    sc = parse_scenario(text, args.scenario or DEFAULT_SCENARIO)
    policies = args.policy or list(policy_names())
    shaped = False if args.unshaped else None
    params = _params(args, shaped)
    if not args.vary:
        pred = predict(sc, policies, params)
        if args.json:
            print(json.dumps(pred.to_dict(), indent=1, default=str))
            return 0
        print(f"{sc.name}: predicted ({_wire_text(sc, args.unshaped, params)}; inputs: the scenario, "
              "--wire-rate, --precopy-rate, --stream-buffer)")
        print(format_prediction(pred, policies))
        return 0
    spec = SweepSpec(sc.name, text, parse_vary(args.vary), policies, 1, local=False)
    cells = validate(spec, MAX_CELLS_PREDICT)
    t0 = time.perf_counter()
    preds = predict_cells(spec, cells, params)
    took = time.perf_counter() - t0
    if args.json:
        print(json.dumps(preds, indent=1, default=str))
    else:
        print(format_grid(preds, policies))
    print(f"{len(cells)} cells x {len(set([*policies, 'legacy', 'switchover-ack']))} policies "
          f"predicted in {took:.2f} s", file=sys.stderr)
    return 0


def _wire_text(sc: Any, unshaped: bool, params: ModelParams) -> str:
    if sc.link.rate and not unshaped:
        return f"link {sc.link.rate / 1e9:g} Gbit/s shaped"
    precopy = f", pre-copy {params.precopy_rate / 1e6:.0f} MB/s" if params.precopy_rate else ""
    return f"link unshaped, wire {format_bytes(params.wire_rate)}/s{precopy}"


def format_grid(preds: list[dict[str, Any]], policies: list[str]) -> str:
    """One line per cell; "[cap]" after a policy whose stop a cap forced."""
    lines = []
    for p in preds:
        pr = p["prediction"]
        values = ", ".join(f"{k}={v}" for k, v in p["values"].items())
        guest = " ".join(f"{pol}={_ms(pr['outcomes'][pol]['guest_downtime_s'])}"
                         + (" [cap]" if pr["outcomes"][pol]["forced_by_cap"] else "")
                         for pol in policies)
        lines.append(f"[{values}] {pr['regime']}: guest ms {guest}; penalty "
                     f"{_ms(pr['legacy_penalty_s'])} ms; ACK cost {_ms(pr['ack_cost_s'])} ms")
    return "\n".join(lines)


def add_predict_parser(sub: Any) -> None:
    p = sub.add_parser("predict", help="predict a scenario (or a grid of them) with the analytical model")
    p.add_argument("scenario", nargs="?", help=f"TOML file or built-in name (default {DEFAULT_SCENARIO})")
    p.add_argument("--policy", action="append", choices=policy_names(), help="repeatable; default: all")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a scenario key")
    p.add_argument("--vary", action="append", metavar="KEY=v1,v2,...", help="a grid axis (repeatable)")
    p.add_argument("--unshaped", action="store_true",
                   help="ignore [link]: the wire rate applies (local processes on loopback)")
    p.add_argument("--json", action="store_true", help="JSON instead of a table")
    _model_args(p)
    p.set_defaults(func=cmd_predict)


# ---------------------------------------------------------------- sweep


def _spec_from_args(args: argparse.Namespace) -> tuple[SweepSpec, Path, dict[str, Any]]:
    local = not args.source
    if args.resume:
        if (args.sweep or args.vary or args.scenario or args.set or args.policy or args.repeat
                or args.time_dilation is not None):
            raise SweepError("--resume DIR continues that sweep as it was defined: "
                             "drop --sweep/--scenario/--vary/--set/--policy/--repeat/--time-dilation")
        out = Path(args.resume)
        spec, extra = read_spec(out)
        return spec, out, extra
    if args.sweep:
        if args.vary or args.scenario:
            raise SweepError("--sweep NAME|FILE defines the scenario and axes: drop --scenario/--vary")
        spec = load_sweep(args.sweep, local)
    else:
        if not args.vary:
            raise SweepError("give --vary KEY=v1,v2,... (with --scenario), --sweep NAME|FILE or "
                             f"--resume DIR (built-in sweeps: {', '.join(builtin_sweeps())})")
        name = args.scenario or DEFAULT_SCENARIO
        text = base_scenario_text(name)
        spec = SweepSpec(parse_scenario(text, name).name, text, parse_vary(args.vary),
                         list(DEFAULT_POLICIES), 1, local=local)
    if args.set:
        spec.base_text = apply_overrides(spec.base_text, _overrides(args.set))
        parse_scenario(spec.base_text, "--set")
    if args.time_dilation is not None:
        spec.base_text = apply_overrides(spec.base_text, {"time-dilation": _sweep_dilation(spec, args)})
    if args.policy:
        spec.policies = list(dict.fromkeys(args.policy))
    if args.repeat:
        spec.repeat = args.repeat
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out or Path("results") / f"sweep-{spec.name}-{stamp}")
    if (out / SPEC_FILE).exists():
        raise SweepError(f"--out {out} already holds a sweep: continue it with --resume {out}, "
                         "or choose another folder")
    extra = {"wire_rate": args.wire_rate, "precopy_rate": args.precopy_rate, "stream_buffer": args.stream_buffer,
             "predict_only": bool(args.predict), "created": stamp,
             "source": args.source or "", "target": args.target or ""}
    return spec, out, extra


def cmd_sweep(args: argparse.Namespace) -> int:
    if bool(args.source) != bool(args.target):
        raise SweepError("--source and --target go together (or neither, for local processes)")
    spec, out, extra = _spec_from_args(args)
    predict_only = bool(extra.get("predict_only"))
    cells = validate(spec, MAX_CELLS_PREDICT if predict_only else MAX_CELLS_RUN)
    runs = spec.cell_count * spec.repeat * len(spec.policies)
    what = "predicted only" if predict_only else f"{runs} runs ({spec.repeat} per cell and policy)"
    print(f"migbed: sweep {spec.name} ({spec.sweep_id}): {len(cells)} cells x "
          f"{', '.join(spec.policies)}, {what}; results in {out}", flush=True)
    if predict_only:
        extra["wire_rate"] = extra["wire_rate"] or DEFAULT_WIRE_RATE
        _predict(out, spec, cells, extra)
        code = EXIT_OK
    else:
        stop = Interruption("migbed sweep")
        try:
            with stop.installed(), services(out, extra.get("source", ""),
                                            extra.get("target", "")) as (source, target):
                stop.check()
                _measure_rates(extra, source, target, stop,
                               parse_scenario(spec.base_text).time_dilation)
                _predict(out, spec, cells, extra)
                done = run_sweep(spec, out, source, target, not args.no_progress, stop)
        except Interrupted as e:
            print(f"migbed: sweep {e}: the run in flight was cancelled and recorded in "
                  f"{out / RUNS_FILE}; continue with --resume {out}", file=sys.stderr)
            return e.exit_code
        code = EXIT_OF_RUNS[runs_outcome([r.record for r in done])]
        if code == EXIT_UNREACHABLE:
            print(f"migbed: the source was lost with a run in flight (recorded); continue with "
                  f"--resume {out}", file=sys.stderr)
    if not args.no_report:
        _report(out)
    return code


def _sweep_dilation(spec: SweepSpec, args: argparse.Namespace) -> float:
    """--time-dilation K, or auto: the largest K any cell needs (one K for the sweep, so its
    cells differ only in their axes)."""
    if args.time_dilation != "auto":
        return float(args.time_dilation)
    from migbed.core.dilation import DilationError
    from migbed.experiments.hostrate import choose

    try:
        chosen = max((choose(c.scenario or parse_scenario(c.text)) for c in validate(spec, MAX_CELLS_RUN)),
                     key=lambda c: c.factor)
    except DilationError as e:
        raise SweepError(str(e)) from None
    print(f"migbed: time-dilation auto, the largest of the cells': {chosen.reason}", flush=True)
    return chosen.factor


def _measure_rates(extra: dict[str, Any], source: str, target: str, stop: Interruption,
                   k: float = 1.0) -> None:
    """The model's wire and pre-copy rates, each measured unless given; in a dilated sweep
    measured dilated, so in the same virtual time as its runs."""
    if not extra["wire_rate"]:
        extra["wire_rate"] = measure_wire_rate(source, target, interruption=stop, time_dilation=k)
        print(f"wire rate {format_bytes(extra['wire_rate'])}/s (measured: an unthrottled "
              "RAM-only migration; the model's input)", flush=True)
    if not extra.get("precopy_rate"):
        extra["precopy_rate"] = measure_precopy_rate(source, target, interruption=stop, time_dilation=k)
        print(f"pre-copy rate {format_bytes(extra['precopy_rate'])}/s (measured: the bulk stage of "
              "a RAM-only migration; the model's input)", flush=True)


def _predict(out: Path, spec: SweepSpec, cells: list[Any], extra: dict[str, Any]) -> None:
    write_spec(out, spec, extra)
    params = ModelParams(wire_rate=float(extra["wire_rate"]), precopy_rate=_rate_or_none(extra.get("precopy_rate")),
                         shaped=False if spec.local else None,
                         stream_buffer=float(extra.get("stream_buffer") or ModelParams().stream_buffer))
    write_predictions(out, predict_cells(spec, cells, params), params)


def _rate_or_none(value: Any) -> float | None:
    """A saved rate; None for folders written before it was saved (the wire rate applies)."""
    return float(value) if value else None


def _report(out: Path) -> None:
    try:
        from migbed.report.regime import write_regime_report
    except ImportError as e:  # matplotlib is the report extra
        print(f"report skipped: {e}")
        return
    page = write_regime_report(out)
    print(f"report:  {page}\nruns:    {out / 'runs.csv'}")


def _repeat(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 1 <= n <= 100:
        raise argparse.ArgumentTypeError(f"{n} is out of range (1..100)")
    return n


def add_sweep_parser(sub: Any) -> None:
    p = sub.add_parser("sweep", help="run a scenario over a grid of values, measured and predicted",
                       description=f"Local runs: at most {MAX_CELLS_RUN} cells; --predict: "
                                   f"at most {MAX_CELLS_PREDICT}.")
    p.add_argument("--scenario", help=f"base scenario: TOML file or built-in name (default {DEFAULT_SCENARIO})")
    p.add_argument("--vary", action="append", metavar="KEY=v1,v2,...",
                   help="an axis, e.g. device.vf0.load-setup-time=200ms,1s (repeatable)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a key of the base scenario in every cell (repeatable)")
    p.add_argument("--sweep", help="a sweep file or a built-in sweep name")
    p.add_argument("--resume", metavar="DIR", help="continue an interrupted sweep in DIR")
    p.add_argument("--policy", action="append", choices=policy_names(),
                   help="repeatable; default: legacy and switchover-ack")
    p.add_argument("--repeat", type=_repeat, help="runs per cell and policy (default 1)")
    p.add_argument("--predict", action="store_true", help="the model only: no runs")
    p.add_argument("--out", help="results folder (default results/sweep-<name>-<timestamp>)")
    p.add_argument("--source", type=_address, help="a running source service HOST:PORT (default: local processes)")
    p.add_argument("--target", type=_address, help="the target, as the source dials it")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or per-run lines")
    p.add_argument("--no-report", action="store_true", help="skip the HTML/PNG report")
    add_dilation_arg(p)
    _model_args(p, measured=True)
    p.set_defaults(func=cmd_sweep)
