"""Bounded input: every text migbed reads from a user or a client passes through here.

A scenario file is read only when it is a regular file and small (a symlink to /dev/zero or a
FIFO is refused, never read or waited on); text must be UTF-8 (the error names the byte); TOML
and JSON are parsed only when their nesting is shallow (a deep one is refused before the
recursive parser sees it); error texts are clipped so that they fit a terminal line and a gRPC
status (whose metadata is limited to 16 KiB). The CLI and the Control API call the same code.
"""

from __future__ import annotations

import json
import os
import re
import stat
import tomllib
from typing import Any

MAX_SCENARIO_BYTES = 256 * 1024  # the largest built-in scenario is ~2 KiB
MAX_NESTING = 8  # a scenario needs 3 ([[device]] -> table -> value)
MAX_ERROR_TEXT = 200  # characters of a value echoed in an error
MAX_LABELS_BYTES = 4096
MAX_LABELS = 32
MAX_LABEL_TEXT = 128
MAX_INTEGER_DIGITS = 100  # TOML integers; a 64-bit one has at most 20
_LONG_INTEGER = re.compile(rf"^\s*([^=\s]{{1,64}})\s*=\s*[+-]?([0-9_]{{{MAX_INTEGER_DIGITS + 1},}})", re.M)


class InputError(ValueError):
    """Input refused before it was parsed; str() names where it came from and the rule."""


def clip(text: str, limit: int = MAX_ERROR_TEXT) -> str:
    """`text`, cut to `limit` characters with a note of how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def read_regular_file(path: str | os.PathLike[str], limit: int = MAX_SCENARIO_BYTES,
                      what: str = "file") -> bytes:
    """The bytes of a regular file of at most `limit` bytes, or InputError.

    O_NONBLOCK: opening a FIFO returns at once instead of waiting for a writer; fstat on the
    open descriptor (not the name) decides, so a symlink is judged by what it points to."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise InputError(f"cannot read {what} {clip(str(path))}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = _kind(st.st_mode)
            raise InputError(f"{what} {clip(str(path))} is {kind}, not a regular file")
        if st.st_size > limit:
            raise InputError(f"{what} {clip(str(path))} is {st.st_size} bytes; at most {limit} allowed")
        data = os.read(fd, limit + 1)
        chunks = [data]
        while data and sum(map(len, chunks)) <= limit:  # short reads
            data = os.read(fd, limit + 1 - sum(map(len, chunks)))
            chunks.append(data)
        blob = b"".join(chunks)
        if len(blob) > limit:  # it grew while we read it
            raise InputError(f"{what} {clip(str(path))} is larger than {limit} bytes")
        return blob
    except OSError as e:
        raise InputError(f"cannot read {what} {clip(str(path))}: {e.strerror}") from None
    finally:
        os.close(fd)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def decode_utf8(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise InputError(f"{where}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}, "
                         f"line {line}); save the file as UTF-8") from None


def nesting_depth(text: str) -> int:
    """The deepest nesting of [ and { in a TOML or JSON text, outside strings and comments.

    A linear scan, no recursion: it is what decides whether the recursive parsers may run."""
    depth = deepest = 0
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in "\"'":
            i = _skip_string(text, i)
            continue
        if c == "#":
            nl = text.find("\n", i)
            i = n if nl < 0 else nl
            continue
        if c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth = max(0, depth - 1)
        i += 1
    return deepest


def _skip_string(text: str, i: int) -> int:
    """Index just past the string starting at i (basic, literal, or their multi-line forms)."""
    q = text[i]
    if text.startswith(q * 3, i):
        end = text.find(q * 3, i + 3)
        return len(text) if end < 0 else end + 3
    j = i + 1
    while j < len(text):
        c = text[j]
        if c == "\\" and q == '"':
            j += 2
            continue
        if c == q or c == "\n":
            return j + 1
        j += 1
    return j


def loads_toml(text: str, where: str, max_depth: int = MAX_NESTING,
               limit: int = MAX_SCENARIO_BYTES) -> dict[str, Any]:
    """tomllib.loads with bounds: size, nesting, integer digits; every failure an InputError."""
    if len(text) > limit:
        raise InputError(f"{where}: {len(text)} characters; at most {limit} allowed")
    long_int = _LONG_INTEGER.search(text)
    if long_int:
        line = text.count("\n", 0, long_int.start()) + 1
        raise InputError(f"{where}: {clip(long_int.group(1), 64)} (line {line}) is an integer of "
                         f"{len(long_int.group(2))} digits; at most {MAX_INTEGER_DIGITS} allowed")
    depth = nesting_depth(text)
    if depth > max_depth:
        raise InputError(f"{where}: arrays or tables nested {depth} deep; at most {max_depth} allowed")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{where}: not valid TOML: {clip(str(e))}") from None
    except (ValueError, RecursionError) as e:  # e.g. an integer past Python's 4300-digit limit
        raise InputError(f"{where}: not valid TOML: {clip(str(e) or type(e).__name__)}") from None


def parse_labels_json(text: str, where: str = "labels_json") -> dict[str, str]:
    """Run labels: a flat JSON object of short strings, at most MAX_LABELS of them."""
    if not text:
        return {}
    if len(text) > MAX_LABELS_BYTES:
        raise InputError(f"{where}: {len(text)} characters; at most {MAX_LABELS_BYTES} allowed")
    if nesting_depth(text) > 1:
        raise InputError(f"{where}: a flat object of strings is expected (no nesting)")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise InputError(f"{where}: not valid JSON: {clip(str(e))}") from None
    if not isinstance(data, dict):
        raise InputError(f"{where}: not an object (expected a JSON object of strings, got {type(data).__name__})")
    if len(data) > MAX_LABELS:
        raise InputError(f"{where}: {len(data)} labels; at most {MAX_LABELS} allowed")
    labels: dict[str, str] = {}
    for k, v in data.items():
        if not isinstance(v, str | int | float | bool) or len(str(v)) > MAX_LABEL_TEXT or len(k) > MAX_LABEL_TEXT:
            raise InputError(f"{where}.{clip(k, 40)}: a string of at most {MAX_LABEL_TEXT} characters "
                             "is expected")
        labels[k] = str(v)
    return labels
