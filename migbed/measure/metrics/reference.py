"""The metrics reference of docs/observability.md, generated from the exporters themselves.

The source's series are derived from the record types by a table and a naming rule, so the
list of metrics follows the record: this module feeds both exporters with zero-valued
records (every field present, one device, one multifd channel) and lists what they export.

    python -m migbed.measure.metrics.reference            # print the markdown table
    python -m migbed.measure.metrics.reference --write    # update docs/observability.md
    python -m migbed.measure.metrics.reference --check    # exit 1 if the docs are stale
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from pathlib import Path
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from migbed.measure.metrics.source import SourceMetrics
from migbed.measure.metrics.target import TargetMetrics
from migbed.measure.record import Event, ProgressSample, RunRecord

BEGIN = "<!-- metrics-reference:begin (python -m migbed.measure.metrics.reference --write) -->"
END = "<!-- metrics-reference:end -->"
DOC = Path(__file__).resolve().parents[3] / "docs" / "observability.md"
_SCALARS: dict[Any, Any] = {int: 0, float: 0.0, bool: False, str: ""}


def zero(cls: type[Any], **given: Any) -> Any:
    """An instance of a record dataclass with every field present: numbers 0, one element in
    each list or dict of numbers, one named item in each list of dataclasses."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        kwargs[f.name] = given[f.name] if f.name in given else _zero_of(hints[f.name])
    return cls(**kwargs)


def _zero_of(hint: Any) -> Any:
    if hint in _SCALARS:
        return _SCALARS[hint]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list and args:
        item = args[0]
        if dataclasses.is_dataclass(item):
            return [zero(typing.cast(type[Any], item), name="DEVICE")]
        return [_zero_of(item)] if item in _SCALARS else []
    if origin is dict and len(args) == 2 and args[1] in _SCALARS:
        return {"KEY": _zero_of(args[1])}
    return origin() if origin in (list, dict) else None


def exported() -> list[tuple[str, str, str, str, str]]:
    """(service, metric, type, labels, help) of every series both exporters export."""
    src, tgt = SourceMetrics(), TargetMetrics()
    record = zero(RunRecord, run_id="RUN", scenario="S", policy="P", outcome="completed")
    src.on_progress("S", "P", zero(ProgressSample, phase="precopy"))
    events = ("setup-accepted", "decision", "switchover-ack", "stop", "completed", "resumed", "init-data-sent:DEVICE")
    for name in events:
        src.on_event("S", "P", Event(0.0, name))
    src.on_result(record)
    tgt.on_session("S", "started")
    tgt.on_load_progress("S", "DEVICE", 0, 0, 0.0, False, False)
    tgt.on_received_bytes("S", "precopy", "ram", 0)
    tgt.on_resumed("S", "P", 0.0)
    rows = []
    for service, registry in (("source", src.registry), ("target", tgt.registry)):
        for fam in text_string_to_metric_families(generate_latest(registry).decode()):
            if not fam.name.startswith("migbed_") or fam.name == "migbed_build_info":
                continue
            labels = sorted({k for s in fam.samples for k in s.labels} - {"le"})
            name = fam.name + ("_total" if fam.type == "counter" else "")
            rows.append((service, name, fam.type, ", ".join(labels), fam.documentation))
    return sorted(rows)


def markdown() -> str:
    lines = [BEGIN, "", "| service | metric | type | labels | meaning |", "| --- | --- | --- | --- | --- |"]
    for service, name, kind, labels, doc in exported():
        lines.append(f"| {service} | `{name}` | {kind} | {labels} | {doc.replace('|', '/')} |")
    return "\n".join([*lines, "", END])


def updated(text: str) -> str:
    head, sep, rest = text.partition(BEGIN)
    _, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        raise ValueError(f"{DOC} has no metrics reference markers ({BEGIN} ... {END})")
    return head + markdown() + tail


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="the metrics reference of docs/observability.md")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help=f"update {DOC.name}")
    mode.add_argument("--check", action="store_true", help=f"exit 1 if {DOC.name} is stale")
    args = ap.parse_args(argv)
    if not (args.write or args.check):
        print(markdown())
        return 0
    text = DOC.read_text()
    new = updated(text)
    if args.check:
        if new != text:
            print(f"{DOC} is stale: run python -m migbed.measure.metrics.reference --write", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(new)
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
