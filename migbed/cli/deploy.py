"""`migbed deploy`: its flags, read and checked into a DeployRequest (migbed/env/deploy.py
does the work: the playbooks in deploy/, an evacuation across the hosts)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from migbed.cli.args import (
    EXIT_USAGE,
    UsageError,
    add_dilation_arg,
    add_out_arg,
    add_policy_args,
    add_scenario_args,
    progress_wanted,
    resolve_experiment,
    writable_folder,
)
from migbed.cli.evacuate import add_plan_args
from migbed.core.scenario import is_scenario_file
from migbed.env.ansible import DeployError
from migbed.env.deploy import DEFAULT_OUT, DeployRequest, EvacuationRequest, deploy
from migbed.env.playbook import AnsibleOptions
from migbed.fleet.planner import Limits


def cmd_deploy(args: argparse.Namespace) -> int:
    try:
        return deploy(request_from(args))
    except (DeployError, UsageError) as e:
        print(f"migbed deploy: {e}", file=sys.stderr)
        return EXIT_USAGE


def request_from(args: argparse.Namespace) -> DeployRequest:
    """The request the flags make; UsageError (or DeployError) naming the flag otherwise."""
    out_dir = writable_folder(Path(args.out or DEFAULT_OUT))
    evacuation = None
    if args.evacuate:
        evacuation = EvacuationRequest(args.guests, Limits(args.per_source, args.per_cluster,
                                                           args.per_target),
                                       args.order, args.stop_on_target_loss)
    scenario_file, scenario_text, policies, repeat = None, None, [], args.repeat or 3
    if args.scenario or getattr(args, "comparison", None):
        try:
            exp = resolve_experiment(args)
        except UsageError as e:
            raise UsageError(f"--evacuate: {e}" if args.evacuate else str(e)) from None
        policies, repeat = list(exp.policies), exp.repeat
        if is_scenario_file(exp.scenario_arg) and not exp.overrides:
            scenario_file = Path(exp.scenario_arg).resolve()
        else:  # a built-in name, a comparison or --set: written out as OUT/scenario.toml
            scenario_text = exp.scenario.source_text
    return DeployRequest(
        inventory=Path(args.inventory), out_dir=out_dir, scenario_file=scenario_file,
        scenario_text=scenario_text, policies=policies, repeat=repeat, evacuation=evacuation,
        teardown=args.teardown, tls=not args.no_tls, rerun=args.rerun,
        wheelhouse=Path(args.wheelhouse) if args.wheelhouse else None,
        extra_vars=parse_extra_vars(args.extra_vars or []),
        ansible=AnsibleOptions(args.check, args.diff, args.private_key, args.user, args.limit,
                               args.verbose),
        progress=progress_wanted(args.no_progress))


def parse_extra_vars(items: Sequence[str]) -> dict[str, Any]:
    """-e NAME=VALUE, the value read as YAML (as ansible-playbook reads it)."""
    import yaml  # comes with Ansible

    extra: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"-e {item!r}: expected NAME=VALUE")
        extra[key.strip()] = yaml.safe_load(value) if value else ""
    return extra


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``migbed deploy`` on the CLI's subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "deploy",
        help="install migbed on lab hosts over SSH (Ansible) and run an experiment across them",
        description=(
            "Install migbed into a venv on the hosts of an Ansible inventory (groups source, "
            "target, monitor), start the services, and with --scenario run a migration from "
            "the first source host to the first target host and fetch the results. "
            "See deploy/README.md."
        ),
    )
    # The order of the calls is the order of `migbed deploy --help`.
    _add_experiment_args(p)
    _add_evacuation_args(p)
    _add_ansible_args(p)
    p.set_defaults(func=cmd_deploy)
    return p


def _add_experiment_args(p: argparse.ArgumentParser) -> None:
    """The inventory, the experiment, where results go, and what to install or remove."""
    p.add_argument("-i", "--inventory", required=True, help="Ansible inventory of the lab hosts")
    # The flags run, up and deploy share (migbed/cli/args.py), checked by the same code;
    # a scenario (or a comparison) runs an experiment after installing.
    add_scenario_args(p)
    add_dilation_arg(p)
    add_policy_args(p)
    add_out_arg(p, f"{DEFAULT_OUT}: results and Ansible artifacts on this machine")
    p.add_argument(
        "--teardown",
        action="store_true",
        help="stop everything and remove migbed from the hosts (after the experiment, if any)",
    )
    p.add_argument(
        "--no-tls",
        action="store_true",
        help="plaintext gRPC between the hosts (default: mutual TLS with a lab CA kept in OUT/tls)",
    )
    p.add_argument("--rerun", action="store_true", help="run the experiment even if its results exist")


def _add_evacuation_args(p: argparse.ArgumentParser) -> None:
    fleet = p.add_argument_group(
        "evacuation (--evacuate)",
        "with --scenario: drain every source host of its guests onto the target hosts, run from "
        "this machine against every host's service (the results in --out: fleet.json, fleet.csv, "
        "results.json, gantt.png); the same plan as `migbed evacuate`",
    )
    fleet.add_argument("--evacuate", action="store_true",
                       help="run an evacuation instead of the one-pair experiment")
    add_plan_args(fleet)
    p.add_argument("--no-progress", action="store_true", help="no progress bar for the evacuation")


def _add_ansible_args(p: argparse.ArgumentParser) -> None:
    """How Ansible reaches the hosts and what it shows."""
    p.add_argument(
        "--check",
        action="store_true",
        help="Ansible check mode: report what would change on the hosts, change nothing",
    )
    p.add_argument("--diff", action="store_true", help="show the changes to files (with --check: would make)")
    p.add_argument("--private-key", help="SSH private key (else the inventory's or ssh's)")
    p.add_argument("--user", help="SSH user (else the inventory's)")
    p.add_argument("--limit", help="Ansible --limit: only these hosts")
    p.add_argument(
        "--wheelhouse",
        help="use this wheelhouse (deps/, project/, runtime.txt) instead of building one",
    )
    p.add_argument(
        "-e",
        "--extra-var",
        dest="extra_vars",
        action="append",
        metavar="NAME=VALUE",
        help="set a playbook variable (deploy/roles/migbed/defaults/main.yml); YAML value",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="also show skipped tasks")
