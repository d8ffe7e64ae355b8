"""The VFIO uAPI v2 state machine: every direct arc, every combination, every refusal."""

import itertools

import numpy as np
import pytest

from migbed.core.device import (
    ARCS,
    PRE_COPY_STATES,
    DeviceError,
    InvalidTransition,
    SourceDevice,
    StateMachine,
    TargetDevice,
    VfioState,
    transition_path,
)
from migbed.core.scenario import DeviceConfig

S = VfioState
ALL = list(S)


@pytest.mark.parametrize(("a", "b"), list(itertools.product(ALL, ALL)))
def test_direct_arc_allowed_exactly_for_the_uapi_arcs(a: VfioState, b: VfioState) -> None:
    fsm = StateMachine(a)
    if (a, b) in ARCS:
        fsm.arc(b)
        assert fsm.state == b
    else:
        with pytest.raises(InvalidTransition):
            fsm.arc(b)
        assert fsm.state == a


def test_arc_set_is_the_kernels() -> None:
    # linux/vfio.h, with P2P and PRE_COPY: 15 arcs.
    assert len(ARCS) == 15
    assert (S.STOP_COPY, S.PRE_COPY) not in ARCS
    assert (S.PRE_COPY_P2P, S.STOP_COPY) in ARCS
    assert (S.RESUMING, S.STOP) in ARCS


@pytest.mark.parametrize(("a", "b"), list(itertools.product(ALL, ALL)))
def test_combination_walks_only_direct_arcs_or_is_refused(a: VfioState, b: VfioState) -> None:
    forbidden = (
        (S.ERROR in (a, b) and a != b)
        or (a in (S.STOP_COPY, S.RESUMING) and b in PRE_COPY_STATES)
    )
    if forbidden:
        with pytest.raises(InvalidTransition):
            transition_path(a, b)
        return
    path = transition_path(a, b)
    cur = a
    for step in path:
        assert (cur, step) in ARCS
        cur = step
    assert cur == b
    # Saving/resuming states are never passed through on the way elsewhere, except
    # PRE_COPY_P2P between pre-copy states and STOP_COPY (the kernel's own walk).
    for interior in path[:-1]:
        assert interior not in (S.STOP_COPY, S.RESUMING, S.ERROR)
        if interior in PRE_COPY_STATES:
            assert a in PRE_COPY_STATES


def test_source_and_destination_arcs_of_a_migration() -> None:
    src = StateMachine(S.RUNNING)
    for st in (S.PRE_COPY, S.PRE_COPY_P2P, S.STOP_COPY, S.STOP):
        src.arc(st)
    dst = StateMachine(S.STOP)
    for st in (S.RESUMING, S.STOP, S.RUNNING_P2P, S.RUNNING):
        dst.arc(st)


def _dev(initial: int = 1 << 20, stop: int = 4096, block: int = 64 << 10) -> SourceDevice:
    return SourceDevice(DeviceConfig("vf0", initial, stop, block_size=block), seed=5)


def test_precopy_info_only_in_precopy_states() -> None:
    d = _dev()
    with pytest.raises(DeviceError):
        d.precopy_info()
    d.set_state(S.PRE_COPY)
    assert d.precopy_info() == (1 << 20, 0)


def test_initial_bytes_only_decrease_and_dirty_bytes_grow() -> None:
    d = _dev()
    d.set_state(S.PRE_COPY)
    seen = []
    while d.precopy_info()[0] > 0:
        d.read(200_000)
        seen.append(d.precopy_info()[0])
        # The device runs: blocks it has already sent become dirty.
        d.dirty_blocks(np.array([0, 1]))
    assert seen == sorted(seen, reverse=True) and seen[-1] == 0
    init, dirty = d.precopy_info()
    assert init == 0 and dirty == 2 * (64 << 10)
    # A read at a temporary end of data returns nothing (ENOMSG) but stays in PRE_COPY.
    d.read(1 << 20)
    assert d.read(1 << 20) == []
    assert d.state == S.PRE_COPY


def test_stop_copy_stream_carries_everything_and_digests_match() -> None:
    src = _dev(initial=300_000, stop=10_000, block=4096)
    src.set_state(S.PRE_COPY)
    dst = TargetDevice("vf0", 300_000, 10_000)
    dst.fsm.set_state(S.RESUMING)
    for ch in src.read(100_000):
        dst.write(ch.offset, ch.data)
    src.dirty_blocks(np.array([0, 3, 5]))
    src.begin_stop_copy(0.0)  # vm_stop: to STOP_COPY, its save started
    src.save_wait(0.0)  # (no save time: readable at once)
    assert src.stop_copy_size() == (300_000 - 100_000) + 3 * 4096 + 10_000
    kinds: dict[tuple[str, int], int] = {}
    while chunks := src.read(64 << 10):
        for ch in chunks:
            kinds[ch.kind, ch.image_bytes] = kinds.get((ch.kind, ch.image_bytes), 0) + len(ch.data)
            dst.write(ch.offset, ch.data)
    # The initial image's rest keeps its image; the final image is what changed plus the
    # context, its length fixed at the stop.
    assert kinds == {("initial", 300_000): 200_000, ("final", 3 * 4096 + 10_000): 3 * 4096 + 10_000}
    src.set_state(S.STOP)
    dst.fsm.set_state(S.RUNNING)
    assert src.digest() == dst.digest()


def test_stopped_device_does_not_dirty() -> None:
    d = _dev()
    d.set_state(S.PRE_COPY)
    d.read(1 << 20)
    d.begin_stop_copy(0.0)  # vm_stop: to STOP_COPY, its save started
    d.save_wait(0.0)  # (no save time: readable at once)
    d.dirty_blocks(np.array([0]))
    assert d.stop_copy_size() == 4096


def test_target_refuses_writes_outside_resuming_or_bounds() -> None:
    t = TargetDevice("vf0", 1000, 10)
    with pytest.raises(DeviceError):
        t.write(0, b"x")
    t.fsm.set_state(S.RESUMING)
    with pytest.raises(DeviceError):
        t.write(1005, b"x" * 6)
    t.write(1005, b"x" * 5)
