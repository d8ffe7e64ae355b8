"""A hand-written source for the target's tests: one real Migrate stream over real gRPC.

The script is a generator of SourceMessages run by gRPC's request thread: gRPC asks for
the next message only once it has taken the previous one, so the moment each message is
asked for shows how fast the target lets the source send (flow control included).
Replies are kept with their arrival times.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import grpc
import numpy as np

from migbed.dataplane import packet as pk
from migbed.dataplane.sender import MultifdSender
from migbed.wire import migration_pb2 as pb
from migbed.wire import migration_pb2_grpc as pbg

PAGE = 4096
MiB = 1 << 20
OPTIONS = [("grpc.max_send_message_length", 64 << 20),
           ("grpc.max_receive_message_length", 64 << 20)]


def setup(ram: int = 64 * MiB, devices: list[pb.DeviceShape] | None = None, **over: object
          ) -> pb.SourceMessage:
    s = pb.Setup(protocol_version=pb.PROTOCOL_VERSION_1, session_id=f"t-{os.urandom(4).hex()}",
                 guest=pb.GuestShape(ram_bytes=ram, page_size=PAGE),
                 devices=devices or [], switchover_ack=True, guest_seed=3, vcpu_tick_s=0.001,
                 heartbeat_timeout_s=5.0, scenario="target-tests", policy="legacy")
    for k, v in over.items():
        setattr(s, k, v)
    return pb.SourceMessage(setup=s)


def device(name: str = "vf0", initial: int = 4 * MiB, stop: int = 1 * MiB, **over: object
           ) -> pb.DeviceShape:
    d = pb.DeviceShape(name=name, initial_bytes=initial, stop_copy_size=stop, block_size=65536,
                       load_rate_bytes_per_s=1e10)
    for k, v in over.items():
        setattr(d, k, v)
    return d


def ram(first_page: int, pages: int = 256) -> pb.SourceMessage:
    idx = list(range(first_page, first_page + pages))
    return pb.SourceMessage(ram=pb.RamPages(pages=idx, data=bytes(pages * PAGE)))


def chunks(dev: int, kind: int, start_seq: int, offset: int, total: int,
           size: int = MiB, image_bytes: int = 0) -> Iterator[pb.SourceMessage]:
    """`total` bytes from `offset` in chunks of `size`, all of one image of `image_bytes`
    (default: `total`, the chunks are the whole image)."""
    seq = start_seq
    for off in range(offset, offset + total, size):
        n = min(size, offset + total - off)
        yield pb.SourceMessage(device_data=pb.DeviceData(
            device=dev, kind=kind, seq=seq, offset=off, data=bytes([dev + 1]) * n,  # type: ignore[arg-type]
            image_bytes=image_bytes or total))
        seq += 1


STOP = pb.SourceMessage(stop_copy=pb.StopCopy(source_stop_ns=1))


class DeviceStateChannels:
    """The multifd channels of a hand-written source, carrying device-state packets (QEMU
    10.0's multifd device state) to the session SetupAccepted names."""

    def __init__(self, accepted: pb.SetupAccepted, ram_bytes: int, channels: int = 1) -> None:
        self.sender = MultifdSender("127.0.0.1", accepted.multifd_port,
                                    bytes(accepted.multifd_token), channels,
                                    np.zeros((ram_bytes // PAGE, PAGE), np.uint8),
                                    heartbeat_timeout_s=5.0)
        self.sender.connect(5.0)
        self.idx: dict[int, int] = {}  # each device's next packet number

    def send(self, dev: int, kind: str, offset: int, data: bytes, image_bytes: int,
             last: bool = False, idx: int | None = None) -> None:
        n = self.idx.get(dev, 0) if idx is None else idx
        self.idx[dev] = n + 1
        ds = pk.DeviceState(dev, pk.DS_KIND_OF[kind], n, offset, image_bytes, last)
        asyncio.run(self.sender.submit_device_state(ds, data))

    def close(self) -> None:
        self.sender.close()


def marker(dev: int, seq: int) -> pb.SourceMessage:
    return pb.SourceMessage(init_data_sent=pb.InitDataSent(device=dev, seq=seq))


@dataclass
class Stream:
    address: str
    pulled: list[tuple[float, str, int]] = field(default_factory=list)  # (t, body, bytes)
    replies: list[tuple[float, pb.TargetMessage]] = field(default_factory=list)
    error: grpc.RpcError | None = None
    done: threading.Event = field(default_factory=threading.Event)
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def run(self, script: Callable[[Stream], Iterator[pb.SourceMessage]],
            timeout: float = 60) -> threading.Thread:
        """Start the stream in a thread; `script(self)` yields the messages."""
        def requests() -> Iterator[pb.SourceMessage]:
            for msg in script(self):
                self.pulled.append((time.monotonic(), msg.WhichOneof("body") or "",
                                    msg.ByteSize()))
                yield msg

        def call() -> None:
            with grpc.insecure_channel(self.address, options=OPTIONS) as ch:
                try:
                    for r in pbg.MigrationStub(ch).Migrate(requests(), timeout=timeout):
                        with self._cond:
                            self.replies.append((time.monotonic(), r))
                            self._cond.notify_all()
                except grpc.RpcError as e:
                    self.error = e
                finally:
                    self.done.set()
                    with self._cond:
                        self._cond.notify_all()

        t = threading.Thread(target=call, daemon=True)
        t.start()
        return t

    def wait_for(self, body: str, timeout: float = 30) -> tuple[float, pb.TargetMessage]:
        """The first reply of this kind (waits for it)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for t, r in self.replies:
                    if r.WhichOneof("body") == body:
                        return t, r
                if self.done.is_set() or time.monotonic() > deadline:
                    raise AssertionError(f"no {body} (error: {self.error}); got "
                                         f"{[r.WhichOneof('body') for _, r in self.replies]}")
                self._cond.wait(0.05)

    def of(self, body: str) -> list[tuple[float, pb.TargetMessage]]:
        with self._cond:
            return [(t, r) for t, r in self.replies if r.WhichOneof("body") == body]

    def bytes_pulled(self, start: float, end: float, body: str = "ram") -> int:
        return sum(n for t, b, n in self.pulled if start <= t < end and b == body)

