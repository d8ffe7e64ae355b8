"""`migbed`: the command line. Every subcommand validates its input before anything starts.

  migbed run                 the default comparison (legacy vs switchover-ack, 3 repeats, the
                             cover-letter scenario: an mlx5 VF) between two local processes
  migbed run --source A --target B   the same against services already running elsewhere
  migbed run --comparison NAME       a named comparison (`migbed scenarios` lists them)
  migbed serve source|target run one service (what containers and lab hosts run)
  migbed status ADDR         a service's role, version, health and sessions (--json)
  migbed health ADDR         exit 0 when ADDR's gRPC health check says SERVING
  migbed cancel ADDR RUN_ID  cancel a running migration on a source (run prints run ids)
  migbed watch ADDR RUN_ID   follow a run on a source to its record (a run whose orchestrator
                             died: its record, or attach before the source cancels it)
  migbed scenarios [FILE]    list the built-in scenarios and comparisons, or validate a file

Exit codes: 0 every run completed and verified; 1 a run failed, was cancelled or was not
verified; 2 bad arguments or input (nothing was started); 3 a service did not answer (a run
it had in flight is recorded as failed); 4 runs ended but their records could not be written
where asked (they were saved to the fallback file printed); 128+N stopped by signal N (130
SIGINT, 129 SIGHUP, 143 SIGTERM): the runs in flight were cancelled, their guests left
running on the source, and their records written. When several apply: 4, then 128+N, 3, 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from migbed import __version__
from migbed.cli.args import (
    EXIT_FAILED,
    EXIT_OF_RUNS,
    EXIT_OK,
    EXIT_RESULTS_ELSEWHERE,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    Unreachable,
    UsageError,
    add_dilation_arg,
    add_out_arg,
    add_policy_args,
    add_scenario_args,
    address,
    bounded_int,
    listen_address,
    progress_wanted,
    resolve_experiment,
    seconds,
    size,
    writable_folder,
)
from migbed.cli.plugins import PluginError, load_policy_modules
from migbed.core.clock import utc_stamp
from migbed.core.drivers import DRIVERS
from migbed.core.drivers import describe as describe_driver
from migbed.core.qemu_profile import DEFAULT_VERSION, PROFILES
from migbed.core.scenario import (
    ScenarioError,
    builtin_scenario_text,
    builtin_scenarios,
    parse_scenario,
    resolve_scenario,
)

if TYPE_CHECKING:
    from migbed.experiments.comparison import Plan
    from migbed.experiments.interrupt import Interruption
    from migbed.experiments.results import ResultsSink

DEFAULT_OUT = "results/<UTC timestamp>"


# ---------------------------------------------------------------- run


def cmd_run(args: argparse.Namespace) -> int:
    from migbed.experiments.comparison import Plan
    from migbed.experiments.interrupt import Interruption
    from migbed.experiments.results import JSONL, ResultsSink

    # Everything is checked before anything starts: the pair, the scenario, --out, TLS.
    if bool(args.source) != bool(args.target):
        raise UsageError("--source and --target go together (or neither, for local processes)")
    exp = resolve_experiment(args)
    out = writable_folder(Path(args.out or Path("results") / utc_stamp()))
    if (out / JSONL).is_file() and (out / JSONL).stat().st_size:
        raise UsageError(f"--out {out}: holds the results of an earlier run ({JSONL}); "
                         "choose another folder")
    _use_tls(args.tls_dir)
    if args.source:
        _require_serving(args.source, args.tls_dir)
    plan = Plan(exp.scenario.name, exp.scenario.source_text, list(exp.policies), exp.repeat,
                args.source or "", args.target or "", args.cancel_after or 0.0)
    dilated = (f", time-dilation {exp.scenario.time_dilation:g} (reported in virtual time)"
               if exp.scenario.time_dilation != 1.0 else "")
    print(f"migbed: scenario {exp.scenario.name}, policies {', '.join(exp.policies)}, "
          f"{exp.repeat} repeat(s){dilated}; results in {_shown(out, out)}", flush=True)
    if exp.dilation_note:  # what --time-dilation auto chose and why, kept with the results
        (out / "time-dilation.txt").write_text(exp.dilation_note + "\n")
    sink = ResultsSink(out)
    stop = Interruption("migbed run")
    # The handlers stay until the command's end: a stop signal while the views are written
    # still ends it with the documented code.
    with stop.installed():
        _run_plan(args, plan, sink, stop)
        return _run_exit_code(sink, stop)


def _run_plan(args: argparse.Namespace, plan: Plan, sink: ResultsSink, stop: Interruption) -> None:
    from migbed.experiments.comparison import run_plan
    from migbed.experiments.localstack import local_stack

    show = progress_wanted(args.no_progress)
    try:
        if args.source:
            run_plan(plan, show, sink.add, _announce, stop)
        else:
            # Our own services: they die with this process, however it dies; a source that
            # outlives it appends the records of the runs it cancels to our results.jsonl.
            with local_stack(sink.folder / "logs", tls_dir=args.tls_dir, bound=True,
                             orphan_records=sink.path) as (source, target):
                plan.source, plan.target = source.address, target.address
                if not stop.fired:
                    run_plan(plan, show, sink.add, _announce, stop)
    except BaseException:  # a source that refused a run: what did finish is shown and kept
        if sink.records:
            _show_results(sink, sink.folder)
        raise
    _show_results(sink, sink.folder)
    if not args.no_report and not sink.saved_elsewhere and not stop.fired and sink.records:
        _maybe_report(sink.folder)


def _show_results(sink: ResultsSink, out: Path) -> None:
    from migbed.report.summary import results_table

    written = sink.finish()
    print()
    print(results_table(sink.records))
    kept = [sink.fallback or sink.path, *written]
    print(f"\nresults: {'  '.join(_shown(p, out) for p in kept)}", flush=True)


# The runner container of `migbed up` writes into a mounted folder: the paths it prints are
# the host's, which `up` passes here (the same files, named where the user will look).
OUT_ON_HOST = "MIGBED_OUT_ON_HOST"


def _shown(path: Path, out: Path) -> str:
    host = os.environ.get(OUT_ON_HOST)
    if not host or not path.is_relative_to(out):
        return str(path)
    return str(Path(host) / path.relative_to(out))


def _announce(run_id: str) -> None:
    from tqdm import tqdm

    tqdm.write(f"migbed: run {run_id} started", file=sys.stdout)
    sys.stdout.flush()


def _run_exit_code(sink: ResultsSink, stop: Interruption) -> int:
    """The documented exit code (module doc): 4 > 128+N > 3 > 1 > 0."""
    if sink.saved_elsewhere:
        where = sink.fallback or sink.path
        print(f"migbed: results were not all written where asked; every record is in {where}",
              file=sys.stderr)
        return EXIT_RESULTS_ELSEWHERE
    if stop.fired:
        print(f"migbed: stopped by {stop.signal_name}: exit {stop.exit_code()}", file=sys.stderr)
        return stop.exit_code()
    from migbed.experiments.follow import runs_outcome

    code = EXIT_OF_RUNS[runs_outcome(sink.records)]
    if code == EXIT_UNREACHABLE:
        print("migbed: the source was lost with a run in flight (its record says so): exit 3",
              file=sys.stderr)
    return code


def _use_tls(tls_dir: str | None) -> None:
    if tls_dir:  # run_plan's Control client picks its credentials up from there
        from migbed.wire.tls import ENV_TLS_DIR, TlsDir

        TlsDir(tls_dir).channel_credentials("client")  # a bad folder fails here, clearly
        os.environ[ENV_TLS_DIR] = str(Path(tls_dir).resolve())


def _require_serving(addr: str, tls_dir: str | None) -> None:
    code, detail = _health(addr, 5.0, tls_dir)
    if code != "SERVING":
        raise Unreachable(f"source {addr}: {detail}")


def _maybe_report(out: Path) -> None:
    try:
        from migbed.report.report import write_report
    except ImportError as e:  # matplotlib is the [report] extra
        print(f"report skipped: {e} (pip install 'migbed[report]')")
        return
    page = write_report(out)
    print(f"report:  {page}")


# ---------------------------------------------------------------- serve / status / health / cancel


def cmd_serve(args: argparse.Namespace) -> int:
    from migbed.services.main import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    server_creds = channel_creds = None
    if args.tls_dir:
        from migbed.wire.tls import TlsDir

        tls = TlsDir(args.tls_dir)
        server_creds = tls.server_credentials(args.role)
        if args.role == "source":  # it dials the target as a client of the same lab CA
            channel_creds = tls.channel_credentials("source")
    multifd_ssl = None
    if args.tls_dir:  # the multifd channels: same lab CA (the target serves, the source dials)
        from migbed.dataplane.tls import client_context, server_context

        multifd_ssl = (server_context(args.tls_dir) if args.role == "target"
                       else client_context(args.tls_dir))
    try:
        asyncio.run(serve(args.role, args.listen, args.metrics_listen or "", server_creds,
                          channel_creds, max_sessions=args.max_sessions,
                          memory_budget=args.memory_budget, idle_timeout_s=args.idle_timeout,
                          multifd_listen=args.multifd_listen, multifd_ssl_context=multifd_ssl,
                          parent_pid=args.exit_with_parent, orphan_records=args.orphan_records))
    except OSError as e:  # an address it cannot listen on: say which, no traceback
        raise UsageError(str(e)) from None
    return EXIT_OK


def _health(addr: str, timeout: float, tls_dir: str | None) -> tuple[str, str]:
    """("SERVING" | "NOT_SERVING" | "UNREACHABLE", detail) of a gRPC health check."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from migbed.wire.errors import describe_rpc_error
    from migbed.wire.tls import client_credentials

    creds = client_credentials(tls_dir)
    try:
        with (grpc.secure_channel(addr, creds) if creds is not None else grpc.insecure_channel(addr)) as ch:
            reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""),
                                                         timeout=timeout)
    except grpc.RpcError as e:
        return "UNREACHABLE", describe_rpc_error(e)
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return ("SERVING" if name == "SERVING" else "NOT_SERVING"), name


def cmd_health(args: argparse.Namespace) -> int:
    state, detail = _health(args.address, args.timeout, args.tls_dir)
    if not args.quiet:
        print(state.replace("_", " ") if state != "UNREACHABLE" else f"UNREACHABLE: {detail}")
    return {"SERVING": EXIT_OK, "NOT_SERVING": EXIT_FAILED}.get(state, EXIT_UNREACHABLE)


def cmd_status(args: argparse.Namespace) -> int:
    import grpc

    from migbed.wire import migration_pb2 as pb
    from migbed.wire import migration_pb2_grpc as pbg
    from migbed.wire.channel import control_channel
    from migbed.wire.errors import describe_rpc_error
    from migbed.wire.tls import client_credentials

    state, detail = _health(args.address, args.timeout, args.tls_dir)
    if state == "UNREACHABLE":
        raise Unreachable(f"{args.address}: {detail}")
    channel = control_channel(args.address, client_credentials(args.tls_dir))
    try:
        reply = pbg.ControlStub(channel).Status(pb.StatusRequest(), timeout=args.timeout)
    except grpc.RpcError as e:
        raise Unreachable(f"{args.address}: {describe_rpc_error(e)}") from None
    finally:
        channel.close()
    status = {"address": args.address, "role": reply.role, "health": state,
              "migbed_version": reply.migbed_version, "protocol_version": reply.protocol_version,
              "boot_id": reply.boot_id, "sessions": list(reply.sessions)}
    if args.json:
        print(json.dumps(status, indent=1))
    else:
        width = max(map(len, status))
        for k, v in status.items():
            shown = ", ".join(v) or "none" if isinstance(v, list) else v
            print(f"{k.replace('_', ' '):{width}s}  {shown}")
    return EXIT_OK if state == "SERVING" else EXIT_FAILED


def cmd_cancel(args: argparse.Namespace) -> int:
    from migbed.experiments.controller import SourceControl
    from migbed.wire.tls import client_credentials

    _require_serving(args.source, args.tls_dir)
    ctl = SourceControl(args.source, client_credentials(args.tls_dir))
    try:
        reply = ctl.cancel(args.run_id, args.reason)
    finally:
        ctl.close()
    print(f"{args.run_id}: {'cancelled' if reply.cancelled else 'already ' + reply.state}")
    return EXIT_OK


def cmd_watch(args: argparse.Namespace) -> int:
    """Attach to a run on a source (in flight, or among its last finished ones) and follow it
    to its record; with --out, append the record to OUT/results.jsonl unless it is there."""
    from migbed.experiments.controller import SourceControl, SourceLost
    from migbed.experiments.follow import runs_outcome
    from migbed.report.summary import results_table

    out = writable_folder(Path(args.out)) if args.out else None
    _use_tls(args.tls_dir)
    _require_serving(args.source, args.tls_dir)
    print(f"migbed: watching {args.run_id} on {args.source}", flush=True)
    ctl = SourceControl(args.source)
    try:
        record = ctl.watch(args.run_id)
    except SourceLost as e:
        raise Unreachable(str(e)) from None
    finally:
        ctl.close()
    record.source_address = record.source_address or args.source
    print(results_table([record]))
    if out is not None and not _keep_watched(out, record):
        return EXIT_RESULTS_ELSEWHERE
    return int(EXIT_OF_RUNS[runs_outcome([record])])


def _keep_watched(out: Path, record: Any) -> bool:
    """The record into OUT/results.jsonl (once per run id), and the views of the whole journal;
    False when it had to go to the fallback file instead (printed)."""
    from migbed.experiments.results import JSONL, add_once

    sink = add_once(out, record)
    if sink is None:
        print(f"migbed: {out / JSONL} already holds {record.run_id}: left as it is")
        return True
    written = sink.finish()
    print(f"results: {'  '.join(str(p) for p in [sink.fallback or sink.path, *written])}",
          flush=True)
    return not sink.saved_elsewhere


RETURN_PATH_NOTE = (
    "migration.return-path defaults to true here; QEMU's own default is off, and libvirt "
    "turns it on.\nWith it the reported downtime ends at the destination's Shut (after its "
    "loads and vm_start);\nset return-path = false for plain QEMU (switchover-ack needs it "
    "on).")


def cmd_scenarios(args: argparse.Namespace) -> int:
    if args.file:
        sc = resolve_scenario(args.file, args.overrides)
        print(f"{args.file}: ok ({sc.name}: {len(sc.devices)} device(s), "
              f"{sc.guest.ram_size >> 20} MiB RAM)")
        if args.show:
            print(sc.source_text, end="")
        return EXIT_OK
    from migbed.comparisons import comparisons

    print("scenarios (--scenario NAME):")
    for name in builtin_scenarios():
        sc = parse_scenario(builtin_scenario_text(name), name)
        first = sc.source_text.splitlines()[0].lstrip("# ")
        print(f"  {name:18s} {first}")
    print("\ncomparisons (--comparison NAME):")
    for c in comparisons().values():
        print(f"  {c.name:18s} {c.scenario}: {', '.join(c.policies)} x{c.repeat}  {c.description}")
    print("\ndrivers ([[device]] driver = NAME; default generic; migbed/core/drivers.py):")
    for profile in DRIVERS.values():
        print("\n".join("  " + line for line in describe_driver(profile)))
    print("\nQEMU versions (migration.qemu-version): " + ", ".join(PROFILES)
          + f" (default {DEFAULT_VERSION})")
    print(RETURN_PATH_NOTE)
    return EXIT_OK


# ---------------------------------------------------------------- parser


def build_parser(wanted: str = "") -> argparse.ArgumentParser:
    """The parser; `wanted` is the subcommand about to run (its module is imported; "*" =
    every one, for the CLI reference)."""
    p = argparse.ArgumentParser(prog="migbed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"migbed {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # The order here is the order of `migbed --help` and of docs/cli.md.
    _add_run_parser(sub)
    _add_serve_parser(sub)
    _add_status_parser(sub)
    _add_health_parser(sub)
    _add_cancel_parser(sub)
    _add_watch_parser(sub)
    _add_scenarios_parser(sub)
    _add_extension_parsers(sub, wanted)
    return p


def _add_run_parser(sub: Any) -> None:
    r = sub.add_parser("run", help="run a policy comparison (default: legacy vs switchover-ack)")
    r.add_argument("--source", type=address, metavar="HOST:PORT", help="a running source service")
    r.add_argument("--target", type=address, metavar="HOST:PORT", help="the target, as the source dials it")
    add_scenario_args(r)
    add_dilation_arg(r)
    add_policy_args(r)
    add_out_arg(r, DEFAULT_OUT)
    r.add_argument("--cancel-after", type=seconds(), metavar="SECONDS",
                   help="cancel each run after this many seconds")
    r.add_argument("--no-progress", action="store_true",
                   help="no progress bar (there is none when stderr is not a terminal)")
    r.add_argument("--no-report", action="store_true", help="skip the HTML/PNG report")
    r.add_argument("--tls-dir", help="mutual TLS with the certificates of `migbed certs DIR` "
                   "(local services too)")
    r.set_defaults(func=cmd_run)


def _add_serve_parser(sub: Any) -> None:
    s = sub.add_parser("serve", help="run a source or target service")
    s.add_argument("role", choices=["source", "target"])
    s.add_argument("--listen", type=address, default="127.0.0.1:50051", metavar="HOST:PORT")
    s.add_argument("--metrics-listen", type=address, metavar="HOST:PORT",
                   help="HOST:PORT for Prometheus /metrics")
    s.add_argument("--max-sessions", type=bounded_int(1, 256), default=16)
    s.add_argument("--tls-dir", help="serve (and dial) with mutual TLS: `migbed certs DIR`")
    s.add_argument("--memory-budget", type=size(1 << 20), metavar="SIZE",
                   help="target: memory all sessions together may hold "
                   "(e.g. 8GiB; default: 3/4 of what is available at start)")
    s.add_argument("--idle-timeout", type=seconds(), default=None, metavar="SECONDS",
                   help="target: end a session that sends only pings this long (660 s)")
    s.add_argument("--multifd-listen", type=listen_address, metavar="HOST:PORT",
                   help="target: HOST:PORT for multifd channels (default: --listen's host, "
                   "port 0 = any free port)")
    s.add_argument("--exit-with-parent", type=bounded_int(1, 2**22), metavar="PID",
                   help="stop (as on SIGTERM: runs cancelled, sessions closed) when process PID, "
                   "which started this service, dies; how `migbed run` starts its own services")
    s.add_argument("--orphan-records", metavar="FILE",
                   help="source: append to this JSONL file the records no orchestrator received: "
                   "of runs whose watcher vanished (docs/faults.md) and, with --exit-with-parent, "
                   "of the runs it cancelled because PID died (the orchestrator's results.jsonl)")
    s.set_defaults(func=cmd_serve)


def _add_status_parser(sub: Any) -> None:
    st = sub.add_parser("status", help="a service's role, version, health and sessions")
    st.add_argument("address", type=address, metavar="HOST:PORT")
    st.add_argument("--json", action="store_true", help="one JSON object")
    st.add_argument("--timeout", type=seconds(0, 60), default=5.0, metavar="SECONDS")
    st.add_argument("--tls-dir", help="mutual TLS (default $MIGBED_TLS_DIR)")
    st.set_defaults(func=cmd_status)


def _add_health_parser(sub: Any) -> None:
    h = sub.add_parser("health", help="gRPC health check of a service (exit 0 SERVING, 1 not, 3 no answer)")
    h.add_argument("address", type=address, metavar="HOST:PORT")
    h.add_argument("--timeout", type=seconds(0, 60), default=2.0, metavar="SECONDS")
    h.add_argument("--quiet", "-q", action="store_true")
    h.add_argument("--tls-dir", help="check over mutual TLS (default $MIGBED_TLS_DIR)")
    h.set_defaults(func=cmd_health)


def _add_cancel_parser(sub: Any) -> None:
    c = sub.add_parser("cancel", help="cancel a running migration on a source")
    c.add_argument("source", type=address, metavar="HOST:PORT")
    c.add_argument("run_id", metavar="RUN_ID", help="as `migbed run` prints it when the run starts")
    c.add_argument("--reason", default="cancelled by the user")
    c.add_argument("--tls-dir", help="mutual TLS (default $MIGBED_TLS_DIR)")
    c.set_defaults(func=cmd_cancel)


def _add_watch_parser(sub: Any) -> None:
    w = sub.add_parser("watch", help="follow a run on a source to its record (e.g. one whose "
                       "orchestrator died)")
    w.add_argument("source", type=address, metavar="HOST:PORT")
    w.add_argument("run_id", metavar="RUN_ID", help="as `migbed run` printed it when the run started")
    w.add_argument("--out", metavar="DIR", help="append the record to DIR/results.jsonl (unless "
                   "it holds the run already) and rewrite DIR's results.json and results.csv")
    w.add_argument("--tls-dir", help="mutual TLS (default $MIGBED_TLS_DIR)")
    w.set_defaults(func=cmd_watch)


def _add_scenarios_parser(sub: Any) -> None:
    sc = sub.add_parser("scenarios", help="list built-in scenarios and comparisons, or validate a file")
    sc.add_argument("file", nargs="?", metavar="NAME|FILE")
    add_scenario_args(sc, comparison=False)
    sc.set_defaults(scenario=None)
    sc.add_argument("--show", action="store_true", help="print the scenario as it would be sent")
    sc.set_defaults(func=cmd_scenarios)


def _add_extension_parsers(sub: Any, wanted: str) -> None:
    for command, (module_name, registrar, help_text) in _EXTENSIONS.items():
        if command == wanted or wanted == "*":
            _add_extension(sub, command, module_name, registrar)
        else:  # listed for --help without importing its (heavy) module
            sub.add_parser(command, help=help_text)


# Orchestration commands whose modules need the host-side extras (Docker SDK, ansible-runner,
# matplotlib, cryptography). They are imported only when used: `migbed serve` and `migbed
# health` (container health checks) stay fast, and the service images, which carry only the
# runtime dependencies, say what is missing instead of breaking.
_EXTENSIONS: dict[str, tuple[str, str, str]] = {
    "up": ("migbed.cli.stack", "add_up_parser",
           "start the container stack and run the default comparison across it"),
    "down": ("migbed.cli.stack", "add_down_parser", "remove the container stack"),
    "images": ("migbed.cli.stack", "add_images_parser",
               "build the container images (no registry needed)"),
    "report": ("migbed.cli.report", "add_parser", "PNG plots and an HTML page from a results folder"),
    "deploy": ("migbed.cli.deploy", "add_parser",
               "install migbed on lab hosts over SSH (Ansible) and run an experiment across them"),
    "certs": ("migbed.cli.certs", "add_parser", "make a lab CA and mTLS certificates"),
    "evacuate": ("migbed.cli.evacuate", "add_parser",
                 "drain a host of K guests under parallel-migration limits, per policy"),
    "qemu-compare": ("migbed.cli.qemu_compare", "add_parser",
                     "a scenario's RAM side on real QEMU and on migbed, side by side"),
    "predict": ("migbed.cli.sweeps", "add_predict_parser", "predict a scenario with the analytical model"),
    "simulate": ("migbed.cli.simulate", "add_parser",
                 "simulate draining racks or hosts of a datacenter (planner + model + shared links)"),
    "sweep": ("migbed.cli.sweeps", "add_sweep_parser", "run a scenario over a grid of values, measured and predicted"),
}
# The pip extra that brings each extension's dependencies (pip install 'migbed[EXTRA]').
_EXTRA_OF = {"up": "stack", "down": "stack", "images": "stack", "report": "report", "simulate": "simulate",
             "deploy": "deploy", "certs": "deploy"}


def _add_extension(sub: Any, command: str, module_name: str, registrar: str) -> None:
    import importlib

    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        missing = f"{e.name or e} ({e})"
        extra = _EXTRA_OF.get(command, "all")

        def unavailable(args: argparse.Namespace) -> int:
            raise UsageError(f"`migbed {command}` needs the Python package {missing}: "
                             f"pip install 'migbed[{extra}]' (bin/migbed installs everything)")

        # add_help=False and a hidden catch-all: `migbed up --help` says what is missing too.
        # prefix_chars that no argument uses: every argument, --help too, lands in `rest`.
        unavailable_parser = sub.add_parser(command, add_help=False, prefix_chars="\x00",
                                            help=f"(unavailable here: pip install 'migbed[{extra}]')")
        unavailable_parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        unavailable_parser.set_defaults(func=unavailable)
        return
    getattr(module, registrar)(sub)


def _exit_code_of(e: Exception) -> int:
    """Unreachable services exit 3, everything the user can fix in the command line 2."""
    text = str(e)
    if isinstance(e, Unreachable) or "UNAVAILABLE" in text or "DEADLINE_EXCEEDED" in text:
        return EXIT_UNREACHABLE
    # The service refused what the user asked (an unknown run id, a value it does not allow).
    if isinstance(e, ScenarioError | UsageError) or any(
            code in text for code in ("NOT_FOUND", "INVALID_ARGUMENT", "ALREADY_EXISTS")):
        return EXIT_USAGE
    return EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        load_policy_modules()  # before the parser: --policy takes the names they register
    except PluginError as e:
        print(f"migbed: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    wanted = next((a for a in argv if not a.startswith("-")), "")
    parser = build_parser(wanted)
    args = parser.parse_args(argv)
    from migbed.experiments.controller import ControlError
    from migbed.experiments.localstack import HarnessError
    from migbed.wire.tls import TlsError

    try:
        return int(args.func(args))
    except (ScenarioError, UsageError, TlsError) as e:
        print(f"migbed: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (Unreachable, ControlError, HarnessError) as e:
        print(f"migbed: error: {e}", file=sys.stderr)
        return _exit_code_of(e)
    except KeyboardInterrupt:
        print("migbed: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
