"""`migbed report DIR`: PNG plots and one self-contained HTML page from DIR/results.json
(migbed/report/report.py does the work)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from migbed.report.report import write_report


def cmd_report(args: argparse.Namespace) -> int:
    try:
        page = write_report(Path(args.dir))
    except (FileNotFoundError, ValueError) as exc:
        print(f"migbed report: {exc}", file=sys.stderr)
        return 2
    print(f"report: {page}")
    for png in sorted(page.parent.glob("*.png")):
        print(f"plot:   {png}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "report",
        help="PNG plots and an HTML page from a results folder",
        description="Turn DIR/results.json into DIR/downtime.png, DIR/timeline*.png and "
        "DIR/report.html (self-contained).",
    )
    p.add_argument("dir", metavar="DIR", help="a results folder holding results.json")
    p.set_defaults(func=cmd_report)
    return p
