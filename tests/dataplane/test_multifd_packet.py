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
    dtype, flag = pk.index_dtype_for(ram_pages)
    idx = np.array([0, 1, 2, 7, 9, 10, ram_pages - 1], dtype=np.int64)
    pages = np.arange(idx.size * 512, dtype=np.uint32).view(np.uint8)[: idx.size * 512]
    raw = pk.encode_packet(Header(flag, 1, 5, 2, idx.size), idx, pages.data)
    h = pk.decode_header(raw[: pk.HEADER_SIZE], 512)
    assert h == Header(flag, 1, 5, 2, idx.size)
    assert h.index_dtype == dtype
    got = np.frombuffer(raw[pk.HEADER_SIZE: pk.HEADER_SIZE + h.index_bytes], dtype=h.index_dtype)
    pk.check_indices(got, ram_pages)
    assert got.tolist() == idx.tolist()
    assert raw[pk.HEADER_SIZE + h.index_bytes:] == pages.tobytes()


def test_index_width_follows_ram_size() -> None:
    assert pk.index_dtype_for(1 << 32) == (pk.INDEX32, 0)
    assert pk.index_dtype_for((1 << 32) + 1) == (pk.INDEX64, pk.FLAG_INDEX64)


def _header(**over: int) -> bytes:
    f = {"magic": pk.MAGIC, "flags": 0, "channel": 0, "seq": 0, "generation": 0,
         "page_count": 1, "reserved": 0}
    f.update(over)
    return pk.HEADER_STRUCT.pack(*f.values())


@pytest.mark.parametrize(("over", "says"), [
    ({"magic": 0}, "packet: magic 0x00000000 is not multifd's"),
    ({"flags": 1 << 7}, "flags 0x80 has unknown bits"),
    ({"reserved": 3}, "reserved field is 3, must be 0"),
    ({"page_count": 4097}, "page_count 4097 exceeds 4096"),
    ({"page_count": 0}, "page_count 0 on a data packet"),
    ({"flags": pk.FLAG_SYNC, "page_count": 2}, "page_count 2 on a SYNC/KEEPALIVE/FIN packet"),
    ({"flags": pk.FLAG_SYNC | pk.FLAG_FIN, "page_count": 0}, "more than one of SYNC"),
])
def test_header_refusals(over: dict[str, int], says: str) -> None:
    with pytest.raises(PacketError) as e:
        pk.decode_header(_header(**over), 4096)
    assert says in str(e.value)


def test_header_wrong_length() -> None:
    with pytest.raises(PacketError, match="31 header bytes, a header is 32"):
        pk.decode_header(_header()[:-1], 4096)


def test_control_packets_decode() -> None:
    for flag in (pk.FLAG_SYNC, pk.FLAG_KEEPALIVE, pk.FLAG_FIN):
        h = pk.decode_header(_header(flags=flag, page_count=0, generation=4), 4096)
        assert h.flags == flag and h.page_count == 0 and h.generation == 4


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
