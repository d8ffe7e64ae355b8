"""`migbed`: the command line. Every subcommand validates its input before anything starts.

  migbed run                 the default comparison (legacy vs switchover-ack, 3 repeats, the
                             mlx5-like scenario) between two local processes over gRPC
  migbed run --source A --target B   the same against services already running elsewhere
  migbed serve source|target run one service (what containers and lab hosts run)
  migbed health ADDR         exit 0 when ADDR's gRPC health check says SERVING
  migbed cancel ADDR RUN_ID  cancel a running migration on a source
  migbed scenarios [FILE]    list the built-in scenarios, or validate a scenario file
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import os
import sys
from pathlib import Path
from typing import Any

from migbed.core.policy import POLICIES
from migbed.core.scenario import (
    DEFAULT_SCENARIO,
    ScenarioError,
    builtin_scenario_text,
    builtin_scenarios,
    load_scenario,
    parse_scenario,
)

DEFAULT_POLICIES = ["legacy", "switchover-ack"]


class UsageError(Exception):
    pass


def _scenario_text(arg: str | None) -> tuple[str, str]:
    """(name, toml) for --scenario: a file path or the name of a built-in scenario."""
    if arg is None:
        arg = DEFAULT_SCENARIO
    path = Path(arg)
    if path.suffix == ".toml" or path.exists():
        sc = load_scenario(str(path))
    else:
        sc = parse_scenario(builtin_scenario_text(arg), arg)
    return sc.name, sc.source_text


def _address(value: str) -> str:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{value!r}: expected HOST:PORT with a port 1-65535")
    return value


def _positive_int(lo: int, hi: int):  # type: ignore[no-untyped-def]
    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
        if not lo <= n <= hi:
            raise argparse.ArgumentTypeError(f"{n} is out of range ({lo}..{hi})")
        return n
    return parse


def _listen_address(value: str) -> str:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{value!r}: expected HOST:PORT with a port 0-65535 "
                                         "(0: any free port)")
    return value


def _size(value: str) -> int:
    from migbed.core.units import UnitError, parse_size

    try:
        n = parse_size(value[:40])
    except UnitError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if n < 1 << 20:
        raise argparse.ArgumentTypeError(f"{value!r}: at least 1MiB")
    return n


def _seconds(value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not 0 < x <= 3600:
        raise argparse.ArgumentTypeError(f"{x:g} is out of range (0..3600 s)")
    return x


# ---------------------------------------------------------------- run


def cmd_run(args: argparse.Namespace) -> int:
    from migbed.experiments.comparison import Plan, run_plan
    from migbed.experiments.localstack import local_stack
    from migbed.measure.record import dump_results
    from migbed.report.summary import results_table, write_csv

    if bool(args.source) != bool(args.target):
        raise UsageError("--source and --target go together (or neither, for local processes)")
    name, toml = _scenario_text(args.scenario)
    policies = args.policy or DEFAULT_POLICIES
    out = Path(args.out or Path("results") / dt.datetime.now().strftime("%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    plan = Plan(name, toml, policies, args.repeat, args.source or "", args.target or "",
                args.cancel_after or 0.0)
    print(f"migbed: scenario {name}, policies {', '.join(policies)}, {args.repeat} repeat(s); "
          f"results in {out}", flush=True)
    if args.tls_dir:  # run_plan's Control client picks its credentials up from there
        from migbed.wire.tls import ENV_TLS_DIR, TlsDir

        TlsDir(args.tls_dir).channel_credentials("client")  # a bad folder fails here, clearly
        os.environ[ENV_TLS_DIR] = str(Path(args.tls_dir).resolve())
    if args.source:
        records = run_plan(plan, show_progress=not args.no_progress)
    else:
        with local_stack(out / "logs", tls_dir=args.tls_dir) as (source, target):
            plan.source, plan.target = source.address, target.address
            records = run_plan(plan, show_progress=not args.no_progress)
    dump_results(records, str(out / "results.json"))
    write_csv(records, out / "results.csv")
    print()
    print(results_table(records))
    print(f"\nresults: {out / 'results.json'}  {out / 'results.csv'}")
    if not args.no_report:
        _maybe_report(out)
    bad = [r for r in records if (r.outcome == "completed" and not r.verified)
           or (r.outcome == "failed")]
    return 1 if bad else 0


def _maybe_report(out: Path) -> None:
    try:
        from migbed.report.report import write_report
    except ImportError as e:  # matplotlib is an optional extra for the services' images
        print(f"report skipped: {e}")
        return
    page = write_report(out)
    print(f"report:  {page}")


# ---------------------------------------------------------------- serve / health / cancel


def cmd_serve(args: argparse.Namespace) -> int:
    from services.main import serve

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
                          multifd_listen=args.multifd_listen, multifd_ssl_context=multifd_ssl))
    except OSError as e:  # an address it cannot listen on: say which, no traceback
        raise UsageError(str(e)) from None
    return 0


def cmd_health(args: argparse.Namespace) -> int:
    from migbed.wire.channel import check_health
    from migbed.wire.tls import client_credentials

    ok = check_health(args.address, timeout=args.timeout,
                      credentials=client_credentials(args.tls_dir))
    if not args.quiet:
        print("SERVING" if ok else "NOT SERVING")
    return 0 if ok else 1


def cmd_cancel(args: argparse.Namespace) -> int:
    from migbed.experiments.controller import SourceControl
    from migbed.wire.tls import client_credentials

    ctl = SourceControl(args.source, client_credentials(args.tls_dir))
    try:
        reply = ctl.cancel(args.run_id, args.reason)
    finally:
        ctl.close()
    print(f"{args.run_id}: {'cancelled' if reply.cancelled else 'already ' + reply.state}")
    return 0


def cmd_scenarios(args: argparse.Namespace) -> int:
    if args.file:
        sc = load_scenario(args.file)
        print(f"{args.file}: ok ({sc.name}: {len(sc.devices)} device(s), "
              f"{sc.guest.ram_size >> 20} MiB RAM)")
        return 0
    for name in builtin_scenarios():
        sc = parse_scenario(builtin_scenario_text(name), name)
        first = sc.source_text.splitlines()[0].lstrip("# ")
        print(f"{name:12s} {first}")
    return 0


# ---------------------------------------------------------------- parser


def build_parser(wanted: str = "") -> argparse.ArgumentParser:
    """The parser; `wanted` is the subcommand about to run (its module is imported)."""
    p = argparse.ArgumentParser(prog="migbed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run a policy comparison (default: legacy vs switchover-ack)")
    r.add_argument("--source", type=_address, help="a running source service, HOST:PORT")
    r.add_argument("--target", type=_address, help="the target, as the source dials it")
    r.add_argument("--scenario", help=f"TOML file or built-in name (default {DEFAULT_SCENARIO})")
    r.add_argument("--policy", action="append", choices=POLICIES,
                   help="repeatable; default: legacy and switchover-ack")
    r.add_argument("--repeat", type=_positive_int(1, 100), default=3, help="runs per policy (3)")
    r.add_argument("--out", help="results folder (default results/<timestamp>)")
    r.add_argument("--cancel-after", type=_seconds, help="cancel each run after this many seconds")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.add_argument("--no-report", action="store_true", help="skip the HTML/PNG report")
    r.add_argument("--tls-dir", help="mutual TLS with the certificates of `migbed certs DIR` "
                   "(local services too)")
    r.set_defaults(func=cmd_run)

    s = sub.add_parser("serve", help="run a source or target service")
    s.add_argument("role", choices=["source", "target"])
    s.add_argument("--listen", type=_address, default="127.0.0.1:50051")
    s.add_argument("--metrics-listen", type=_address, help="HOST:PORT for Prometheus /metrics")
    s.add_argument("--max-sessions", type=_positive_int(1, 256), default=16)
    s.add_argument("--tls-dir", help="serve (and dial) with mutual TLS: `migbed certs DIR`")
    s.add_argument("--memory-budget", type=_size, help="target: memory all sessions together may hold "
                   "(e.g. 8GiB; default: 3/4 of what is available at start)")
    s.add_argument("--idle-timeout", type=_seconds, default=None,
                   help="target: end a session that sends only pings this long (660 s)")
    s.add_argument("--multifd-listen", type=_listen_address,
                   help="target: HOST:PORT for multifd channels (default: --listen's host, "
                   "port 0 = any free port)")
    s.set_defaults(func=cmd_serve)

    h = sub.add_parser("health", help="gRPC health check of a service")
    h.add_argument("address", type=_address)
    h.add_argument("--timeout", type=float, default=2.0)
    h.add_argument("--quiet", "-q", action="store_true")
    h.add_argument("--tls-dir", help="check over mutual TLS (default $MIGBED_TLS_DIR)")
    h.set_defaults(func=cmd_health)

    c = sub.add_parser("cancel", help="cancel a running migration on a source")
    c.add_argument("source", type=_address)
    c.add_argument("run_id")
    c.add_argument("--reason", default="cancelled by the user")
    c.add_argument("--tls-dir", help="mutual TLS (default $MIGBED_TLS_DIR)")
    c.set_defaults(func=cmd_cancel)

    sc = sub.add_parser("scenarios", help="list built-in scenarios or validate a file")
    sc.add_argument("file", nargs="?")
    sc.set_defaults(func=cmd_scenarios)

    for command, (module_name, registrar, help_text) in _EXTENSIONS.items():
        if command == wanted:
            _add_extension(sub, command, module_name, registrar)
        else:  # listed for --help without importing its (heavy) module
            sub.add_parser(command, help=help_text)
    return p


# Orchestration commands whose modules need the host-side extras (Docker SDK, ansible-runner,
# matplotlib, cryptography). They are imported only when used: `migbed serve` and `migbed
# health` (container health checks) stay fast, and the service images, which carry only the
# runtime dependencies, say what is missing instead of breaking.
_EXTENSIONS: dict[str, tuple[str, str, str]] = {
    "up": ("migbed.env.compose", "add_up_parser",
           "start the container stack and run the default comparison across it"),
    "down": ("migbed.env.compose", "add_down_parser", "remove the container stack"),
    "images": ("migbed.env.images", "add_images_parser",
               "build the container images (no registry needed)"),
    "report": ("migbed.report.report", "add_parser", "PNG plots and an HTML page from a results folder"),
    "deploy": ("migbed.env.deploy", "add_parser",
               "install migbed on lab hosts over SSH (Ansible) and run an experiment across them"),
    "certs": ("migbed.env.certs", "add_parser", "make a lab CA and mTLS certificates"),
    "evacuate": ("migbed.fleet.cli", "add_parser",
                 "drain a host of K guests under parallel-migration limits, per policy"),
    "qemu-compare": ("migbed.qemu.cli", "add_parser",
                     "a scenario's RAM side on real QEMU and on migbed, side by side"),
}


def _add_extension(sub: Any, command: str, module_name: str, registrar: str) -> None:
    import importlib

    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        missing = str(e)

        def unavailable(args: argparse.Namespace) -> int:
            raise UsageError(f"`migbed {command}` needs {missing}: run bin/migbed on the host")

        unavailable_parser = sub.add_parser(command)
        unavailable_parser.add_argument("rest", nargs=argparse.REMAINDER)
        unavailable_parser.set_defaults(func=unavailable)
        return
    getattr(module, registrar)(sub)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    wanted = next((a for a in argv if not a.startswith("-")), "")
    parser = build_parser(wanted)
    args = parser.parse_args(argv)
    from migbed.experiments.controller import ControlError
    from migbed.wire.tls import TlsError

    try:
        return int(args.func(args))
    except (ScenarioError, UsageError, ControlError, TlsError) as e:
        print(f"migbed: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("migbed: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
