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
"""

from __future__ import annotations

import enum
import hashlib
import threading
from dataclasses import dataclass

import numpy as np

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
    it goes out with that image, as with the initial image."""

    def __init__(self, cfg: DeviceConfig, seed: int) -> None:
        self.cfg = cfg
        self.seed = seed
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
        if self.blocks:
            idx = np.arange(self.blocks, dtype=np.uint64)
            self._blocks2d[:] = _block_fill(idx, self._versions, seed)[:, None]  # type: ignore[index]

    @property
    def state(self) -> VfioState:
        return self.fsm.state

    def set_state(self, dst: VfioState) -> None:
        with self._lock:
            self.fsm.set_state(dst)
            if dst == S.STOP_COPY:
                stamp_context(self._context_body, self._writes)  # == context_bytes(...)
                self._context = self._context_body
                self._context_cursor = 0
                # The device no longer changes: the final image's length is known now.
                self._final_bytes = self._blocks_bytes(np.flatnonzero(self._dirty)) + len(
                    self._context)

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

    def precopy_info(self) -> tuple[int, int]:
        """VFIO_MIG_GET_PRECOPY_INFO: (initial_bytes, dirty_bytes). Only in PRE_COPY states."""
        with self._lock:
            if self.fsm.state not in PRE_COPY_STATES:
                raise DeviceError(f"PRECOPY_INFO in {self.fsm.state.name}: only in PRE_COPY states")
            return self._initial_remaining(), self._middle_left() + self._dirty_bytes()

    def stop_copy_size(self) -> int:
        """VFIO_DEVICE_FEATURE_MIG_DATA_SIZE: the estimated stop-copy length."""
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

    @property
    def initial_sent(self) -> bool:
        return self._initial_remaining() == 0

    def read(self, max_bytes: int) -> list[Chunk]:
        """Read from the data stream: up to max_bytes (at least one block of dirty state).
        [] is a temporary end (ENOMSG) in PRE_COPY and the end of the stream in STOP_COPY.
        An image begun in pre-copy is read to its end first in STOP_COPY too."""
        with self._lock:
            st = self.fsm.state
            if st not in PRE_COPY_STATES and st != S.STOP_COPY:
                raise DeviceError(f"read() in {st.name}: the data stream is open in PRE_COPY/STOP_COPY")
            out: list[Chunk] = []
            budget = self._read_initial(out, max_bytes)
            budget = self._read_middle(out, budget, save_new=st != S.STOP_COPY)
            if st == S.STOP_COPY:
                self._read_final(out, budget)
            return out

    def _read_initial(self, out: list[Chunk], budget: int) -> int:
        n = min(budget, self._initial_remaining())
        if n > 0:
            start = self._initial_cursor
            out.append(Chunk("initial", start, self.buffer[start : start + n].tobytes(),
                             self.cfg.initial_bytes))
            self._initial_cursor += n
        return budget - max(n, 0)

    def _read_middle(self, out: list[Chunk], budget: int, save_new: bool) -> int:
        """The open middle image's next blocks; in pre-copy, once it is read, the next one
        is saved from the blocks dirty now."""
        while budget > 0:
            if self._image is None:
                if not save_new or self._initial_remaining() or not self._dirty.any():
                    break
                idx = np.flatnonzero(self._dirty)
                self._dirty[idx] = False
                self._in_image[idx] = True
                self._image = MiddleImage(idx, self._blocks_bytes(idx))
            img = self._image
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
