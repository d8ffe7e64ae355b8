"""Device state on the main stream: DeviceData chunks written into their device inline,
INIT_DATA_SENT, and the switchover ACK they lead to.

A chunk is written into its device before the next message is read (QEMU's incoming
coroutine: `vfio_load_state` -> `vfio_load_buffer`), so a load that takes time holds the
whole stream; the source feels it through the transport's flow control.
"""

from __future__ import annotations

from migbed.core.clock import now_ns
from migbed.wire import migration_pb2 as pb
from migbed.wire.channel import CHUNK_BYTES

from .devices import LoadingDevice
from .parts import Parts
from .validate import check_image, check_range, refuse

_KIND = {pb.IMAGE_KIND_INITIAL: "initial", pb.IMAGE_KIND_MIDDLE: "middle",
         pb.IMAGE_KIND_FINAL: "final", pb.IMAGE_KIND_CONFIG: "config"}


class InlineDeviceLoads:
    def __init__(self, parts: Parts) -> None:
        self.p = parts
        self.ack_sent = False

    async def device_data(self, m: pb.DeviceData) -> None:
        dev = self.p.device(m.device, "device_data")
        data = m.data  # each read of a bytes field copies it: read it once
        kind = self._check_chunk(m, dev, _KIND.get(m.kind), data)
        dev.next_seq += 1
        self.p.count_received("device", len(data))
        # Loads (image-complete) in the write that reaches the image's length: whatever
        # comes between its chunks (RAM, other devices, INIT_DATA_SENT) leaves it open.
        await dev.write(kind, m.offset, data, m.image_bytes, self.p.pacer)

    def _check_chunk(self, m: pb.DeviceData, dev: LoadingDevice, kind: str | None,
                     data: bytes) -> str:
        i = dev.index
        if kind is None:
            raise refuse("INVALID_ARGUMENT", f"device_data.kind = {m.kind}: INITIAL, MIDDLE, "
                         "FINAL or CONFIG")
        if m.seq != dev.next_seq:
            what = "duplicated" if m.seq < dev.next_seq else "out of order (a gap)"
            raise refuse("DATA_LOSS", f"device_data.seq = {m.seq} for device {i}: expected "
                         f"{dev.next_seq}, {what}")
        if not data or len(data) > CHUNK_BYTES:
            raise refuse("INVALID_ARGUMENT",
                         f"device_data.data: {len(data)} bytes; 1 to {CHUNK_BYTES}")
        check_range("device_data", dev, kind, m.offset, len(data))
        if kind == "initial" and dev.marker_seen:
            raise refuse("FAILED_PRECONDITION",
                         f"initial data for device {i} after INIT_DATA_SENT")
        if kind in ("final", "config") and not self.p.stopped:
            raise refuse("FAILED_PRECONDITION", f"{kind} (stop-copy) data before stop_copy")
        if self.p.multifd_device_state and (kind in ("final", "config") or self.p.stopped):
            raise refuse("FAILED_PRECONDITION", f"device_data.kind = {kind.upper()} on the "
                         "main stream: with device_state_transfer = MULTIFD stop-copy state "
                         "goes on the multifd channels")
        check_image("device_data", dev, kind, m.image_bytes, len(data))
        return kind

    async def init_data_sent(self, m: pb.InitDataSent) -> None:
        dev = self.p.device(m.device, "init_data_sent")
        if m.seq != dev.next_seq:
            raise refuse("DATA_LOSS", f"init_data_sent.seq = {m.seq}: device {dev.index} is "
                         f"at seq {dev.next_seq} (chunks missing)")
        if dev.marker_seen:
            raise refuse("INVALID_ARGUMENT", f"init_data_sent for device {dev.index} twice")
        if dev.model.image is not None and dev.model.image.kind == "initial":
            raise refuse("DATA_LOSS", f"init_data_sent for device {dev.index}: its "
                         f"{dev.model.open_image()} (every initial byte comes before it)")
        await dev.initial_data_sent(self.p.pacer)
        self.maybe_ack()

    def maybe_ack(self) -> None:
        """SWITCHOVER_ACK once every device that needs to has approved (loaded its initial
        data): QEMU's qemu_loadvm_approve_switchover -> migrate_send_rp_switchover_ack."""
        if self.ack_sent or not self.p.setup.switchover_ack:
            return
        if all(d.initial_loaded or not d.needs_ack for d in self.p.devices):
            self.ack_sent = True
            self.p.send(pb.TargetMessage(switchover_ack=pb.SwitchoverAck(target_ack_ns=now_ns())))
