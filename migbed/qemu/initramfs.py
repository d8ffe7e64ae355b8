"""A newc ("070701") cpio archive, the format the Linux kernel unpacks as its initramfs.

The comparison guest needs three entries: /dev (a folder), /dev/console (the character
device the kernel opens as init's stdin/stdout; without it init has no console) and /init
(our static program). Written here so the set-up needs no cpio tool and no root to mknod.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass

MAGIC = b"070701"
TRAILER = "TRAILER!!!"


@dataclass(frozen=True)
class Entry:
    name: str  # without the leading "/"
    mode: int  # st_mode: type bits | permission bits
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)  # (major, minor) of a device node


def directory(name: str) -> Entry:
    return Entry(name, stat.S_IFDIR | 0o755)


def char_device(name: str, major: int, minor: int) -> Entry:
    return Entry(name, stat.S_IFCHR | 0o600, rdev=(major, minor))


def regular_file(name: str, data: bytes, mode: int = 0o755) -> Entry:
    return Entry(name, stat.S_IFREG | mode, data)


def _pad4(n: int) -> bytes:
    return b"\0" * (-n % 4)


def _header(ino: int, entry: Entry, name_size: int) -> bytes:
    nlink = 2 if stat.S_ISDIR(entry.mode) else 1
    fields = [ino, entry.mode, 0, 0, nlink, 0, len(entry.data), 0, 0,
              entry.rdev[0], entry.rdev[1], name_size, 0]
    return MAGIC + b"".join(b"%08X" % f for f in fields)


def _member(ino: int, entry: Entry) -> bytes:
    name = entry.name.lstrip("/").encode() + b"\0"
    head = _header(ino, entry, len(name)) + name
    return head + _pad4(len(head)) + entry.data + _pad4(len(entry.data))


def newc_archive(entries: list[Entry]) -> bytes:
    """The archive bytes: each entry, then the trailer (the kernel stops reading there)."""
    out = [_member(i + 1, e) for i, e in enumerate(entries)]
    out.append(_member(0, Entry(TRAILER, 0)))
    return b"".join(out)


def guest_initramfs(init_binary: bytes) -> bytes:
    return newc_archive([
        directory("dev"),
        char_device("dev/console", 5, 1),
        regular_file("init", init_binary),
    ])
