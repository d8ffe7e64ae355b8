"""A simulated VFIO device following the migration uAPI v2 (linux/vfio.h).

States and direct arcs are the kernel's, for a device with the P2P and PRE_COPY features
(as mlx5 has). A request for a non-adjacent state walks the arcs the way the kernel's
vfio_mig_get_next_state() does; a request that no walk satisfies (STOP_COPY -> PRE_COPY,
anything into or out of ERROR, RESUMING -> PRE_COPY ...) raises InvalidTransition.

The device's state is real bytes: a state buffer (what the initial image carries) with
dirty tracking per block, and a context captured on entering STOP_COPY (what only the
stop-copy image carries). The source reads them through one data stream, as the uAPI
says: initial bytes first, then dirty blocks (VFIO_MIG_GET_PRECOPY_INFO counts both), and
in STOP_COPY whatever is left plus the context.

How the device answers follows its driver profile (migbed/core/drivers.py, scenario key
`driver`): what MIG_DATA_SIZE reports (`stop_copy_size`), when a new pre-copy image is cut
(inside `precopy_info`, as mlx5vf_precopy_ioctl does, or on a read), and when its
stop-copy save runs and is readable.

The stop-copy read/readiness API (the main channel, services/source/devices.py, and the
multifd device-state path, services/source/device_state.py, both use it):

    dev.begin_stop_copy(now) -> float   at vm_stop, for every device in turn. Returns the
                                        seconds the caller must block now (a synchronous
                                        save done inside the arc to STOP_COPY); 0 otherwise.
    dev.save_wait(now) -> float         seconds until the final image is readable (0 once it
                                        is). Call it before reading in stop-copy; it starts a
                                        save that runs at the device's turn ("first-read",
                                        and drivers without PRE_COPY, whose STOP -> STOP_COPY
                                        arc QEMU takes in vfio_save_complete_precopy).
    dev.read(max_bytes) -> [Chunk]      what is readable now: earlier images' unread rest at
                                        once, the final image only once save_wait() is 0.
    dev.stop_copy_done                  True once everything, the context included, is read.
    dev.save_times                      (started, ready) monotonic seconds, for the record.

So a reader does:  while not dev.stop_copy_done: sleep(dev.save_wait(now)); send(dev.read(n)).
Times are time.monotonic() seconds passed in by the caller (tests pass their own).
"""

from __future__ import annotations

import enum
import hashlib
import threading
import time
from dataclasses import dataclass

import numpy as np

from migbed.core import drivers as drv
from migbed.core.scenario import DeviceConfig


class VfioState(enum.Enum):
    ERROR = 0
    STOP = 1
    RUNNING = 2
    STOP_COPY = 3
    RESUMING = 4
    RUNNING_P2P = 5
    PRE_COPY = 6
    PRE_COPY_P2P = 7


S = VfioState
# The direct arcs of the uAPI v2 FSM (P2P and PRE_COPY supported).
ARCS: frozenset[tuple[VfioState, VfioState]] = frozenset(
    {
        (S.STOP, S.RUNNING_P2P),
        (S.STOP, S.STOP_COPY),
        (S.STOP, S.RESUMING),
        (S.RUNNING, S.RUNNING_P2P),
        (S.RUNNING, S.PRE_COPY),
        (S.RUNNING_P2P, S.RUNNING),
        (S.RUNNING_P2P, S.STOP),
        (S.RUNNING_P2P, S.PRE_COPY_P2P),
        (S.PRE_COPY, S.RUNNING),
        (S.PRE_COPY, S.PRE_COPY_P2P),
        (S.PRE_COPY_P2P, S.PRE_COPY),
        (S.PRE_COPY_P2P, S.RUNNING_P2P),
        (S.PRE_COPY_P2P, S.STOP_COPY),
        (S.STOP_COPY, S.STOP),
        (S.RESUMING, S.STOP),
    }
)
PRE_COPY_STATES = frozenset({S.PRE_COPY, S.PRE_COPY_P2P})
RUNNING_STATES = frozenset({S.RUNNING, S.PRE_COPY})  # the device makes progress (dirties)


class InvalidTransition(ValueError):
    pass


class DeviceError(RuntimeError):
    """An operation not allowed in the device's current state (the ioctl's errno)."""


# The kernel's vfio_mig_get_next_state() table: for a requested (current, target) pair,
# the next direct arc to take. A combination transition is the walk of these steps.
# Pairs absent here (into/out of ERROR, STOP_COPY or RESUMING -> PRE_COPY*) are invalid.
_NEXT: dict[VfioState, dict[VfioState, VfioState]] = {
    S.STOP: {S.RUNNING: S.RUNNING_P2P, S.PRE_COPY: S.RUNNING_P2P,
             S.PRE_COPY_P2P: S.RUNNING_P2P, S.STOP_COPY: S.STOP_COPY,
             S.RESUMING: S.RESUMING, S.RUNNING_P2P: S.RUNNING_P2P},
    S.RUNNING: {S.STOP: S.RUNNING_P2P, S.PRE_COPY: S.PRE_COPY,
                S.PRE_COPY_P2P: S.RUNNING_P2P, S.STOP_COPY: S.RUNNING_P2P,
                S.RESUMING: S.RUNNING_P2P, S.RUNNING_P2P: S.RUNNING_P2P},
    S.PRE_COPY: {S.STOP: S.RUNNING, S.RUNNING: S.RUNNING, S.PRE_COPY_P2P: S.PRE_COPY_P2P,
                 S.STOP_COPY: S.PRE_COPY_P2P, S.RESUMING: S.RUNNING,
                 S.RUNNING_P2P: S.RUNNING},
    S.PRE_COPY_P2P: {S.STOP: S.RUNNING_P2P, S.RUNNING: S.RUNNING_P2P,
                     S.PRE_COPY: S.PRE_COPY, S.STOP_COPY: S.STOP_COPY,
                     S.RESUMING: S.RUNNING_P2P, S.RUNNING_P2P: S.RUNNING_P2P},
    S.STOP_COPY: {S.STOP: S.STOP, S.RUNNING: S.STOP, S.RESUMING: S.STOP,
                  S.RUNNING_P2P: S.STOP},
    S.RESUMING: {S.STOP: S.STOP, S.RUNNING: S.STOP, S.STOP_COPY: S.STOP,
                 S.RUNNING_P2P: S.STOP},
    S.RUNNING_P2P: {S.STOP: S.STOP, S.RUNNING: S.RUNNING, S.PRE_COPY: S.RUNNING,
                    S.PRE_COPY_P2P: S.PRE_COPY_P2P, S.STOP_COPY: S.STOP,
                    S.RESUMING: S.STOP},
    S.ERROR: {},
}


def transition_path(src: VfioState, dst: VfioState) -> list[VfioState]:
    """The direct arcs walked to get from src to dst, or InvalidTransition."""
    path: list[VfioState] = []
    cur = src
    while cur != dst:
        step = _NEXT[cur].get(dst)
        if step is None:
            raise InvalidTransition(
                f"{src.name} -> {dst.name} is not a valid VFIO migration transition"
            )
        path.append(step)
        cur = step
    return path


class StateMachine:
    """Holds a device state; only direct arcs are taken (set_state walks them)."""

    def __init__(self, initial: VfioState) -> None:
        self.state = initial
        self.history: list[VfioState] = [initial]

    def arc(self, dst: VfioState) -> None:
        if (self.state, dst) not in ARCS:
            raise InvalidTransition(f"{self.state.name} -> {dst.name} is not a direct arc")
        self.state = dst
        self.history.append(dst)

    def set_state(self, dst: VfioState) -> None:
        for step in transition_path(self.state, dst):
            self.arc(step)


def _block_fill(blocks: np.ndarray, versions: np.ndarray, seed: int) -> np.ndarray:
    return ((blocks * 29 + versions * 7 + seed) & 0xFF).astype(np.uint8)


CONTEXT_STAMP_BYTES = 8  # the generation, little-endian, at the start of the context


def context_body(size: int, seed: int) -> bytearray:
    """The random body of a device's context: made once, when the device is created."""
    return bytearray(np.random.default_rng([seed, 0xC0]).bytes(size))


def stamp_context(body: bytearray, generation: int) -> None:
    """Write the generation into the context in place (a few bytes: no copy of the body)."""
    n = min(CONTEXT_STAMP_BYTES, len(body))
    body[:n] = (generation % 2**64).to_bytes(CONTEXT_STAMP_BYTES, "little")[:n]


def context_bytes(size: int, seed: int, generation: int) -> bytes:
    """The device context captured at STOP_COPY: deterministic in (seed, generation).

    A fixed random body stamped with the generation. Only the stamp is made at
    STOP_COPY: generating the body there (20 MB of random numbers, 50-400 ms here) put
    time into every downtime that no scenario knob describes."""
    body = context_body(size, seed)
    stamp_context(body, generation)
    return bytes(body)


@dataclass(frozen=True)
class Chunk:
    kind: str  # "initial" | "middle" | "final"
    offset: int  # state buffer offset; >= initial_bytes means context
    data: bytes
    image_bytes: int  # the length of the image this chunk belongs to (its header's)


@dataclass
class MiddleImage:
    """A pre-copy image of dirty state, saved whole once the previous image was read (mlx5:
    an incremental SAVE_VHCA_STATE); its length is fixed when it is saved, and it is read
    out block by block over as many reads as it takes."""

    blocks: np.ndarray  # the blocks dirty when it was saved, ascending
    length: int  # bytes: what its header says
    next: int = 0  # index into blocks of the next one to read

    @property
    def done(self) -> bool:
        return self.next >= len(self.blocks)


class SourceDevice:
    """The source side: runs, dirties its state, and is read through the migration stream.

    The data stream is a sequence of images, each with a length known when it is made:
    the initial image (initial_bytes), middle images of dirty blocks in pre-copy, and in
    STOP_COPY whatever image was open, then the final image (the blocks dirty at the stop
    and the context). Bytes are read at read time: a block dirtied before an image reaches
    it goes out with that image, as with the initial image.

    Driver semantics (migbed/core/drivers.py) decide MIG_DATA_SIZE, when a middle image is
    cut and when the final image becomes readable; see the module docstring for the
    stop-copy read API."""

    def __init__(self, cfg: DeviceConfig, seed: int, time_dilation: float = 1.0) -> None:
        self.cfg = cfg
        self.seed = seed
        self.driver = drv.driver_profile(cfg.driver)
        # The driver's own period (virtio's __ratelimit: 1 s) is emulated: a run dilated K
        # times (core/dilation.py) stretches it as it stretches the scenario's times.
        self.query_interval_s = self.driver.precopy_query_interval_s * time_dilation
        self.fsm = StateMachine(S.RUNNING)
        self.block = cfg.block_size
        self.blocks = -(-cfg.initial_bytes // self.block) if cfg.initial_bytes else 0
        self.buffer = np.zeros(self.blocks * self.block, dtype=np.uint8)
        self._blocks2d = self.buffer.reshape(self.blocks, self.block) if self.blocks else None
        self._versions = np.zeros(self.blocks, dtype=np.uint64)
        self._dirty = np.zeros(self.blocks, dtype=bool)
        self._in_image = np.zeros(self.blocks, dtype=bool)  # unread blocks of the open image
        self._lock = threading.Lock()
        self._initial_cursor = 0  # next initial byte to read
        self._image: MiddleImage | None = None  # the middle image being read
        self._writes = 0  # dirtying events: the context depends on it
        self._context = bytearray()  # valid from STOP_COPY on
        self._context_body = context_body(cfg.stop_copy_size, seed)  # not inside a downtime
        self._context_cursor = 0
        self._final_bytes = 0  # the final image's length, fixed at STOP_COPY
        self.images_cut = 0  # middle images saved in pre-copy (the driver's SAVE commands)
        self._save_started: float | None = None  # the stop-copy save (monotonic s)
        self._save_ready: float | None = None  # its data readable from then on
        self._last_query: float | None = None  # the driver last asked for its increment
        if self.blocks:
            idx = np.arange(self.blocks, dtype=np.uint64)
            self._blocks2d[:] = _block_fill(idx, self._versions, seed)[:, None]  # type: ignore[index]

    @property
    def state(self) -> VfioState:
        return self.fsm.state

    def set_state(self, dst: VfioState) -> None:
        with self._lock:
            was_precopy = self.fsm.state in PRE_COPY_STATES
            self.fsm.set_state(dst)
            if dst == S.STOP_COPY:
                self._enter_stop_copy(was_precopy)

    def _enter_stop_copy(self, was_precopy: bool) -> None:
        if not self.driver.incremental:
            self._dirty[:] = True  # the final image is the whole state again (virtio)
        if not was_precopy:
            # No pre-copy happened (STOP -> STOP_COPY): the whole state buffer goes out in
            # the final image, as a driver saves its full state on that arc.
            self._initial_cursor = self.cfg.initial_bytes
            self._dirty[:] = True
            self._in_image[:] = False
            self._image = None
        stamp_context(self._context_body, self._writes)  # == context_bytes(...)
        self._context = self._context_body
        self._context_cursor = 0
        # The device no longer changes: the final image's length is known now.
        self._final_bytes = self._blocks_bytes(np.flatnonzero(self._dirty)) + len(self._context)

    # ------------------------------------------------------------ the stop-copy save

    def begin_stop_copy(self, now: float) -> float:
        """vm_stop (QEMU's vfio_vmstate_change): a device in PRE_COPY goes to STOP_COPY now,
        any other to STOP (its STOP_COPY comes at its turn, in save_wait). Returns the
        seconds the caller must block (a synchronous save inside the arc)."""
        if self.state not in PRE_COPY_STATES:
            self.set_state(S.STOP)
            return 0.0
        self.set_state(S.STOP_COPY)
        return self._start_save(now, at_turn=False)

    def save_wait(self, now: float) -> float:
        """Seconds until the final image is readable; starts a save that runs at the
        device's turn (generic's first read; a device that skipped PRE_COPY enters
        STOP_COPY here, as QEMU's vfio_save_complete_precopy does)."""
        if self.state == S.STOP:
            self.set_state(S.STOP_COPY)
            return self._start_save(now, at_turn=True)
        if self._save_started is None:
            return self._start_save(now, at_turn=True)
        assert self._save_ready is not None
        return max(0.0, self._save_ready - now)

    def _start_save(self, now: float, at_turn: bool) -> float:
        mode, save = self.driver.stop_copy_save, self.cfg.stop_copy_save_time
        if mode == drv.SAVE_FIRST_READ and not at_turn:
            return 0.0  # generic: nothing until the first read asks (save_wait)
        self._save_started, self._save_ready = now, now + save
        return save if (mode == drv.SAVE_SYNC or at_turn) else 0.0

    @property
    def save_times(self) -> tuple[float | None, float | None]:
        """(started, ready) of the stop-copy save, monotonic seconds (None: not yet)."""
        return self._save_started, self._save_ready

    @property
    def stop_copy_done(self) -> bool:
        """In STOP_COPY with every byte of the stream read (the context included)."""
        with self._lock:
            return (self.fsm.state == S.STOP_COPY and self._save_started is not None
                    and self._initial_remaining() == 0 and self._image is None
                    and not self._dirty.any()
                    and self._context_cursor >= len(self._context))

    # ------------------------------------------------------------ the device runs

    def dirty_blocks(self, idx: np.ndarray) -> None:
        """The device changes these blocks of its state (only while it runs)."""
        if idx.size == 0 or not self.blocks:
            return
        with self._lock:
            if self.fsm.state not in RUNNING_STATES:
                return
            idx = np.unique(idx % self.blocks)
            self._versions[idx] += np.uint64(1)
            self._blocks2d[idx, :] = _block_fill(  # type: ignore[index]
                idx.astype(np.uint64), self._versions[idx], self.seed
            )[:, None]
            self._writes += 1
            # A block the initial image or the open middle image has not reached yet goes
            # out with it anyway.
            read = idx[idx * self.block < self._initial_cursor]
            self._dirty[read[~self._in_image[read]]] = True

    # ------------------------------------------------------------ VFIO ioctls

    def precopy_info(self, now: float | None = None) -> tuple[int, int]:
        """VFIO_MIG_GET_PRECOPY_INFO: (initial_bytes, dirty_bytes). Only in PRE_COPY states.

        With a driver that cuts images here (mlx5vf_precopy_ioctl, virtiovf_precopy_ioctl),
        once everything saved is read and the device reports an increment, this saves the
        next middle image. A non-incremental driver (virtio) reports its whole state as the
        increment each time it asks the device, at most once per precopy_query_interval_s."""
        with self._lock:
            if self.fsm.state not in PRE_COPY_STATES:
                raise DeviceError(f"PRECOPY_INFO in {self.fsm.state.name}: only in PRE_COPY states")
            initial = self._initial_remaining()
            if initial and not self.driver.dirty_while_initial:
                return initial, 0
            if self.driver.image_cut == drv.CUT_NEVER:
                return initial, 0
            increment = self._increment(time.monotonic() if now is None else now)
            unread = self._middle_left()
            if (self.driver.image_cut == drv.CUT_ON_PRECOPY_INFO and self.fsm.state == S.PRE_COPY
                    and not initial and not unread and increment):
                self._cut_image()  # what dirty_bytes reports is now saved and readable
                return initial, self._middle_left() + (0 if self.driver.incremental else increment)
            return initial, unread + increment

    def _increment(self, now: float) -> int:
        """What the device says it would save now: its dirty blocks (incremental), or its
        whole state each time it is asked (virtio), not more often than the driver asks."""
        if self.fsm.state != S.PRE_COPY:
            return 0 if not self.driver.incremental else self._dirty_bytes()
        if self.driver.incremental:
            return self._dirty_bytes()
        if self._last_query is not None and now - self._last_query < self.query_interval_s:
            return 0
        self._last_query = now
        return self.cfg.initial_bytes

    def stop_copy_size(self) -> int:
        """VFIO_DEVICE_FEATURE_MIG_DATA_SIZE: the driver's stop-copy length. "whole-state"
        (mlx5vf_pci_get_data_size): the device's whole state, whatever pre-copy sent;
        "remaining" (generic): every byte still unread plus the context."""
        if self.driver.data_size == drv.WHOLE_STATE:
            return self.cfg.initial_bytes + self.cfg.stop_copy_size
        if self.driver.data_size == drv.FIXED:
            return self.driver.data_size_bytes
        with self._lock:
            if self._context and self.fsm.state in (S.STOP_COPY, S.STOP):
                context_left = len(self._context) - self._context_cursor
            else:
                context_left = self.cfg.stop_copy_size
            return (self._initial_remaining() + self._middle_left() + self._dirty_bytes()
                    + context_left)

    def _initial_remaining(self) -> int:
        return max(0, self.cfg.initial_bytes - self._initial_cursor)

    def _blocks_bytes(self, idx: np.ndarray) -> int:
        """Bytes of these blocks of the state buffer (the last block may be short)."""
        short = self.blocks * self.block - self.cfg.initial_bytes
        return len(idx) * self.block - (short if self.blocks and self.blocks - 1 in idx else 0)

    def _dirty_bytes(self) -> int:
        return self._blocks_bytes(np.flatnonzero(self._dirty))

    def _middle_left(self) -> int:
        img = self._image
        return self._blocks_bytes(img.blocks[img.next:]) if img is not None else 0

    def _cut_image(self) -> None:
        """Save a middle image of the blocks dirty now (an incremental SAVE), or of every
        block (a driver without incremental saves)."""
        if not self.driver.incremental:
            self._dirty[:] = True
        idx = np.flatnonzero(self._dirty)
        self._dirty[idx] = False
        self._in_image[idx] = True
        self._image = MiddleImage(idx, self._blocks_bytes(idx))
        self.images_cut += 1

    @property
    def initial_sent(self) -> bool:
        return self._initial_remaining() == 0

    def read(self, max_bytes: int, now: float | None = None) -> list[Chunk]:
        """Read from the data stream: up to max_bytes (at least one block of dirty state).
        [] in PRE_COPY is a temporary end (ENOMSG). In STOP_COPY an image begun in pre-copy
        is read to its end first; the final image only once its save is done (save_wait()
        is 0): [] before that, and at the end of the stream (stop_copy_done)."""
        with self._lock:
            st = self.fsm.state
            if st not in PRE_COPY_STATES and st != S.STOP_COPY:
                raise DeviceError(f"read() in {st.name}: the data stream is open in PRE_COPY/STOP_COPY")
            out: list[Chunk] = []
            budget = self._read_initial(out, max_bytes)
            budget = self._read_middle(out, budget, save_new=(
                st != S.STOP_COPY and self.driver.image_cut == drv.CUT_ON_READ))
            if st == S.STOP_COPY and self._final_readable(time.monotonic() if now is None else now):
                self._read_final(out, budget)
            return out

    def _final_readable(self, now: float) -> bool:
        """The final image follows the open middle image, once the save is done."""
        return (self._save_ready is not None and self._save_ready <= now
                and self._image is None)

    def _read_initial(self, out: list[Chunk], budget: int) -> int:
        n = min(budget, self._initial_remaining())
        if n > 0:
            start = self._initial_cursor
            out.append(Chunk("initial", start, self.buffer[start : start + n].tobytes(),
                             self.cfg.initial_bytes))
            self._initial_cursor += n
        return budget - max(n, 0)

    def _read_middle(self, out: list[Chunk], budget: int, save_new: bool) -> int:
        """The open middle image's next blocks; with a driver that cuts on read, once it is
        read, the next one is saved from the blocks dirty now."""
        while budget > 0:
            if self._image is None:
                if not save_new or self._initial_remaining() or not self._dirty.any():
                    break
                self._cut_image()
            img = self._image
            assert img is not None
            take = img.blocks[img.next : img.next + max(1, budget // self.block)]
            img.next += len(take)
            self._in_image[take] = False
            budget = self._read_blocks(out, take, "middle", img.length, budget)
            if img.done:
                self._image = None
        return budget

    def _read_final(self, out: list[Chunk], budget: int) -> None:
        """STOP_COPY's own image: the blocks dirty at the stop, then the context."""
        if budget > 0 and self._dirty.any():
            idx = np.flatnonzero(self._dirty)[: max(1, budget // self.block)]
            self._dirty[idx] = False
            budget = self._read_blocks(out, idx, "final", self._final_bytes, budget)
        if budget > 0 and self._context_cursor < len(self._context):
            n = min(budget, len(self._context) - self._context_cursor)
            c = self._context_cursor
            out.append(Chunk("final", self.cfg.initial_bytes + c,
                             bytes(self._context[c : c + n]), self._final_bytes))
            self._context_cursor += n

    def _read_blocks(self, out: list[Chunk], idx: np.ndarray, kind: str, image_bytes: int,
                     budget: int) -> int:
        for b in idx.tolist():
            off = b * self.block
            end = min(off + self.block, self.cfg.initial_bytes)
            out.append(Chunk(kind, off, self.buffer[off:end].tobytes(), image_bytes))
            budget -= end - off
        return budget

    def digest(self, config: bytes = b"") -> bytes:
        """State digest (buffer + context + the non-iterable state the source sent with
        it, which lives outside this model) - meaningful once stopped."""
        with self._lock:
            return device_digest(self.buffer[: self.cfg.initial_bytes], self._context, config)


def device_digest(buffer: np.ndarray, context: bytes | bytearray | np.ndarray,
                  config: bytes | bytearray | np.ndarray = b"") -> bytes:
    """Digest of a device's state: buffer, context, then the non-iterable (config) state
    (empty for a device without one, which leaves the digest as it was without it)."""
    h = hashlib.blake2b(digest_size=32)
    h.update(np.ascontiguousarray(buffer).data.cast("B"))
    h.update(bytes(context) if isinstance(context, np.ndarray) else context)
    h.update(bytes(config) if isinstance(config, np.ndarray) else config)
    return h.digest()


class TargetDevice:
    """The destination side: STOP -> RESUMING, takes chunks at offsets, STOP -> RUNNING.

    A device's state is one space of offsets: the state buffer [0, initial_bytes), the
    stop-copy context [initial_bytes, + stop_copy_size), then the non-iterable (config)
    state [initial_bytes + stop_copy_size, + state_bytes), which only IMAGE_KIND_CONFIG
    chunks (or, on a device-state stream, chunks at those offsets) carry.
    """

    def __init__(self, name: str, initial_bytes: int, stop_copy_size: int,
                 state_bytes: int = 0) -> None:
        self.name = name
        self.initial_bytes = initial_bytes
        self.stop_copy_size = stop_copy_size
        self.state_bytes = state_bytes
        self.fsm = StateMachine(S.STOP)
        self.buffer = np.zeros(initial_bytes, dtype=np.uint8)
        self.context = np.zeros(stop_copy_size, dtype=np.uint8)
        self.config = np.zeros(state_bytes, dtype=np.uint8)
        self.written_bytes = 0

    @property
    def data_size(self) -> int:
        """Where the iterable state (buffer and context) ends and the config state begins."""
        return self.initial_bytes + self.stop_copy_size

    @property
    def size(self) -> int:
        return self.data_size + self.state_bytes

    def write(self, offset: int, data: bytes) -> None:
        """Write a chunk into the device (only in RESUMING). Bounds are checked."""
        if self.fsm.state != S.RESUMING:
            raise DeviceError(f"write in {self.fsm.state.name}: only in RESUMING")
        end = offset + len(data)
        if offset < 0 or end > self.size:
            raise DeviceError(
                f"chunk [{offset}, {end}) outside device {self.name} state of {self.size} bytes"
            )
        arr = np.frombuffer(data, dtype=np.uint8)
        pos = 0
        for region, start in ((self.buffer, 0), (self.context, self.initial_bytes),
                              (self.config, self.data_size)):
            lo = max(offset + pos, start) - start
            n = min(end, start + region.size) - start - lo
            if n > 0:
                region[lo : lo + n] = arr[pos : pos + n]
                pos += n
        self.written_bytes += len(data)

    def digest(self) -> bytes:
        return device_digest(self.buffer, self.context.tobytes(), self.config.tobytes())
