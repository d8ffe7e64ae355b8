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
- "on-stop" (hisi_acc, pds, qat: `hisi_acc_vf_load_state`, `pds_vfio_set_lm_state_cmd`,
  `qat_vf_load_device_data` on the RESUMING -> STOP arc): writes only copy; everything
  written loads at once when the device leaves RESUMING at the destination's vm_start
  (`leave_resuming`), setup, bytes and the stop-copy cost together.

Where an image ends: every chunk carries the length of its image (mlx5's image header,
`record_size`), so the driver knows an image's last byte when it is written
(`mlx5vf_resume_read_image` -> LOAD_IMAGE -> `mlx5vf_cmd_load_vhca_state`, in the same
write). A device's images follow one another in its data stream: a chunk continues the
open image until its length is reached, whatever the main stream carries in between (RAM,
other devices, INIT_DATA_SENT); a chunk that does not fit (another kind or length while an
image is open, more bytes than the image has) is refused with the field that is wrong.

Non-iterable state (config space, IMAGE_KIND_CONFIG chunks) is loaded by QEMU itself, not
through the data fd: it costs `config-load-time`, whatever its size, once, when its last
chunk is written; a device that sent no config chunks pays it when the stream completes.

Pure: no clock, no I/O. The caller waits out each Load's seconds in real time.
"""

from __future__ import annotations

from dataclasses import dataclass

IMAGE_COMPLETE = "image-complete"
PER_CHUNK = "per-chunk"
ON_STOP = "on-stop"
TRIGGERS = (IMAGE_COMPLETE, PER_CHUNK, ON_STOP)
KINDS = ("initial", "middle", "final", "config")


@dataclass(frozen=True)
class LoadCosts:
    """A device's load inputs (the scenario's, sent in Setup): what the model charges."""

    setup_time: float = 0.0  # s, once, with the first data load (resource allocation)
    load_rate: float = 2e9  # bytes/s
    stop_copy_load_time: float = 0.0  # s, once, with the first stop-copy data load
    config_load_time: float = 0.0  # s, once, the non-iterable state
    trigger: str = IMAGE_COMPLETE

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


@dataclass
class Image:
    """The image a device is being written: its kind, its length (the header's) and the
    bytes written of it so far."""

    kind: str
    length: int
    written: int = 0

    def __str__(self) -> str:
        return f"{self.kind.upper()} image ({self.written} of {self.length} bytes written)"


class ImageError(ValueError):
    """A chunk that does not fit the device's image stream; `field` names what is wrong
    (a DeviceData field: kind, image_bytes or data)."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}{detail}")
        self.field = field


class DeviceLoadModel:
    """One device's loads, in the order its writes arrive."""

    def __init__(self, costs: LoadCosts) -> None:
        self.costs = costs
        self.image: Image | None = None  # the image being written, until its last byte
        self.buffered = 0  # data bytes written and not loaded yet (image-complete, on-stop)
        self.config_buffered = 0  # bytes of the config image written so far
        self.setup_paid = False
        self.stop_copy_paid = False
        self.config_loaded = False
        self.final_written = False  # a stop-copy (final) byte was written (on-stop's cost)

    def check(self, kind: str, nbytes: int, image_bytes: int) -> None:
        """Raise ImageError unless a chunk of `kind`, `nbytes` long, of an image of
        `image_bytes`, can be the device's next write."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        img = self.image
        if img is None:
            if image_bytes <= 0:
                raise ImageError("image_bytes", " = 0: every chunk carries its image's length")
            if nbytes > image_bytes:
                raise ImageError("data", f": {nbytes} bytes, more than the image's "
                                 f"image_bytes = {image_bytes}")
            return
        if kind != img.kind:
            raise ImageError("kind", f" = {kind.upper()} while the device's {img} is open: "
                             "an image ends at its length before the next begins")
        if image_bytes != img.length:
            raise ImageError("image_bytes", f" = {image_bytes}: the {img} this chunk "
                             "continues has that length in every chunk")
        if img.written + nbytes > img.length:
            raise ImageError("data", f": {nbytes} bytes beyond the end of the {img}")

    def write(self, kind: str, nbytes: int, image_bytes: int) -> list[Load]:
        """A chunk of `kind` is written: the loads this write performs before it returns
        (image-complete: the whole image, in the write that reaches its length)."""
        self.check(kind, nbytes, image_bytes)
        if self.image is None:
            self.image = Image(kind, image_bytes)
        self.image.written += nbytes
        self.final_written |= kind == "final"
        loads: list[Load] = []
        if kind == "config":  # QEMU loads it itself (vfio_load_device_config_state)
            self.config_buffered += nbytes
        elif self.costs.trigger == PER_CHUNK:
            loads.append(self._load(kind, nbytes))
        else:
            self.buffered += nbytes
        if self.image.written == self.image.length:
            self.image = None
            if kind == "config":
                loads.append(self._load(kind, self.config_buffered))
                self.config_buffered = 0
            elif self.costs.trigger == IMAGE_COMPLETE and self.buffered:
                loads.append(self._load(kind, self.buffered))
                self.buffered = 0
        return loads

    def leave_resuming(self) -> list[Load]:
        """The RESUMING -> STOP arc at vm_start: an on-stop driver loads everything written
        now (the final image's fixed cost included); the others have nothing left here."""
        if self.costs.trigger != ON_STOP or not self.buffered:
            return []
        kind = "final" if self.final_written else "initial"
        load = self._load(kind, self.buffered)
        self.buffered = 0
        return [load]

    def open_image(self) -> str:
        """What is left unfinished ('' when every image written is whole)."""
        return str(self.image) if self.image is not None else ""

    def finish(self) -> list[Load]:
        """The device's stream is complete (every image whole): its config state loads now
        if no config chunk did."""
        if self.image is not None:
            raise ValueError(f"the stream ended inside the {self.image}")
        if not self.config_loaded and self.costs.config_load_time > 0:
            return [self._load("config", 0)]
        return []

    def _load(self, kind: str, nbytes: int) -> Load:
        c = self.costs
        if kind == "config":
            loaded, self.config_loaded = self.config_loaded, True
            return Load(kind, nbytes, 0.0 if loaded else c.config_load_time)
        seconds = nbytes / c.load_rate
        if not self.setup_paid:
            self.setup_paid = True
            seconds += c.setup_time
        if kind == "final" and not self.stop_copy_paid:
            self.stop_copy_paid = True
            seconds += c.stop_copy_load_time
        return Load(kind, nbytes, seconds)
