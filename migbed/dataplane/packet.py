"""The multifd wire format: a channel hello, then packets of RAM pages or device state.
Pure codec, no I/O.

Modelled on QEMU 10.0's multifd (migration/multifd.h, multifd-nocomp.c,
multifd-device-state.c): each channel opens with an init message (MultiFDInit_t: magic,
version, the migration's UUID, the channel id), then carries packets. A RAM packet
(MultiFDPacket_t) holds at most MULTIFD_PACKET_SIZE (512 KiB) of pages:
multifd_ram_page_count() = 512 KiB / page size, 128 pages of 4 KiB; its header is followed by
an array of that many page offsets, all of them sent whatever the packet uses (packet_len is
fixed), then the pages. A device-state packet (MULTIFD_FLAG_DEVICE_STATE,
MultiFDPacketDeviceState_t, queued by multifd_queue_device_state) names the device and
carries one buffer of its state; VFIO fills it with at most VFIO_MIG_DEFAULT_DATA_BUFFER_SIZE
(1 MiB) read from the device, numbered per device (VFIODeviceStatePacket.idx) so the
destination can put them back in order, the config state last
(VFIO_DEVICE_STATE_CONFIG_STATE).

Ours differs where migbed differs: one RAM block, so page indices rather than a RAMBlock name
and offsets; little-endian; a 16-byte session token the target handed out (it authenticates
the channel to a session); a per-channel sequence number and the sync generation in every
packet, so the target can check that nothing is lost, reordered, or arrives after its round's
sync; a device by its index, and each device-state buffer with its image's kind, offset and
length (mlx5's image header travels beside the data, as on the main stream) and a LAST flag
on the device's final packet (QEMU knows the end by the config packet, which migbed's
devices may not have).

    hello   = HELLO_STRUCT (40 bytes), once per connection, source -> target
    block   = Layout.block bytes:
                HEADER_STRUCT (32 bytes)
                RAM:          packet_pages indices (uint32 LE, or uint64 LE with
                              FLAG_INDEX64), the first count used, the rest zero
                device state: DEVICE_STATE_STRUCT (24 bytes), then zeros
                SYNC, KEEPALIVE, FIN: zeros
    RAM     = a burst of K (1 to MAX_BURST_PACKETS) RAM packets: their K blocks, the j-th
              (from 0) with more = K-1-j, seq one apart; then their pages, count of each, in
              the order of their indices, which increase strictly across the whole burst and
              are each < the RAM's page count
    other   = one block (more = 0), then for device state its count bytes of payload

Every block has the same size, as every QEMU RAM packet (and SYNC) has the same packet_len.
QEMU writes each packet (header and offsets, then pages) on its own; migbed writes a burst of
consecutive packets to one channel with one sendmsg and puts their blocks first, so the
receiver learns every page of the burst from one read and fills guest RAM with the next:
in Python each read and write costs a wake-up and a GIL hand-over, whatever its size. The
packets, their headers, indices and bytes are QEMU's; what differs is that up to
MAX_BURST_PACKETS of them go to a channel together (QEMU gives each to the next free one)
and where their headers sit in the stream.

A packet with FLAG_SYNC ends round `generation` on its channel (every packet queued before it
on that channel precedes it). FLAG_KEEPALIVE is an empty packet an idle channel sends so the
target can tell silence from a dead peer; FLAG_FIN says the source closed the channel on
purpose (EOF after FIN is not a failure).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

MAGIC = 0x464D474D  # b"MGMF" read as little-endian uint32
VERSION = 2
TOKEN_BYTES = 16

FLAG_SYNC = 1 << 0
FLAG_INDEX64 = 1 << 1
FLAG_KEEPALIVE = 1 << 2
FLAG_FIN = 1 << 3
FLAG_DEVICE_STATE = 1 << 4  # QEMU's MULTIFD_FLAG_DEVICE_STATE
KNOWN_FLAGS = FLAG_SYNC | FLAG_INDEX64 | FLAG_KEEPALIVE | FLAG_FIN | FLAG_DEVICE_STATE
_CONTROL = FLAG_SYNC | FLAG_KEEPALIVE | FLAG_FIN
NOT_RAM = _CONTROL | FLAG_DEVICE_STATE  # at most one of these; none = a RAM packet
_KINDS = NOT_RAM

MAX_CHANNELS = 64
MIN_PAGE_SIZE = 512
MAX_PAGE_SIZE = 1 << 21
# QEMU's MULTIFD_PACKET_SIZE: a RAM packet holds 512 KiB of pages (one page if a page is
# larger: migbed's 2 MiB pages are QEMU's 512 target pages of 4 KiB).
PACKET_BYTES = 512 << 10
# QEMU's VFIO_MIG_DEFAULT_DATA_BUFFER_SIZE: VFIO reads its state in buffers of at most 1 MiB
# (vfio_save_setup: min(1 MiB, stop_copy_size)), one device-state packet each.
DEVICE_STATE_MAX_BYTES = 1 << 20

# hello: magic, version, flags (0), token, channel, channels, page_size, ram_pages
HELLO_STRUCT = struct.Struct("<IHH16sHHIQ")
# header: magic, flags, channel, seq, generation, count (pages or payload bytes), more (RAM
# packet blocks of the same burst after this one; 0 for other packets)
HEADER_STRUCT = struct.Struct("<IHHQQII")
MAX_BURST_PACKETS = 64  # 32 MiB of 4 KiB pages: bounds the receiver's block buffer
# device state: device, kind (DS_KIND_*), flags (DS_LAST), idx (the device's packet number,
# from 0), offset (in the device's state), image_bytes (the length of the image it belongs to)
DEVICE_STATE_STRUCT = struct.Struct("<HBBIQQ")
HELLO_SIZE = HELLO_STRUCT.size
HEADER_SIZE = HEADER_STRUCT.size
DEVICE_STATE_SIZE = DEVICE_STATE_STRUCT.size

# Image kinds, as the main stream's ImageKind numbers them.
DS_KIND_INITIAL, DS_KIND_MIDDLE, DS_KIND_FINAL, DS_KIND_CONFIG = 1, 2, 3, 4
DS_KINDS = {DS_KIND_INITIAL: "initial", DS_KIND_MIDDLE: "middle", DS_KIND_FINAL: "final",
            DS_KIND_CONFIG: "config"}
DS_KIND_OF = {name: kind for kind, name in DS_KINDS.items()}
DS_LAST = 1 << 0  # the device's last packet: its state is complete

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
    count: int  # pages (RAM), payload bytes (device state), 0 (SYNC, KEEPALIVE, FIN)
    more: int = 0  # RAM packet blocks of this burst after this one

    @property
    def is_device_state(self) -> bool:
        return bool(self.flags & FLAG_DEVICE_STATE)


@dataclass(frozen=True)
class DeviceState:
    """The device-state part of a device-state packet's block."""

    device: int
    kind: int  # DS_KIND_*
    idx: int
    offset: int
    image_bytes: int
    last: bool

    @property
    def kind_name(self) -> str:
        return DS_KINDS[self.kind]


@dataclass(frozen=True)
class Layout:
    """The sizes both ends derive from the hello: a RAM packet's page count, the index
    type, and the block every packet starts with."""

    page_size: int
    ram_pages: int

    @property
    def packet_pages(self) -> int:
        return max(1, PACKET_BYTES // self.page_size)

    @property
    def index_dtype(self) -> np.dtype:
        return index_dtype_for(self.ram_pages)[0]

    @property
    def index_flag(self) -> int:
        return index_dtype_for(self.ram_pages)[1]

    @property
    def block(self) -> int:
        return HEADER_SIZE + max(self.packet_pages * self.index_dtype.itemsize, DEVICE_STATE_SIZE)

    @property
    def block_dtype(self) -> np.dtype:
        """A block as a numpy record: the header's fields and the index array (a burst's
        blocks are checked as one array)."""
        return np.dtype({"names": ["magic", "flags", "channel", "seq", "generation", "count",
                                   "more", "idx"],
                         "formats": ["<u4", "<u2", "<u2", "<u8", "<u8", "<u4", "<u4",
                                     (self.index_dtype, (self.packet_pages,))],
                         "offsets": [0, 4, 6, 8, 16, 24, 28, HEADER_SIZE],
                         "itemsize": self.block})


def _check_page_size(page_size: int) -> None:
    if not MIN_PAGE_SIZE <= page_size <= MAX_PAGE_SIZE or page_size & (page_size - 1):
        raise PacketError(f"hello: page_size {page_size} is not a power of two in "
                          f"[{MIN_PAGE_SIZE}, {MAX_PAGE_SIZE}]")


def _check_channel(channel: int, channels: int, where: str) -> None:
    if not 1 <= channels <= MAX_CHANNELS:
        raise PacketError(f"{where}: channels {channels} is not in [1, {MAX_CHANNELS}]")
    if not 0 <= channel < channels:
        raise PacketError(f"{where}: channel {channel} is not in [0, {channels - 1}]")


def index_dtype_for(ram_pages: int) -> tuple[np.dtype, int]:
    """(dtype, flag bit) of the narrowest index array that can name every page."""
    return (INDEX32, 0) if ram_pages <= 1 << 32 else (INDEX64, FLAG_INDEX64)


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


# ---------------------------------------------------------------- packet blocks


def encode_header_into(buf: bytearray | memoryview, at: int, h: Header) -> None:
    HEADER_STRUCT.pack_into(buf, at, MAGIC, h.flags, h.channel, h.seq, h.generation, h.count,
                            h.more)


def decode_header(block: bytes | bytearray | memoryview, layout: Layout) -> Header:
    """Parse and check a block's header (its body: indices / device_state)."""
    if len(block) < HEADER_SIZE:
        raise PacketError(f"packet: {len(block)} header bytes, a header is {HEADER_SIZE}")
    magic, flags, channel, seq, generation, count, more = HEADER_STRUCT.unpack_from(block)
    if magic != MAGIC:
        raise PacketError(f"packet: magic 0x{magic:08x} is not multifd's 0x{MAGIC:08x}")
    if flags & ~KNOWN_FLAGS:
        raise PacketError(f"packet: flags 0x{flags:x} has unknown bits (known: 0x{KNOWN_FLAGS:x})")
    kind = flags & _KINDS
    if more and kind:
        raise PacketError(f"packet: more {more} on a packet that is not RAM (must be 0)")
    if more >= MAX_BURST_PACKETS:
        raise PacketError(f"packet: more {more}: a burst has at most {MAX_BURST_PACKETS} packets")
    if kind & (kind - 1):
        raise PacketError(f"packet: flags 0x{flags:x} set more than one of SYNC, KEEPALIVE, "
                          "FIN, DEVICE_STATE")
    if not kind and flags & FLAG_INDEX64 != layout.index_flag:
        raise PacketError(f"packet: INDEX64 flag {'set' if flags & FLAG_INDEX64 else 'clear'}, "
                          f"but a guest of {layout.ram_pages} pages uses "
                          f"{layout.index_dtype.itemsize * 8}-bit indices")
    _check_count(kind, count, layout)
    return Header(flags, channel, seq, generation, count, more)


def _check_count(kind: int, count: int, layout: Layout) -> None:
    if kind & _CONTROL:
        if count:
            raise PacketError(f"packet: count {count} on a SYNC/KEEPALIVE/FIN packet, which "
                              "carries nothing (must be 0)")
    elif kind == FLAG_DEVICE_STATE:
        if count > DEVICE_STATE_MAX_BYTES:
            raise PacketError(f"packet: count {count} device-state bytes exceeds "
                              f"{DEVICE_STATE_MAX_BYTES} (1 MiB, QEMU's VFIO buffer)")
    elif not 1 <= count <= layout.packet_pages:
        raise PacketError(f"packet: count {count} pages on a RAM packet: 1 to "
                          f"{layout.packet_pages} ({PACKET_BYTES >> 10} KiB of "
                          f"{layout.page_size}-byte pages)")


def indices(block: bytes | bytearray | memoryview, h: Header, layout: Layout) -> np.ndarray:
    """A RAM packet's page indices (a view into its block)."""
    return np.frombuffer(block, dtype=layout.index_dtype, count=h.count, offset=HEADER_SIZE)


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


def burst_ok(recs: np.ndarray, first: Header, layout: Layout) -> bool:
    """The blocks after a burst's first, all at once: what the first one's header promised
    (flags, channel, consecutive seq, generation, more counting down) and a page count each.
    False: find the bad block one by one (decode_header) for a message that names it."""
    k = recs.size
    steps = np.arange(k, dtype=np.uint64)
    return bool((recs["magic"] == MAGIC).all() and (recs["flags"] == first.flags).all()
                and (recs["channel"] == first.channel).all()
                and (recs["seq"] == np.uint64(first.seq) + steps).all()
                and (recs["generation"] == first.generation).all()
                and (recs["more"] == np.uint64(k - 1) - steps).all()
                and (recs["count"] >= 1).all() and (recs["count"] <= layout.packet_pages).all())


def burst_indices(recs: np.ndarray, layout: Layout) -> np.ndarray:
    """Every page index of a burst, in stream order (each block's first `count`)."""
    counts = recs["count"]
    if bool((counts == layout.packet_pages).all()):
        return recs["idx"].reshape(-1)
    return np.concatenate([recs["idx"][j, :int(c)] for j, c in enumerate(counts)])


def encode_device_state_into(buf: bytearray | memoryview, at: int, ds: DeviceState) -> None:
    DEVICE_STATE_STRUCT.pack_into(buf, at + HEADER_SIZE, ds.device, ds.kind,
                                  DS_LAST if ds.last else 0, ds.idx, ds.offset, ds.image_bytes)


def decode_device_state(block: bytes | bytearray | memoryview, h: Header) -> DeviceState:
    device, kind, flags, idx, offset, image_bytes = DEVICE_STATE_STRUCT.unpack_from(block, HEADER_SIZE)
    if kind not in DS_KINDS:
        raise PacketError(f"device state: kind {kind} is not one of "
                          f"{', '.join(f'{k} ({n})' for k, n in DS_KINDS.items())}")
    if flags & ~DS_LAST:
        raise PacketError(f"device state: flags 0x{flags:x} has unknown bits (known: 0x{DS_LAST:x})")
    if h.count == 0 and not flags & DS_LAST:
        raise PacketError("device state: count 0 on a packet that is not the device's LAST "
                          "(only the last may be empty)")
    if h.count and image_bytes == 0:
        raise PacketError("device state: image_bytes 0: required, the length of the image "
                          "the bytes belong to")
    return DeviceState(device, kind, idx, offset, image_bytes, bool(flags & DS_LAST))


def encode_packet(layout: Layout, h: Header, idx: np.ndarray | None = None,
                  payload: bytes | memoryview = b"", ds: DeviceState | None = None) -> bytes:
    """A whole packet (block and payload) in one bytes object: tests and tools, not the hot
    path. `idx` for a RAM packet, `ds` for a device-state one."""
    block = bytearray(layout.block)
    encode_header_into(block, 0, h)
    if idx is not None:
        if h.more:
            raise PacketError("encode_packet: one packet; a burst is encode_burst")
        if idx.size != h.count:
            raise PacketError(f"packet: count {h.count} but {idx.size} indices")
        np.frombuffer(block, dtype=layout.index_dtype, count=idx.size,
                      offset=HEADER_SIZE)[:] = idx
    if ds is not None:
        encode_device_state_into(block, 0, ds)
    return bytes(block) + bytes(payload)


def checked_page_runs(idx: np.ndarray, ram_pages: int) -> tuple[np.ndarray, np.ndarray]:
    """check_indices and page_runs for the receiver's hot path: a packet of consecutive
    pages (the bulk stage's) costs one unsigned difference (a decrease wraps to a huge
    step, so all steps == 1 means strictly increasing and consecutive)."""
    n = idx.size
    if n and idx.dtype.kind == "u" and int(idx[-1]) < ram_pages \
            and (n == 1 or bool((idx[1:] - idx[:-1] == 1).all())):
        return np.array([int(idx[0])], np.int64), np.array([n], np.int64)
    check_indices(idx, ram_pages)
    return page_runs(idx)


def encode_burst(layout: Layout, first: Header, packets: list[np.ndarray], pages: bytes = b"") -> bytes:
    """A burst of RAM packets (tests and tools): their blocks, then `pages`."""
    blocks = bytearray(layout.block * len(packets))
    for j, idx in enumerate(packets):
        at = j * layout.block
        encode_header_into(blocks, at, Header(first.flags, first.channel, first.seq + j,
                                              first.generation, idx.size, len(packets) - 1 - j))
        np.frombuffer(blocks, dtype=layout.index_dtype, count=idx.size,
                      offset=at + HEADER_SIZE)[:] = idx
    return bytes(blocks) + bytes(pages)


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
