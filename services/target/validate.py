"""Checks of what the source sends, each refusal naming its field: a Setup before anything
is charged or allocated (every field against the limits the scenario validator uses,
migbed/core/limits.py), and a device chunk against its device's shape (the region its kind
addresses, its image's length). The checks that depend on where the session is (seq,
before or after StopCopy) belong to the part that handles the message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from migbed.core import limits as lim
from migbed.core.loadmodel import ImageError
from migbed.wire import migration_pb2 as pb
from migbed.wire.errors import ProtocolError

if TYPE_CHECKING:
    from .devices import LoadingDevice


def refuse(code: str, message: str) -> ProtocolError:
    """The error that ends the stream with status `code`; the message, which may echo
    input, clipped to what a gRPC status carries."""
    return ProtocolError(code, lim.clip(message))


def _bad(message: str, code: str = "INVALID_ARGUMENT") -> ProtocolError:
    return refuse(code, message)


def _within(field: str, value: float, lo: float, hi: float, scale: float = 1.0) -> None:
    """lo <= value <= hi, the bounds scaled: a dilated run's times are K x, its rates 1/K x
    the limits of the scenario it came from (migbed/core/dilation.py)."""
    if not lo * scale <= value <= hi * scale:  # also refuses NaN
        dilated = " (the scenario's limits, dilated)" if scale != 1.0 else ""
        raise _bad(f"{field} = {value:g}: allowed {lo * scale:g} .. {hi * scale:g}{dilated}")


def dilation(s: pb.Setup) -> float:
    """The run's time-dilation K (0 on the wire = not dilated)."""
    return s.time_dilation or 1.0


def validate_setup(s: pb.Setup) -> None:
    if s.protocol_version != pb.PROTOCOL_VERSION_1:
        raise _bad(f"setup.protocol_version = {s.protocol_version}: this target speaks 1",
                   "FAILED_PRECONDITION")
    if not s.session_id or len(s.session_id) > 128:
        raise _bad("setup.session_id: 1 to 128 characters")
    _validate_dilation(s)
    _validate_guest(s)
    if len(s.devices) > lim.MAX_DEVICES:
        raise _bad(f"setup.devices: {len(s.devices)} devices, at most {lim.MAX_DEVICES}")
    for i, d in enumerate(s.devices):
        _validate_device(f"setup.devices[{i}]", d, dilation(s))
    if s.heartbeat_timeout_s:  # NaN too
        lo, hi = (x * dilation(s) for x in lim.HEARTBEAT_TIMEOUT_S)
        if not lo <= s.heartbeat_timeout_s <= hi:
            raise _bad(f"setup.heartbeat_timeout_s = {s.heartbeat_timeout_s:g}: 0 (default) "
                       f"or {lo:g} .. {hi:g}")
    if s.multifd_channels > lim.MAX_MULTIFD_CHANNELS:
        raise _bad(f"setup.multifd_channels = {s.multifd_channels}: 0 (multifd off) .. "
                   f"{lim.MAX_MULTIFD_CHANNELS}")
    transfer = s.device_state_transfer
    if transfer not in pb.DeviceStateTransfer.values():
        raise _bad(f"setup.device_state_transfer = {transfer}: MAIN or MULTIFD")
    if transfer == pb.DEVICE_STATE_TRANSFER_MULTIFD and not s.multifd_channels:
        raise _bad("setup.device_state_transfer = MULTIFD needs setup.multifd_channels > 0 "
                   "(device state travels on the multifd channels)", "FAILED_PRECONDITION")


def _validate_dilation(s: pb.Setup) -> None:
    lo, hi = lim.TIME_DILATION
    if s.time_dilation and not lo <= s.time_dilation <= hi:  # NaN too
        raise _bad(f"setup.time_dilation = {s.time_dilation:g}: 0 (not dilated) or {lo:g} .. {hi:g}")


def _validate_guest(s: pb.Setup) -> None:
    g = s.guest
    if g.page_size not in lim.PAGE_SIZES:
        raise _bad(f"setup.guest.page_size = {g.page_size}: allowed "
                   + ", ".join(str(p) for p in lim.PAGE_SIZES))
    if not lim.MIN_RAM_BYTES <= g.ram_bytes <= lim.MAX_RAM_BYTES or g.ram_bytes % g.page_size:
        raise _bad(f"setup.guest.ram_bytes = {g.ram_bytes}: a multiple of page_size from "
                   f"{lim.MIN_RAM_BYTES} to {lim.MAX_RAM_BYTES}")
    k = dilation(s)
    _within("setup.dirty_rate_bytes_per_s", s.dirty_rate_bytes_per_s, 0, lim.MAX_DIRTY_RATE, 1 / k)
    _within("setup.vcpu_tick_s", s.vcpu_tick_s, *lim.VCPU_TICK_S, k)


def _validate_device(w: str, d: pb.DeviceShape, k: float) -> None:
    for name in ("initial_bytes", "stop_copy_size"):
        if getattr(d, name) > lim.MAX_DEVICE_BYTES:
            raise _bad(f"{w}.{name} = {getattr(d, name)}: state larger than "
                       f"{lim.MAX_DEVICE_BYTES}")
    if d.device_state_bytes > lim.MAX_DEVICE_STATE_BYTES:
        raise _bad(f"{w}.device_state_bytes = {d.device_state_bytes}: at most "
                   f"{lim.MAX_DEVICE_STATE_BYTES}")
    _within(f"{w}.load_rate_bytes_per_s", d.load_rate_bytes_per_s, *lim.LOAD_RATE, 1 / k)
    for name in ("load_setup_time_s", "stop_copy_load_time_s", "config_load_time_s",
                 "resume_time_s"):
        _within(f"{w}.{name}", getattr(d, name), 0, lim.MAX_LOAD_TIME_S, k)
    if d.load_trigger not in pb.LoadTrigger.values():
        raise _bad(f"{w}.load_trigger = {d.load_trigger}: IMAGE_COMPLETE, PER_CHUNK or ON_STOP")


# ---------------------------------------------------------------- device chunks

# (least, most, what limits it) image_bytes of an image of each kind, from the Setup's shape
_IMAGE_BYTES: dict[str, Callable[[LoadingDevice], tuple[int, int, str]]] = {
    "initial": lambda d: (d.state.initial_bytes, d.state.initial_bytes, "initial_bytes"),
    "middle": lambda d: (1, d.state.initial_bytes, "initial_bytes: dirty state buffer"),
    "final": lambda d: (1, d.state.data_size, "initial_bytes + stop_copy_size"),
    "config": lambda d: (1, d.state.state_bytes, "device_state_bytes"),
}
_IMAGE_ERROR_CODE = {"kind": "FAILED_PRECONDITION", "image_bytes": "INVALID_ARGUMENT",
                     "data": "OUT_OF_RANGE"}


def stop_copy_region(dev: LoadingDevice, offset: int) -> str:
    """A device-state chunk's kind by its offset: the final image or the config state. A
    chunk that continues the device's open image (begun in pre-copy on the main stream) is
    of that image's kind instead."""
    return "config" if offset >= dev.state.data_size else "final"


def check_image_bytes(what: str, image_bytes: int) -> None:
    if image_bytes == 0:
        raise refuse("INVALID_ARGUMENT", f"{what}.image_bytes = 0: required, the length of "
                     "the image the chunk belongs to")


def check_image(what: str, dev: LoadingDevice, kind: str, image_bytes: int, n: int) -> None:
    """A chunk's image length (mlx5's header record_size) fits its kind on this device and
    the chunk fits the device's open image, if one is open."""
    check_image_bytes(what, image_bytes)
    lo, hi, limit = _IMAGE_BYTES[kind](dev)
    if not lo <= image_bytes <= hi:
        allowed = f"exactly {lo}" if lo == hi else f"1 to {hi}"
        raise refuse("OUT_OF_RANGE", f"{what}.image_bytes = {image_bytes} for a "
                     f"{kind.upper()} image of device {dev.name}: allowed {allowed} ({limit})")
    try:
        dev.model.check(kind, n, image_bytes)
    except ImageError as e:
        raise refuse(_IMAGE_ERROR_CODE[e.field], f"{what}.{e}, device {dev.name}") from None


def check_whole(what: str, dev: LoadingDevice) -> None:
    """The device's stream ends here: no image may be left short of its length."""
    if dev.model.image is not None:
        raise refuse("DATA_LOSS", f"{what}: device {dev.name}'s {dev.model.open_image()} "
                     "never reached its image_bytes")


def check_range(what: str, dev: LoadingDevice, kind: str, offset: int, n: int) -> None:
    """A chunk's bytes lie in its device's state, in the region its kind addresses."""
    st = dev.state
    lo, hi = (st.data_size, st.size) if kind == "config" else (0, st.data_size)
    if offset < lo or offset + n > hi:
        raise refuse("OUT_OF_RANGE", f"{what} [{offset}, {offset + n}) beyond device "
                     f"{dev.name}'s {kind} state [{lo}, {hi})")
