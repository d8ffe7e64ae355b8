"""Readable sizes, rates and durations: "512MiB", "128MiB/s", "1Gbit", "300ms".

Decimal prefixes (kB, MB, GB) are powers of 1000, binary ones (KiB, MiB, GiB) of 1024, as in
QEMU's and tc's documentation. Link rates in bits ("100Mbit", "1Gbit/s") are returned in
bits per second by parse_bit_rate; byte rates ("128MiB/s") in bytes per second.
"""

from __future__ import annotations

import re

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_BIT_UNITS = {
    "bit": 1,
    "kbit": 1000,
    "mbit": 1000**2,
    "gbit": 1000**3,
    "bps": 1,
    "kbps": 1000,
    "mbps": 1000**2,
    "gbps": 1000**3,
}
_TIME_UNITS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0}

_NUMBER = r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_QUANTITY = re.compile(rf"^\s*{_NUMBER}\s*([a-zA-Z]*)\s*$")


class UnitError(ValueError):
    """A value that is not a well-formed quantity; the message says what is allowed."""


def _split(text: str, what: str, allowed: str) -> tuple[float, str]:
    m = _QUANTITY.match(text)
    if not m:
        raise UnitError(f"{text!r} is not a {what} (expected a non-negative number and a unit: {allowed})")
    return float(m.group(1)), m.group(2).lower()


def parse_size(value: str | int) -> int:
    """Bytes from "512MiB", "300MB", "4096" or an int."""
    allowed = "B, kB, MB, GB, KiB, MiB, GiB, e.g. '512MiB'"
    if isinstance(value, bool):
        raise UnitError(f"{value!r} is not a size ({allowed})")
    if isinstance(value, int):
        if value < 0:
            raise UnitError(f"{value} is negative; a size is >= 0 ({allowed})")
        return value
    if not isinstance(value, str):
        raise UnitError(f"{value!r} is not a size ({allowed})")
    number, unit = _split(value, "size", allowed)
    if unit not in _SIZE_UNITS:
        raise UnitError(f"unknown size unit {unit!r} in {value!r} (allowed: {allowed})")
    return round(number * _SIZE_UNITS[unit])


def parse_byte_rate(value: str) -> float:
    """Bytes per second from "128MiB/s", "2GB/s"."""
    allowed = "a size per second, e.g. '128MiB/s', '2GB/s'"
    if not isinstance(value, str) or "/" not in value:
        raise UnitError(f"{value!r} is not a byte rate ({allowed})")
    size, _, per = value.partition("/")
    if per.strip().lower() not in ("s", "sec"):
        raise UnitError(f"{value!r}: rates are per second ({allowed})")
    return float(parse_size(size.strip()))


def parse_bit_rate(value: str) -> float:
    """Bits per second from "100Mbit", "1Gbit/s", "5gbit"."""
    allowed = "bit, kbit, Mbit, Gbit (optionally '/s'), e.g. '1Gbit'"
    if not isinstance(value, str):
        raise UnitError(f"{value!r} is not a link rate ({allowed})")
    text = value.strip()
    if text.lower().endswith("/s"):
        text = text[:-2]
    number, unit = _split(text, "link rate", allowed)
    if unit not in _BIT_UNITS:
        raise UnitError(f"unknown link rate unit {unit!r} in {value!r} (allowed: {allowed})")
    return number * _BIT_UNITS[unit]


def parse_duration(value: str | int | float) -> float:
    """Seconds from "300ms", "1.5s", "120s", "2min"."""
    allowed = "ns, us, ms, s, min, e.g. '300ms'"
    if isinstance(value, bool) or not isinstance(value, str):
        raise UnitError(f"{value!r} is not a duration (a string with a unit: {allowed})")
    number, unit = _split(value, "duration", allowed)
    if unit not in _TIME_UNITS:
        raise UnitError(f"unknown time unit {unit!r} in {value!r} (allowed: {allowed})")
    return number * _TIME_UNITS[unit]


def format_bytes(n: float) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if abs(n) >= scale:
            return f"{n / scale:.1f}{unit}"
    return f"{n:.0f}B"
