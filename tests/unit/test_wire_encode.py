"""The hand-encoded RAM message is exactly what protobuf would have produced."""

import numpy as np
import pytest

from migbed.core.guest import GuestMemory
from migbed.wire import migration_pb2 as pb
from migbed.wire.encode import (
    encode_device_data,
    encode_ram_pages,
    serialize_source_message,
    varint,
)


@pytest.mark.parametrize("pages", [[0], [1, 2, 3], [5, 900, 70_000, 2**32 - 1],
                                   list(range(1000, 1256))])
@pytest.mark.parametrize("page_size", [1, 4096])
def test_encoding_is_byte_identical_to_protobuf(pages: list[int], page_size: int) -> None:
    idx = np.array(pages, dtype=np.int64)
    data = bytes(range(256)) * (len(pages) * page_size // 256) or b"\x07" * len(pages) * page_size
    mine = encode_ram_pages(idx, memoryview(data))
    theirs = pb.SourceMessage(ram=pb.RamPages(pages=pages, data=data)).SerializeToString()
    assert mine == theirs
    back = pb.SourceMessage.FromString(mine)
    assert list(back.ram.pages) == pages and back.ram.data == data


def test_varint_matches_protobuf() -> None:
    for n in (1, 127, 128, 300, 2**21, 2**35 + 5):
        assert b"\x08" + varint(n) == pb.Ping(seq=n).SerializeToString()  # tag 0x08, varint
    assert varint(0) == b"\x00"


def test_serializer_passes_bytes_and_serialises_messages() -> None:
    m = pb.SourceMessage(ping=pb.Ping(seq=3))
    assert serialize_source_message(m) == m.SerializeToString()
    assert serialize_source_message(b"raw") == b"raw"


def test_empty_message_refused() -> None:
    with pytest.raises(ValueError):
        encode_ram_pages(np.array([], dtype=np.int64), b"")


@pytest.mark.parametrize("idx", [[4, 5, 6, 7], [9], [1, 3, 8], [0, 2, 1, 3], [6, 5]])
def test_page_bytes_and_store_pages_agree_with_gathering(idx: list[int]) -> None:
    src = GuestMemory(1 << 20, 4096, seed=3)
    src.write_pages(np.array([1, 2, 6, 6, 8]))
    i = np.array(idx, dtype=np.int64)
    assert bytes(src.page_bytes(i)) == src.read_pages(i)
    dst = GuestMemory(1 << 20, 4096, seed=3, fill=False)
    dst.store_pages(i, src.page_bytes(i))
    assert np.array_equal(dst.ram[i], src.ram[i])
    others = np.setdiff1d(np.arange(src.pages), i)
    assert not dst.ram[others].any()


@pytest.mark.parametrize("device,kind,seq,offset", [(0, 1, 0, 0), (3, 2, 17, 300_000_000),
                                                    (15, 3, 2**40, 2**34 + 1)])
@pytest.mark.parametrize("size", [1, 65536, 1 << 20])
@pytest.mark.parametrize("image_bytes", [0, 1, 1 << 20, 300_000_000, 2**64 - 1])
def test_device_data_encoding_is_byte_identical(device: int, kind: int, seq: int, offset: int,
                                                size: int, image_bytes: int) -> None:
    data = bytes(range(256)) * (size // 256) or b"\x09" * size
    mine = encode_device_data(device, kind, seq, offset, data, image_bytes)
    theirs = pb.SourceMessage(device_data=pb.DeviceData(
        device=device, kind=kind, seq=seq, offset=offset, data=data,
        image_bytes=image_bytes)).SerializeToString()
    assert mine == theirs
    back = pb.SourceMessage.FromString(mine).device_data
    assert (back.device, back.kind, back.seq, back.offset, back.data, back.image_bytes) == (
        device, kind, seq, offset, data, image_bytes)


def test_image_bytes_is_written_after_the_data() -> None:
    """Field 6 follows field 5 (data) on the wire, as protobuf orders fields by number: the
    last bytes are image_bytes' tag (6 << 3 | varint) and its varint."""
    mine = encode_device_data(0, 2, 0, 0, b"\x01\x02", 300)
    assert mine.endswith(b"\x01\x02" + b"\x30" + varint(300))


def test_empty_device_data_refused() -> None:
    with pytest.raises(ValueError):
        encode_device_data(0, 1, 0, 0, b"", 1)
