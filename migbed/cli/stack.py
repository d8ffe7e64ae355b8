"""`migbed up`, `migbed down`, `migbed images`: the container stack's commands (the work:
migbed/env/compose.py and migbed/env/images.py)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import docker.errors

from migbed.cli.args import (
    EXIT_USAGE,
    UsageError,
    add_dilation_arg,
    add_out_arg,
    add_policy_args,
    add_scenario_args,
    resolve_experiment,
    writable_folder,
)
from migbed.core.clock import utc_stamp
from migbed.core.scenario import ScenarioError
from migbed.env import images
from migbed.env.compose import DEFAULT_PROJECT, StackError, down, scenario_link, up
from migbed.env.compose import __doc__ as COMPOSE_DOC
from migbed.env.images import __doc__ as IMAGES_DOC
from migbed.env.shaping import ShapingError


def cmd_up(args: argparse.Namespace) -> int:
    # The same checks as `migbed run`, before any image is built or container started.
    try:
        exp = resolve_experiment(args)
        out = writable_folder(Path(args.out or Path("results") / utc_stamp()).resolve())
        scenario_link(exp.scenario_arg, exp.overrides)  # a [link] tc cannot shape is refused here
    except (UsageError, ScenarioError, ShapingError) as e:
        print(f"migbed up: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        res = up(
            scenario=exp.scenario_arg,
            policies=exp.policies,
            repeat=exp.repeat,
            run=not args.no_run,
            grafana=not args.no_grafana,
            project=args.project_name,
            results=out.parent,
            run_id=out.name,
            extra=args.extra,
            overrides=exp.overrides,
        )
    except (
        StackError,
        ScenarioError,
        ShapingError,
        RuntimeError,
        docker.errors.DockerException,
    ) as e:
        print(f"migbed up: {e}", file=sys.stderr)
        return 1
    return res.code


def cmd_down(args: argparse.Namespace) -> int:
    try:
        leftovers = down(project=args.project_name)
    except (StackError, RuntimeError, docker.errors.DockerException) as e:
        print(f"migbed down: {e}", file=sys.stderr)
        return 1
    if leftovers:
        print(f"migbed: also removed: {', '.join(leftovers)}", flush=True)
    print(f"migbed: project {args.project_name}: no containers or networks left", flush=True)
    return 0


def _project_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--project-name",
        default=os.environ.get("MIGBED_PROJECT", DEFAULT_PROJECT),
        help=f"compose project (default {DEFAULT_PROJECT}, or MIGBED_PROJECT)",
    )


def add_up_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "up",
        help="start the container stack and run the default comparison across it",
        description=COMPOSE_DOC,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # The flags run, up and deploy share (migbed/cli/args.py), checked by the same code.
    add_scenario_args(p)
    add_dilation_arg(p)
    add_policy_args(p)
    add_out_arg(p, "results/<UTC timestamp>; its parent is mounted in the runner")
    p.add_argument("--no-run", action="store_true", help="start and shape only, run nothing")
    p.add_argument("--no-grafana", action="store_true", help="do not try to pull Grafana")
    p.add_argument("extra", nargs="*", help="after --: more `migbed run` arguments")
    _project_arg(p)
    p.set_defaults(func=cmd_up)
    return p


def add_down_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "down", help="remove the container stack (containers, network and named volumes)"
    )
    _project_arg(p)
    p.set_defaults(func=cmd_down)
    return p


def images_main(args: argparse.Namespace) -> int:
    try:
        if args.remove:
            images.remove_images(include_base=args.include_base)
            return 0
        imgs = images.ensure_images(grafana=not args.no_grafana)
    except RuntimeError as e:
        print(f"migbed images: {e}", file=sys.stderr)
        return 1
    for key, value in imgs.compose_env().items():
        print(f"{key}={value}")
    if imgs.grafana is None:
        print(f"# Grafana: {images.GRAFANA} cannot be pulled here; dashboards will be skipped")
    return 0


def add_images_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "images",
        help="build the container images (works with no registry)",
        description=IMAGES_DOC,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _configure(p)
    return p


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-grafana", action="store_true", help="do not try to pull Grafana")
    p.add_argument("--remove", action="store_true", help="remove the images migbed built")
    p.add_argument("--include-base", action="store_true", help="with --remove: the base too")
    p.set_defaults(func=images_main)
