"""Readable sizes, rates and durations: "512MiB", "128MiB/s", "1Gbit", "300ms".

Sizes: binary prefixes (KiB, MiB, GiB, TiB) are powers of 1024; the SI ones (kB, MB, GB, TB)
powers of 1000; a bare one-letter suffix (k, M, G, T) means what it means to QEMU, a power of
1024 ("512M" = 512 MiB). Link rates are in bits as tc writes them ("100Mbit", "1Gbit/s": powers
of 1000), returned in bits per second by parse_bit_rate. tc's byte-rate units ("bps", "kbps",
"mbps", "gbps": bytes per second to tc, bits per second to most people) are refused with a
message saying what to write instead. Numbers have at most MAX_DIGITS digits, so nothing
overflows and every error stays short.
"""

from __future__ import annotations

import math
import re

# Goodput of TCP over Ethernet at MTU 1500: 1448 payload bytes (1500 - IPv4 20 - TCP 20 -
# timestamps 12) per 1514 bytes that tbf counts (the frame without FCS). A shaped link of R
# bit/s carries R / 8 x FRAME_EFFICIENCY bytes/s of payload (env/shaping.py, model/inputs.py).
FRAME_EFFICIENCY = 1448 / 1514

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    # QEMU's one-letter suffixes (qemu_strtosz): powers of 1024.
    "k": 1024,
    "m": 1024**2,
    "g": 1024**3,
    "t": 1024**4,
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
}
# tc(8) reads these as BYTES per second; elsewhere they usually mean bits. Refused, with a hint.
_AMBIGUOUS_RATES = {"bps": ("bit", "B/s"), "kbps": ("kbit", "kB/s"), "mbps": ("Mbit", "MB/s"),
                    "gbps": ("Gbit", "GB/s")}
MAX_DIGITS = 24
_TIME_UNITS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0}

_NUMBER = r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_QUANTITY = re.compile(rf"^\s*{_NUMBER}\s*([a-zA-Z]*)\s*$")


class UnitError(ValueError):
    """A value that is not a well-formed quantity; the message says what is allowed."""


def _shown(text: str) -> str:
    return repr(text) if len(text) <= 60 else repr(text[:60]) + f"... ({len(text)} characters)"


def _split(text: str, what: str, allowed: str) -> tuple[float, str]:
    if len(text) > MAX_DIGITS + 16:
        raise UnitError(f"{len(text)} characters is too long for a {what} (at most {MAX_DIGITS} digits "
                        "and a unit)")
    m = _QUANTITY.match(text)
    if not m:
        raise UnitError(f"{_shown(text)} is not a {what} (expected a non-negative number and a unit: {allowed})")
    if len(m.group(1)) > MAX_DIGITS:
        raise UnitError(f"{_shown(text)}: at most {MAX_DIGITS} digits")
    number = float(m.group(1))
    if not math.isfinite(number):
        raise UnitError(f"{_shown(text)} is not a finite {what}")
    return number, m.group(2).lower()


def parse_size(value: str | int) -> int:
    """Bytes from "512MiB", "300MB", "4096" or an int."""
    allowed = "B, KiB, MiB, GiB, TiB, kB, MB, GB, TB, or QEMU's K, M, G, T (=KiB...), e.g. '512MiB'"
    if isinstance(value, bool):
        raise UnitError(f"{value!r} is not a size ({allowed})")
    if isinstance(value, int):
        if value < 0:
            raise UnitError(f"{value} is negative; a size is >= 0 ({allowed})")
        if value >= 2**64:
            raise UnitError(f"an integer of {len(str(value))} digits is not a size (at most 2^64-1 bytes)")
        return value
    if not isinstance(value, str):
        raise UnitError(f"{_shown(repr(value))} is not a size ({allowed})")
    number, unit = _split(value, "size", allowed)
    if unit not in _SIZE_UNITS:
        raise UnitError(f"unknown size unit {_shown(unit)} in {_shown(value)} (allowed: {allowed})")
    return round(number * _SIZE_UNITS[unit])


def parse_byte_rate(value: str) -> float:
    """Bytes per second from "128MiB/s", "2GB/s"."""
    allowed = "a size per second, e.g. '128MiB/s', '2GB/s'"
    if not isinstance(value, str) or "/" not in value:
        raise UnitError(f"{_shown(repr(value))} is not a byte rate ({allowed})")
    size, _, per = value.partition("/")
    if per.strip().lower() not in ("s", "sec"):
        raise UnitError(f"{_shown(value)}: rates are per second ({allowed})")
    return float(parse_size(size.strip()))


def parse_bit_rate(value: str) -> float:
    """Bits per second from "100Mbit", "1Gbit/s", "5gbit"."""
    allowed = "bit, kbit, Mbit, Gbit (optionally '/s'), e.g. '1Gbit'"
    if not isinstance(value, str):
        raise UnitError(f"{_shown(repr(value))} is not a link rate ({allowed})")
    text = value.strip()
    if text.lower().endswith("/s"):
        text = text[:-2]
    number, unit = _split(text, "link rate", allowed)
    if unit in _AMBIGUOUS_RATES:
        bits, bytes_ = _AMBIGUOUS_RATES[unit]
        raise UnitError(f"{_shown(value)} is ambiguous: tc reads {unit!r} as bytes per second, "
                        f"most people as bits; write '{number:g}{bits}' for bits per second "
                        f"(or '{number * 8:g}{bits}' for {number:g}{bytes_})")
    if unit not in _BIT_UNITS:
        raise UnitError(f"unknown link rate unit {_shown(unit)} in {_shown(value)} (allowed: {allowed})")
    return number * _BIT_UNITS[unit]


def parse_duration(value: str | int | float) -> float:
    """Seconds from "300ms", "1.5s", "120s", "2min"."""
    allowed = "ns, us, ms, s, min, e.g. '300ms'"
    if isinstance(value, bool) or not isinstance(value, str):
        raise UnitError(f"{_shown(repr(value))} is not a duration (a string with a unit: {allowed})")
    number, unit = _split(value, "duration", allowed)
    if unit not in _TIME_UNITS:
        raise UnitError(f"unknown time unit {_shown(unit)} in {_shown(value)} (allowed: {allowed})")
    return number * _TIME_UNITS[unit]


def format_bytes(n: float) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if abs(n) >= scale:
            return f"{n / scale:.1f}{unit}"
    return f"{n:.0f}B"
