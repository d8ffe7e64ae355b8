"""The destination's device load model: which write into a device takes time, and how much.

As QEMU's destination does it (migration-facts.md, section 3): the incoming stream's reader
writes each VFIO chunk into the device's data fd and reads on only when the write returns.
What a write costs depends on the driver, named per device by `load-trigger`:

- "image-complete" (mlx5): chunks are buffered until an image is whole; the write that
  completes it loads the image synchronously (`mlx5vf_resume_write` -> load_vhca_state).
  The first image pays the resource allocation (`load-setup-time`), the final image a fixed
  `stop-copy-load-time`, every image its bytes at `load-rate`.
- "per-chunk": every write loads its own bytes at `load-rate` (the first write pays the
  setup, the first stop-copy write the fixed stop-copy cost).

Where an image ends: mlx5 images carry their length in a header, so the driver knows the
last byte when it is written. The testbed's stream has no such headers, so an image ends
where the stream says so: the initial image at `initial-bytes` (its size is known from the
start) or at INIT_DATA_SENT; any other image (a pre-copy middle image, the stop-copy image,
the non-iterable config state) when the stream moves on to anything that is not the next
chunk of the same device and kind. The reader pays that load before it reads on, which is
when the last write would have returned.

Non-iterable state (config space, IMAGE_KIND_CONFIG chunks) is loaded by QEMU itself, not
through the data fd: it costs `config-load-time`, whatever its size, once, in stop-copy;
a device that sent no config chunks pays it when the stream completes.

Pure: no clock, no I/O. The caller waits out each Load's seconds in real time.
"""

from __future__ import annotations

from dataclasses import dataclass

IMAGE_COMPLETE = "image-complete"
PER_CHUNK = "per-chunk"
TRIGGERS = (IMAGE_COMPLETE, PER_CHUNK)
KINDS = ("initial", "middle", "final", "config")


@dataclass(frozen=True)
class LoadCosts:
    """A device's load inputs (the scenario's, sent in Setup): what the model charges."""

    setup_time: float = 0.0  # s, once, with the first data load (resource allocation)
    load_rate: float = 2e9  # bytes/s
    stop_copy_load_time: float = 0.0  # s, once, with the first stop-copy data load
    config_load_time: float = 0.0  # s, once, the non-iterable state
    trigger: str = IMAGE_COMPLETE
    initial_bytes: int = 0  # the initial image's size

    def __post_init__(self) -> None:
        if not self.load_rate > 0:
            raise ValueError(f"load_rate must be positive, not {self.load_rate}")
        if self.trigger not in TRIGGERS:
            raise ValueError(f"trigger must be one of {TRIGGERS}, not {self.trigger!r}")


@dataclass(frozen=True)
class Load:
    """One load the device performs: how long it takes and what it makes loaded."""

    kind: str
    nbytes: int
    seconds: float


class DeviceLoadModel:
    """One device's loads, in the order its writes arrive."""

    def __init__(self, costs: LoadCosts) -> None:
        self.costs = costs
        self.pending_kind: str | None = None  # the image being buffered
        self.pending_bytes = 0
        self.initial_received = 0
        self.setup_paid = False
        self.stop_copy_paid = False
        self.config_loaded = False

    @property
    def has_pending(self) -> bool:
        return self.pending_kind is not None

    def write(self, kind: str, nbytes: int) -> list[Load]:
        """A chunk of `kind` is written: the loads this write performs before it returns."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        loads = self.end_image() if self.pending_kind not in (None, kind) else []
        if kind == "initial":
            self.initial_received += nbytes
        if self.costs.trigger == PER_CHUNK and kind != "config":
            loads.append(self._load(kind, nbytes))
            return loads
        self.pending_kind = kind
        self.pending_bytes += nbytes
        if kind == "initial" and self.initial_received >= self.costs.initial_bytes:
            loads += self.end_image()  # its last byte: the image is whole
        return loads

    def end_image(self) -> list[Load]:
        """The stream moved on (or INIT_DATA_SENT came): the buffered image loads now."""
        if self.pending_kind is None:
            return []
        load = self._load(self.pending_kind, self.pending_bytes)
        self.pending_kind, self.pending_bytes = None, 0
        return [load]

    def finish(self) -> list[Load]:
        """The device's stream is complete: whatever is buffered, then its config state."""
        loads = self.end_image()
        if not self.config_loaded and self.costs.config_load_time > 0:
            loads.append(self._load("config", 0))
        return loads

    def _load(self, kind: str, nbytes: int) -> Load:
        c = self.costs
        if kind == "config":
            self.config_loaded = True
            return Load(kind, nbytes, c.config_load_time)
        seconds = nbytes / c.load_rate
        if not self.setup_paid:
            self.setup_paid = True
            seconds += c.setup_time
        if kind == "final" and not self.stop_copy_paid:
            self.stop_copy_paid = True
            seconds += c.stop_copy_load_time
        return Load(kind, nbytes, seconds)
