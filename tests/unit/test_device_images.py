"""The source device's data stream is a sequence of images whose lengths are known when
they are made (mlx5's image header): initial, middle images of dirty state, final."""

from __future__ import annotations

import numpy as np

from migbed.core.device import Chunk, SourceDevice, TargetDevice, VfioState
from migbed.core.scenario import DeviceConfig

S = VfioState
BLOCK = 4096


def _dev(initial: int = 64 * BLOCK, stop: int = 10_000) -> SourceDevice:
    d = SourceDevice(DeviceConfig("vf0", initial, stop, block_size=BLOCK), seed=9)
    d.set_state(S.PRE_COPY)
    return d


def images(chunks: list[Chunk]) -> list[tuple[str, int, int]]:
    """(kind, image_bytes, bytes received) per image, an image ending at its length."""
    out: list[tuple[str, int, int]] = []
    for ch in chunks:
        if out and out[-1][2] < out[-1][1]:
            kind, length, got = out[-1]
            assert (ch.kind, ch.image_bytes) == (kind, length), "a chunk left its open image"
            out[-1] = (kind, length, got + len(ch.data))
        else:
            out.append((ch.kind, ch.image_bytes, len(ch.data)))
        assert out[-1][2] <= out[-1][1], "an image longer than its header says"
    return out


def drain(d: SourceDevice, step: int) -> list[Chunk]:
    out: list[Chunk] = []
    while chunks := d.read(step):
        out += chunks
    return out


def test_the_initial_image_carries_its_size_in_every_chunk() -> None:
    d = _dev()
    chunks = drain(d, 10_000)
    assert len(chunks) > 10
    assert {(c.kind, c.image_bytes) for c in chunks} == {("initial", 64 * BLOCK)}


def test_a_middle_image_is_the_dirty_set_when_it_is_saved_read_over_many_reads() -> None:
    d = _dev()
    drain(d, 1 << 20)
    d.dirty_blocks(np.arange(10))
    first = d.read(3 * BLOCK)  # the image of 10 blocks is saved now, 3 of them go out
    assert [(c.kind, c.image_bytes) for c in first] == [("middle", 10 * BLOCK)] * 3
    assert d.precopy_info() == (0, 7 * BLOCK)  # the image's unread rest is dirty data
    d.dirty_blocks(np.array([1, 5, 20]))  # 1: already sent; 5: not yet; 20: not in it
    assert d.precopy_info() == (0, 7 * BLOCK + 2 * BLOCK)
    rest = drain(d, 4 * BLOCK)
    got = images(first + rest)
    assert got == [("middle", 10 * BLOCK, 10 * BLOCK), ("middle", 2 * BLOCK, 2 * BLOCK)]
    assert sorted(c.offset // BLOCK for c in rest[-2:]) == [1, 20]
    assert d.precopy_info() == (0, 0)


def test_stop_copy_reads_the_open_image_to_its_end_then_the_final_image() -> None:
    src = _dev(initial=64 * BLOCK - 100)  # the last block is short
    dst = TargetDevice("vf0", src.cfg.initial_bytes, src.cfg.stop_copy_size)
    dst.fsm.set_state(S.RESUMING)
    chunks = drain(src, 1 << 20)
    src.dirty_blocks(np.array([2, 3, 63]))
    chunks += src.read(BLOCK)  # one block of the middle image, then the stop
    # 2 (sent with the middle image) and 40 (sent with the initial one) go in the final
    # image; 3 is still unread in the middle image and goes out with it.
    src.dirty_blocks(np.array([2, 3, 40]))
    src.set_state(S.PRE_COPY_P2P)
    src.begin_stop_copy(0.0)  # vm_stop: to STOP_COPY, its save started
    src.save_wait(0.0)  # (no save time: readable at once)
    middle = 3 * BLOCK - 100
    final = 2 * BLOCK + 10_000
    assert src.stop_copy_size() == (middle - BLOCK) + final
    chunks += drain(src, 5000)
    assert images(chunks) == [("initial", 64 * BLOCK - 100, 64 * BLOCK - 100),
                              ("middle", middle, middle), ("final", final, final)]
    for c in chunks:
        dst.write(c.offset, c.data)
    src.set_state(S.STOP)
    assert dst.digest() == src.digest()


def test_a_stop_inside_the_initial_image_keeps_it_one_image() -> None:
    src = _dev()
    chunks = src.read(5 * BLOCK + 7)
    src.dirty_blocks(np.array([0, 30]))  # 0 was sent, 30 goes with the initial image
    src.begin_stop_copy(0.0)  # vm_stop: to STOP_COPY, its save started
    src.save_wait(0.0)  # (no save time: readable at once)
    chunks += drain(src, 1 << 20)
    assert images(chunks) == [("initial", 64 * BLOCK, 64 * BLOCK),
                              ("final", BLOCK + 10_000, BLOCK + 10_000)]


def test_random_runs_tile_the_stream_with_whole_images_and_verify() -> None:
    middles = 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        src = _dev(initial=int(rng.integers(1, 80)) * BLOCK - int(rng.integers(0, BLOCK)))
        dst = TargetDevice("vf0", src.cfg.initial_bytes, src.cfg.stop_copy_size)
        dst.fsm.set_state(S.RESUMING)
        chunks: list[Chunk] = []
        for _ in range(int(rng.integers(1, 40))):
            chunks += src.read(int(rng.integers(1, 12 * BLOCK)))
            src.dirty_blocks(rng.integers(0, src.blocks, size=int(rng.integers(0, 8))))
        src.begin_stop_copy(0.0)  # vm_stop: to STOP_COPY, its save started
        src.save_wait(0.0)  # (no save time: readable at once)
        chunks += drain(src, int(rng.integers(1, 12 * BLOCK)))
        got = images(chunks)
        assert all(n == length for _, length, n in got), (seed, got)
        assert got[-1][0] == "final" and [k for k, _, _ in got].count("final") == 1
        middles += sum(k == "middle" for k, _, _ in got)
        for c in chunks:
            dst.write(c.offset, c.data)
        src.set_state(S.STOP)
        assert dst.digest() == src.digest(), seed
    assert middles >= 20  # the runs did make middle images
