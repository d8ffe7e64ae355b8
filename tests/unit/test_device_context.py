"""The stop-copy context: deterministic in (seed, generation), stamped in place at STOP_COPY."""

import numpy as np

from migbed.core.device import SourceDevice, TargetDevice, VfioState, context_bytes
from migbed.core.scenario import DeviceConfig


def _cfg(stop_copy: int = 300_000) -> DeviceConfig:
    return DeviceConfig("vf0", initial_bytes=256 << 10, stop_copy_size=stop_copy,
                        block_size=64 << 10)


def test_context_is_deterministic_and_depends_on_the_generation() -> None:
    assert context_bytes(100_000, 7, 3) == context_bytes(100_000, 7, 3)
    assert context_bytes(100_000, 7, 3) != context_bytes(100_000, 7, 4)
    assert context_bytes(100_000, 7, 3) != context_bytes(100_000, 8, 3)
    assert len(context_bytes(5, 1, 2**70)) == 5 and context_bytes(0, 1, 1) == b""


def _stop_copy_stream(dev: SourceDevice) -> bytes:
    dev.set_state(VfioState.PRE_COPY)
    while dev.read(1 << 20):
        pass
    dev.dirty_blocks(np.array([1, 2]))
    dev.begin_stop_copy(0.0)  # vm_stop: to STOP_COPY, its save started
    dev.save_wait(0.0)  # (no save time: readable at once)
    out = b""
    while chunks := dev.read(1 << 20):
        out += b"".join(c.data for c in chunks if c.offset >= dev.cfg.initial_bytes)
    return out


def test_stop_copy_streams_exactly_context_bytes_and_target_digest_matches() -> None:
    dev = SourceDevice(_cfg(), seed=11)
    dev.set_state(VfioState.PRE_COPY)
    dev.dirty_blocks(np.array([0, 3]))  # the context's generation counts dirtying events
    gen = 1
    target = TargetDevice("vf0", dev.cfg.initial_bytes, dev.cfg.stop_copy_size)
    target.fsm.set_state(VfioState.RESUMING)
    for c in dev.read(1 << 30):
        target.write(c.offset, c.data)
    dev.dirty_blocks(np.array([2]))
    gen += 1
    dev.begin_stop_copy(0.0)  # vm_stop: to STOP_COPY, its save started
    dev.save_wait(0.0)  # (no save time: readable at once)
    context = b""
    while chunks := dev.read(1 << 20):
        for c in chunks:
            target.write(c.offset, c.data)
            if c.offset >= dev.cfg.initial_bytes:
                context += c.data
    assert context == context_bytes(dev.cfg.stop_copy_size, 11, gen)
    assert target.digest() == dev.digest()


def test_a_second_stop_copy_restamps_the_context() -> None:
    a = SourceDevice(_cfg(), seed=5)
    b = SourceDevice(_cfg(), seed=5)
    b.set_state(VfioState.PRE_COPY)
    b.dirty_blocks(np.array([0]))
    b.set_state(VfioState.RUNNING)
    assert _stop_copy_stream(a) != _stop_copy_stream(b)  # one more dirtying event in b
