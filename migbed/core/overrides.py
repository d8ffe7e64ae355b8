"""`--set KEY=VALUE`: change one key of a scenario from the command line or a comparison.

KEY is the key's path in the scenario file: ``name``, ``guest.ram-size``,
``migration.downtime-limit``, ``link.rate``; a device is picked by its name:
``device.vf0.load-setup-time``. VALUE is read as a TOML value when it is one (``500``,
``true``, ``"x"``) and as a string otherwise (``500ms``, ``1Gbit``), so it is written exactly as
in the file. The changed scenario is validated like any file (unknown keys and bad values are
refused naming the field) and the text sent to the source is the changed one.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from typing import Any

from migbed.core.bounded import clip

MAX_OVERRIDES = 64
_KEY_PART = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_SECTIONS = ("guest", "migration", "link")


class OverrideError(ValueError):
    """A --set that cannot apply; str() names it and what is allowed."""


def split_override(text: str) -> tuple[list[str], Any]:
    """("a.b", value) of "a.b=VALUE"; OverrideError when it is not KEY=VALUE."""
    key, sep, raw = text.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(_KEY_PART.match(p) for p in parts) or len(parts) > 3:
        raise OverrideError(f"--set {clip(repr(text), 80)}: expected KEY=VALUE, KEY like "
                            "migration.downtime-limit or device.NAME.load-setup-time")
    return parts, _value(raw.strip())


def _value(raw: str) -> Any:
    if len(raw) > 200:
        raise OverrideError(f"--set value {clip(repr(raw), 40)}: at most 200 characters")
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except (tomllib.TOMLDecodeError, ValueError, RecursionError):
        return raw


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> None:
    """Apply each KEY=VALUE to the parsed scenario `data`, in order."""
    if len(overrides) > MAX_OVERRIDES:
        raise OverrideError(f"--set: {len(overrides)} given; at most {MAX_OVERRIDES}")
    for text in overrides:
        parts, value = split_override(text)
        _apply(data, parts, value, text)


def _apply(data: dict[str, Any], parts: list[str], value: Any, text: str) -> None:
    head = parts[0]
    if len(parts) == 1:
        data[head] = value
        return
    if head == "device":
        if len(parts) != 3:
            raise OverrideError(f"--set {clip(text, 80)}: a device key is device.NAME.KEY")
        _device_table(data, parts[1], text)[parts[2]] = value
        return
    if head not in _SECTIONS or len(parts) != 2:
        raise OverrideError(f"--set {clip(text, 80)}: KEY is name, {', '.join(s + '.KEY' for s in _SECTIONS)} "
                            "or device.NAME.KEY")
    table = data.setdefault(head, {})
    if not isinstance(table, dict):
        raise OverrideError(f"--set {clip(text, 80)}: [{head}] is not a table in the scenario")
    table[parts[1]] = value


def _device_table(data: dict[str, Any], name: str, text: str) -> dict[str, Any]:
    devices = data.get("device", [])
    have = [d.get("name") for d in devices if isinstance(d, dict)] if isinstance(devices, list) else []
    for d in devices if isinstance(devices, list) else []:
        if isinstance(d, dict) and d.get("name") == name:
            return d
    raise OverrideError(f"--set {clip(text, 80)}: no device named {name!r} "
                        f"(the scenario has: {', '.join(map(str, have)) or 'no devices'})")


def override_values(data: dict[str, Any], values: Mapping[str, Any]) -> None:
    """Like apply_overrides, with typed values (a sweep's axis, a comparison's [set] table)."""
    if len(values) > MAX_OVERRIDES:
        raise OverrideError(f"{len(values)} overrides; at most {MAX_OVERRIDES}")
    for key, value in values.items():
        parts, _ = split_override(f"{key}=0")
        _apply(data, parts, value, f"{key}={value!r}")


# ---------------------------------------------------------------- writing TOML back


def dump_toml(data: dict[str, Any]) -> str:
    """The TOML text of a scenario's data: top-level keys, tables, arrays of tables."""
    lines = [f"{_key(k)} = {_toml(v)}" for k, v in data.items() if not _is_table(v) and not _is_tables(v)]
    for k, v in data.items():
        if _is_table(v):
            lines += ["", f"[{_key(k)}]", *(f"{_key(kk)} = {_toml(vv)}" for kk, vv in v.items())]
        elif _is_tables(v):
            for item in v:
                lines += ["", f"[[{_key(k)}]]", *(f"{_key(kk)} = {_toml(vv)}" for kk, vv in item.items())]
    return "\n".join(lines) + "\n"


def _is_table(v: Any) -> bool:
    return isinstance(v, dict)


def _is_tables(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def _key(k: str) -> str:
    return k if _KEY_PART.match(k) else _toml(k)


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return '"' + "".join(_escape(c) for c in v) + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(k)} = {_toml(x)}" for k, x in v.items()) + "}"
    return _toml(str(v))  # dates and times: as text; the validator says what it wanted


def _escape(c: str) -> str:
    if c == '"':
        return '\\"'
    if c == "\\":
        return "\\\\"
    if ord(c) < 0x20 or ord(c) == 0x7F:
        return f"\\u{ord(c):04x}"
    return c
