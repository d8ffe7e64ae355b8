"""The multifd wire format: a channel hello, then packets of RAM pages. Pure codec, no I/O.

Modelled on QEMU's multifd (migration/multifd.h): each channel opens with an init message
(MultiFDInit_t: magic, version, the migration's UUID, the channel id), then carries packets
(MultiFDPacket_t: magic, version, flags with MULTIFD_FLAG_SYNC, pages used, packet number,
then the pages' offsets) each followed by the pages' bytes. Ours differs where migbed differs:
one RAM block (so a page index, not a RAMBlock name plus offsets), little-endian, a
16-byte session token the target handed out (it authenticates the channel to a session),
and the sync generation in every packet so the target can check that no page of a round
arrives after that round's sync.

    hello   = HELLO_STRUCT (40 bytes), once per connection, source -> target
    packet  = HEADER_STRUCT (32 bytes)
              + page_count indices (uint32 LE, or uint64 LE with FLAG_INDEX64), strictly
                increasing, each < the RAM's page count
              + page_count * page_size bytes, in index order

A packet with FLAG_SYNC carries no pages: it ends round `generation` on its channel (every
page queued before it on that channel precedes it). FLAG_KEEPALIVE is an empty packet an idle
channel sends so the target can tell silence from a dead peer; FLAG_FIN says the source closed
the channel on purpose (EOF after FIN is not a failure).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

MAGIC = 0x464D474D  # b"MGMF" read as little-endian uint32
VERSION = 1
TOKEN_BYTES = 16

FLAG_SYNC = 1 << 0
FLAG_INDEX64 = 1 << 1
FLAG_KEEPALIVE = 1 << 2
FLAG_FIN = 1 << 3
KNOWN_FLAGS = FLAG_SYNC | FLAG_INDEX64 | FLAG_KEEPALIVE | FLAG_FIN

MAX_CHANNELS = 64
MIN_PAGE_SIZE = 512
MAX_PAGE_SIZE = 1 << 21
# A packet's pages may total at most this many bytes (QEMU: 512 KiB). The receiver sizes
# its index buffer from it, so a hostile count cannot make it allocate.
MAX_PACKET_BYTES = 16 << 20

# hello: magic, version, flags (0), token, channel, channels, page_size, ram_pages
HELLO_STRUCT = struct.Struct("<IHH16sHHIQ")
# header: magic, flags, channel, seq, generation, page_count, reserved (0)
HEADER_STRUCT = struct.Struct("<IHHQQII")
HELLO_SIZE = HELLO_STRUCT.size
HEADER_SIZE = HEADER_STRUCT.size

INDEX32 = np.dtype("<u4")
INDEX64 = np.dtype("<u8")


class PacketError(ValueError):
    """Bytes on a multifd channel that break the format; the message names the field."""


@dataclass(frozen=True)
class Hello:
    token: bytes
    channel: int
    channels: int
    page_size: int
    ram_pages: int


@dataclass(frozen=True)
class Header:
    flags: int
    channel: int
    seq: int
    generation: int
    page_count: int

    @property
    def index_dtype(self) -> np.dtype:
        return INDEX64 if self.flags & FLAG_INDEX64 else INDEX32

    @property
    def index_bytes(self) -> int:
        return self.page_count * self.index_dtype.itemsize


def max_packet_pages(page_size: int) -> int:
    return MAX_PACKET_BYTES // page_size


def _check_page_size(page_size: int) -> None:
    if not MIN_PAGE_SIZE <= page_size <= MAX_PAGE_SIZE or page_size & (page_size - 1):
        raise PacketError(f"hello: page_size {page_size} is not a power of two in "
                          f"[{MIN_PAGE_SIZE}, {MAX_PAGE_SIZE}]")


def _check_channel(channel: int, channels: int, where: str) -> None:
    if not 1 <= channels <= MAX_CHANNELS:
        raise PacketError(f"{where}: channels {channels} is not in [1, {MAX_CHANNELS}]")
    if not 0 <= channel < channels:
        raise PacketError(f"{where}: channel {channel} is not in [0, {channels - 1}]")


# ---------------------------------------------------------------- hello


def encode_hello(h: Hello) -> bytes:
    if len(h.token) != TOKEN_BYTES:
        raise PacketError(f"hello: token must be {TOKEN_BYTES} bytes, got {len(h.token)}")
    _check_channel(h.channel, h.channels, "hello")
    _check_page_size(h.page_size)
    return HELLO_STRUCT.pack(MAGIC, VERSION, 0, h.token, h.channel, h.channels, h.page_size,
                             h.ram_pages)


def decode_hello(buf: bytes | bytearray | memoryview) -> Hello:
    if len(buf) != HELLO_SIZE:
        raise PacketError(f"hello: {len(buf)} bytes, a hello is {HELLO_SIZE}")
    magic, version, flags, token, channel, channels, page_size, ram_pages = \
        HELLO_STRUCT.unpack(buf)
    if magic != MAGIC:
        raise PacketError(f"hello: magic 0x{magic:08x} is not multifd's 0x{MAGIC:08x} "
                          "(not a migbed multifd channel)")
    if version != VERSION:
        raise PacketError(f"hello: version {version} is not supported (this side speaks {VERSION})")
    if flags:
        raise PacketError(f"hello: flags 0x{flags:x} must be 0")
    _check_channel(channel, channels, "hello")
    _check_page_size(page_size)
    if ram_pages == 0:
        raise PacketError("hello: ram_pages 0, a guest has at least one page")
    return Hello(bytes(token), channel, channels, page_size, ram_pages)


# ---------------------------------------------------------------- packet header


def encode_header(h: Header) -> bytes:
    return HEADER_STRUCT.pack(MAGIC, h.flags, h.channel, h.seq, h.generation, h.page_count, 0)


def decode_header(buf: bytes | bytearray | memoryview, page_size: int) -> Header:
    """Parse and check a header alone (the indices follow; see check_indices)."""
    if len(buf) != HEADER_SIZE:
        raise PacketError(f"packet: {len(buf)} header bytes, a header is {HEADER_SIZE}")
    magic, flags, channel, seq, generation, page_count, reserved = HEADER_STRUCT.unpack(buf)
    if magic != MAGIC:
        raise PacketError(f"packet: magic 0x{magic:08x} is not multifd's 0x{MAGIC:08x}")
    if flags & ~KNOWN_FLAGS:
        raise PacketError(f"packet: flags 0x{flags:x} has unknown bits (known: 0x{KNOWN_FLAGS:x})")
    if reserved:
        raise PacketError(f"packet: reserved field is {reserved}, must be 0")
    limit = max_packet_pages(page_size)
    if page_count > limit:
        raise PacketError(f"packet: page_count {page_count} exceeds {limit} "
                          f"({MAX_PACKET_BYTES >> 20} MiB of {page_size}-byte pages)")
    control = flags & (FLAG_SYNC | FLAG_KEEPALIVE | FLAG_FIN)
    if control and page_count:
        raise PacketError(f"packet: page_count {page_count} on a SYNC/KEEPALIVE/FIN packet, "
                          "which carries no pages (must be 0)")
    if control & (control - 1):
        raise PacketError(f"packet: flags 0x{flags:x} set more than one of SYNC, KEEPALIVE, FIN")
    if not control and not page_count:
        raise PacketError("packet: page_count 0 on a data packet (must be >= 1)")
    return Header(flags, channel, seq, generation, page_count)


def check_indices(idx: np.ndarray, ram_pages: int) -> None:
    """Indices of one packet: strictly increasing and inside RAM."""
    if idx.size == 0:
        return
    if idx.size > 1 and bool((np.diff(idx.astype(np.int64)) <= 0).any()):
        raise PacketError("packet: page indices must be strictly increasing "
                          "(sorted, no duplicates)")
    if int(idx[-1]) >= ram_pages:  # sorted: the last is the largest
        bad = int(idx[np.argmax(idx >= ram_pages)])
        raise PacketError(f"packet: page index {bad} is past the end of RAM "
                          f"(allowed 0..{ram_pages - 1})")


def index_dtype_for(ram_pages: int) -> tuple[np.dtype, int]:
    """(dtype, flag bit) of the narrowest index array that can name every page."""
    return (INDEX32, 0) if ram_pages <= 1 << 32 else (INDEX64, FLAG_INDEX64)


def encode_packet(h: Header, idx: np.ndarray, pages: bytes | memoryview = b"") -> bytes:
    """Header, indices and page bytes in one bytes object (tests, tools: not the hot path)."""
    if h.page_count != idx.size:
        raise PacketError(f"packet: page_count {h.page_count} but {idx.size} indices")
    return encode_header(h) + np.ascontiguousarray(idx, dtype=h.index_dtype).tobytes() + bytes(pages)


def page_runs(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first page, page count) of each run of consecutive pages in strictly increasing idx."""
    n = idx.size
    if n == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    first, last = int(idx[0]), int(idx[-1])
    if last - first == n - 1:  # strictly increasing and spanning n pages: one run
        return np.array([first], np.int64), np.array([n], np.int64)
    i = idx.astype(np.int64)
    breaks = np.flatnonzero(np.diff(i) != 1) + 1
    starts = np.concatenate(([0], breaks))
    ends = np.concatenate((breaks, [n]))
    return i[starts], ends - starts
