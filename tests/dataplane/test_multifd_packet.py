"""The multifd wire format: round trips, and every refusal names its field."""

from __future__ import annotations

import numpy as np
import pytest

from migbed.dataplane import packet as pk
from migbed.dataplane.packet import Header, Hello, PacketError

TOKEN = bytes(range(16))


def test_hello_round_trip() -> None:
    h = Hello(TOKEN, 3, 4, 4096, 65536)
    raw = pk.encode_hello(h)
    assert len(raw) == pk.HELLO_SIZE == 40
    assert pk.decode_hello(raw) == h


def _hello_bytes(**over: int | bytes) -> bytes:
    f = {"magic": pk.MAGIC, "version": pk.VERSION, "flags": 0, "token": TOKEN, "channel": 0,
         "channels": 2, "page_size": 4096, "ram_pages": 100}
    f.update(over)
    return pk.HELLO_STRUCT.pack(*f.values())


@pytest.mark.parametrize(("over", "says"), [
    ({"magic": 0x47455420}, "magic 0x47455420 is not multifd's"),
    ({"version": 9}, "version 9 is not supported"),
    ({"flags": 1}, "flags 0x1 must be 0"),
    ({"channel": 2}, "channel 2 is not in [0, 1]"),
    ({"channels": 0}, "channels 0 is not in [1, 64]"),
    ({"channels": 65, "channel": 0}, "channels 65 is not in [1, 64]"),
    ({"page_size": 4095}, "page_size 4095 is not a power of two"),
    ({"page_size": 256}, "page_size 256 is not a power of two in [512,"),
    ({"ram_pages": 0}, "ram_pages 0"),
])
def test_hello_refusals(over: dict[str, int], says: str) -> None:
    with pytest.raises(PacketError) as e:
        pk.decode_hello(_hello_bytes(**over))
    assert says in str(e.value)
    assert isinstance(e.value, ValueError)


def test_hello_wrong_length_and_bad_token() -> None:
    with pytest.raises(PacketError, match="hello: 39 bytes, a hello is 40"):
        pk.decode_hello(_hello_bytes()[:-1])
    with pytest.raises(PacketError, match="token must be 16 bytes, got 3"):
        pk.encode_hello(Hello(b"abc", 0, 1, 4096, 1))


@pytest.mark.parametrize("ram_pages", [1000, (1 << 32) + 10])
def test_packet_round_trip(ram_pages: int) -> None:
    layout = pk.Layout(512, ram_pages)
    idx = np.array([0, 1, 2, 7, 9, 10, ram_pages - 1], dtype=np.int64)
    pages = np.arange(idx.size * 512, dtype=np.uint32).view(np.uint8)[: idx.size * 512]
    raw = pk.encode_packet(layout, Header(layout.index_flag, 1, 5, 2, idx.size), idx, pages.data)
    assert len(raw) == layout.block + pages.nbytes
    h = pk.decode_header(raw[: layout.block], layout)
    assert h == Header(layout.index_flag, 1, 5, 2, idx.size)
    got = pk.indices(raw[: layout.block], h, layout)
    pk.check_indices(got, ram_pages)
    assert got.tolist() == idx.tolist()
    assert raw[layout.block:] == pages.tobytes()


def test_packets_are_qemus_size() -> None:
    """QEMU's MULTIFD_PACKET_SIZE is 512 KiB: multifd_ram_page_count() = 128 pages of 4 KiB;
    every packet's block holds that many indices whatever it uses (QEMU's fixed packet_len)."""
    assert pk.PACKET_BYTES == 512 << 10
    assert pk.Layout(4096, 1000).packet_pages == 128
    assert pk.Layout(4096, 1000).block == pk.HEADER_SIZE + 128 * 4
    assert pk.Layout(4096, (1 << 32) + 1).block == pk.HEADER_SIZE + 128 * 8
    assert pk.Layout(2 << 20, 10).packet_pages == 1  # a page larger than a packet: one
    assert pk.Layout(2 << 20, 10).block == pk.HEADER_SIZE + pk.DEVICE_STATE_SIZE
    assert pk.DEVICE_STATE_MAX_BYTES == 1 << 20  # VFIO_MIG_DEFAULT_DATA_BUFFER_SIZE


def test_a_burst_is_its_blocks_then_its_pages() -> None:
    layout = pk.Layout(4096, 1000)
    packets = [np.arange(0, 128), np.arange(128, 256), np.array([300, 301, 900])]
    raw = pk.encode_burst(layout, Header(0, 1, 7, 3, 0), packets, b"p" * (259 * 4096))
    recs = np.frombuffer(raw, dtype=layout.block_dtype, count=3)
    first = pk.decode_header(raw[:layout.block], layout)
    assert first == Header(0, 1, 7, 3, 128, 2)
    assert pk.burst_ok(recs[1:], Header(0, 1, 8, 3, 0), layout)
    assert pk.burst_indices(recs, layout).tolist() == [*range(256), 300, 301, 900]
    assert len(raw) == 3 * layout.block + 259 * 4096
    starts, counts = pk.checked_page_runs(pk.burst_indices(recs, layout), 1000)
    assert starts.tolist() == [0, 300, 900] and counts.tolist() == [256, 2, 1]
    assert not pk.burst_ok(recs[1:], Header(0, 1, 9, 3, 0), layout)  # seq
    assert not pk.burst_ok(recs[1:], Header(0, 1, 8, 4, 0), layout)  # generation


def test_device_state_round_trip() -> None:
    layout = pk.Layout(4096, 1000)
    ds = pk.DeviceState(3, pk.DS_KIND_FINAL, 17, 12345, 1 << 20, False)
    data = bytes(range(256)) * 4
    raw = pk.encode_packet(layout, Header(pk.FLAG_DEVICE_STATE, 0, 9, 1, len(data)), ds=ds,
                           payload=data)
    h = pk.decode_header(raw[: layout.block], layout)
    assert h.is_device_state and h.count == len(data)
    assert pk.decode_device_state(raw[: layout.block], h) == ds
    assert ds.kind_name == "final"
    assert raw[layout.block:] == data


@pytest.mark.parametrize(("ds", "count", "says"), [
    (pk.DeviceState(0, 9, 0, 0, 1, False), 1, "kind 9 is not one of"),
    (pk.DeviceState(0, pk.DS_KIND_FINAL, 0, 0, 1, False), 0, "count 0 on a packet that is not"),
    (pk.DeviceState(0, pk.DS_KIND_FINAL, 0, 0, 0, False), 5, "image_bytes 0: required"),
])
def test_device_state_refusals(ds: pk.DeviceState, count: int, says: str) -> None:
    layout = pk.Layout(4096, 1000)
    raw = pk.encode_packet(layout, Header(pk.FLAG_DEVICE_STATE, 0, 0, 0, count), ds=ds)
    h = pk.decode_header(raw[: layout.block], layout)
    with pytest.raises(PacketError) as e:
        pk.decode_device_state(raw[: layout.block], h)
    assert says in str(e.value)


def test_index_width_follows_ram_size() -> None:
    assert pk.index_dtype_for(1 << 32) == (pk.INDEX32, 0)
    assert pk.index_dtype_for((1 << 32) + 1) == (pk.INDEX64, pk.FLAG_INDEX64)


def _header(**over: int) -> bytes:
    f = {"magic": pk.MAGIC, "flags": 0, "channel": 0, "seq": 0, "generation": 0,
         "count": 1, "more": 0}
    f.update(over)
    return pk.HEADER_STRUCT.pack(*f.values()) + bytes(pk.Layout(4096, 100).block - pk.HEADER_SIZE)


@pytest.mark.parametrize(("over", "says"), [
    ({"magic": 0}, "packet: magic 0x00000000 is not multifd's"),
    ({"flags": 1 << 7}, "flags 0x80 has unknown bits"),
    ({"flags": pk.FLAG_SYNC, "count": 0, "more": 2}, "more 2 on a packet that is not RAM"),
    ({"more": 64}, "more 64: a burst has at most 64 packets"),
    ({"count": 129}, "count 129 pages on a RAM packet: 1 to 128 (512 KiB"),
    ({"count": 0}, "count 0 pages on a RAM packet"),
    ({"flags": pk.FLAG_INDEX64}, "INDEX64 flag set, but a guest of 100 pages uses 32-bit"),
    ({"flags": pk.FLAG_SYNC, "count": 2}, "count 2 on a SYNC/KEEPALIVE/FIN packet"),
    ({"flags": pk.FLAG_SYNC | pk.FLAG_FIN, "count": 0}, "more than one of SYNC"),
    ({"flags": pk.FLAG_SYNC | pk.FLAG_DEVICE_STATE, "count": 0}, "more than one of SYNC"),
    ({"flags": pk.FLAG_DEVICE_STATE, "count": (1 << 20) + 1}, "exceeds 1048576 (1 MiB"),
])
def test_header_refusals(over: dict[str, int], says: str) -> None:
    with pytest.raises(PacketError) as e:
        pk.decode_header(_header(**over), pk.Layout(4096, 100))
    assert says in str(e.value)


def test_header_wrong_length() -> None:
    with pytest.raises(PacketError, match="31 header bytes, a header is 32"):
        pk.decode_header(_header()[:31], pk.Layout(4096, 100))


def test_control_packets_decode() -> None:
    for flag in (pk.FLAG_SYNC, pk.FLAG_KEEPALIVE, pk.FLAG_FIN):
        h = pk.decode_header(_header(flags=flag, count=0, generation=4), pk.Layout(4096, 100))
        assert h.flags == flag and h.count == 0 and h.generation == 4


@pytest.mark.parametrize(("idx", "says"), [
    ([3, 2], "strictly increasing"),
    ([1, 1], "strictly increasing"),
    ([5, 100], "page index 100 is past the end of RAM (allowed 0..99)"),
    ([100], "page index 100 is past the end of RAM"),
])
def test_index_refusals(idx: list[int], says: str) -> None:
    with pytest.raises(PacketError) as e:
        pk.check_indices(np.array(idx, dtype=pk.INDEX32), 100)
    assert says in str(e.value)


def test_page_runs() -> None:
    starts, counts = pk.page_runs(np.array([4, 5, 6, 9, 11, 12], dtype=pk.INDEX32))
    assert starts.tolist() == [4, 9, 11] and counts.tolist() == [3, 1, 2]
    starts, counts = pk.page_runs(np.arange(10, 20, dtype=np.int64))
    assert starts.tolist() == [10] and counts.tolist() == [10]
    starts, counts = pk.page_runs(np.empty(0, dtype=np.int64))
    assert starts.size == 0 and counts.size == 0
