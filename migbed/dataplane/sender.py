"""The source side of multifd: N TCP channels, one OS thread each, pages sent from guest RAM.

RAM: the engine hands batches of page indices to submit()/submit_async(); they are cut into
QEMU-sized packets (512 KiB of pages, packet.Layout), and consecutive packets are grouped
into bursts of up to burst_bytes that go to one channel, the channels taking bursts in turn
through one bounded queue (counted in bytes). A channel thread writes a whole burst with one
sendmsg: per packet its block (header + indices) and the pages themselves, the iovec
pointing into guest RAM (one entry per run of consecutive pages), so page bytes are never
copied in Python. The bytes on the wire are QEMU's packets one after another; the burst only
sets how many a syscall carries, because in Python each write costs a wake-up and a GIL
hand-over whatever its size. As in QEMU, a page the vCPU writes while it is being sent may
go out torn; it is then also in the dirty log and is sent again.

Device state (QEMU 10.0's multifd device state): submit_device_state() queues one packet of a
device's state to the next channel, under the same lock and in the same turn as RAM: a
device's state travels on the shared channels mixed with RAM pages, one packet at a time,
as multifd_queue_device_state -> multifd_send hands it to a channel.

sync(generation) is QEMU's multifd_send_sync_main: a SYNC packet goes on every channel behind
everything queued before it, and the call returns once every channel has written it.
submit() may run in another thread than sync() (the event loop's): a batch's packets are
counted and queued under one lock that sync() also takes, so each packet is on one side of a
SYNC both in the count it returns and on the wire.

The rate limit is not here: the engine's limiter budgets bytes across all channels and only
submits what it allows. The queue bound only keeps the engine from running far ahead (up to
queue_limit_bytes; a bandwidth window that must match the wire counts stats() bytes, which
are written bytes, not submitted ones).

Failure detection, all within heartbeat_timeout_s: a write that moves nothing for that long
(the target stopped reading) fails the channel; an idle channel sends a keep-alive every
keepalive_s, so the target can time out a silent source, and TCP_USER_TIMEOUT makes the
kernel abort a connection whose link vanished without a RST; a reset or EOF fails at once.
The first failure is `error`; submit/sync then raise it.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import secrets
import socket
import ssl
import threading
import time
from dataclasses import dataclass

import numpy as np

from migbed.dataplane import packet as pk
from migbed.dataplane._io import (
    AsyncSignal,
    PeerClosed,
    Stalled,
    name_os_thread,
    send_buffers,
    set_timeouts,
    shutdown_quietly,
)

log = logging.getLogger("migbed.dataplane")

# Packets are QEMU's (512 KiB); what a syscall carries is a burst of them. In Python every
# write costs wake-ups and GIL hand-overs: bench/multifd_throughput.py --burst (2026-12-07,
# 2 channels, a loaded machine) measured the sender's CPU per GiB falling with the burst
# (0.32 s/GiB at 2 MiB, 0.21 at 4 MiB, 0.18 at 8 MiB; raw TCP 0.12) and 16 MiB gaining
# nothing more.
DEFAULT_BURST_BYTES = 8 << 20
DEFAULT_QUEUE_BURSTS = 2  # per channel: one being written, one ready (QEMU: a packet per channel in flight)
DEFAULT_KEEPALIVE_S = 0.25


class MultifdError(RuntimeError):
    """A multifd channel failed; the message names the channel and why."""


@dataclass
class ChannelStats:
    channel: int
    bytes: int = 0  # everything written or read on the channel (blocks, pages, device state)
    packets: int = 0  # RAM, device-state and SYNC packets (not keep-alives, not FIN)
    pages: int = 0
    syncs: int = 0
    device_bytes: int = 0  # of `bytes`: device-state packets (block and payload)
    device_packets: int = 0


class _Stop:
    pass


_STOP = _Stop()


@dataclass(frozen=True)
class _Burst:
    """Consecutive RAM packets (index arrays) written with one sendmsg."""

    packets: list[np.ndarray]
    nbytes: int  # the pages' bytes (what the queue bound counts)


@dataclass(frozen=True)
class _DeviceStatePacket:
    ds: pk.DeviceState
    data: bytes


@dataclass(frozen=True)
class _Sync:
    generation: int


@dataclass(frozen=True)
class _Fin:
    pass


class _Channel:
    """One connection and the thread that writes it."""

    def __init__(self, index: int, sock: socket.socket) -> None:
        self.index = index
        self.sock = sock
        self.queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self.stats = ChannelStats(index)
        self.seq = 0
        self.generation = 0  # the last SYNC written on this channel
        self.thread: threading.Thread | None = None


def _queued_bytes(item: object) -> int:
    if isinstance(item, _Burst):
        return item.nbytes
    if isinstance(item, _DeviceStatePacket):
        return len(item.data)
    return 0


class MultifdSender:
    def __init__(self, host: str, port: int, token: bytes, channels: int, memory: np.ndarray,
                 ssl_context: ssl.SSLContext | None = None, *,
                 heartbeat_timeout_s: float = 5.0, packet_bytes: int = pk.PACKET_BYTES,
                 burst_bytes: int = DEFAULT_BURST_BYTES,
                 queue_bursts: int = DEFAULT_QUEUE_BURSTS,
                 keepalive_s: float | None = None) -> None:
        if memory.ndim != 2 or memory.dtype != np.uint8 or not memory.flags.c_contiguous:
            raise ValueError("memory must be a C-contiguous 2-D uint8 array (pages x page_size)")
        if len(token) != pk.TOKEN_BYTES:
            raise ValueError(f"token must be {pk.TOKEN_BYTES} bytes, got {len(token)}")
        if not 1 <= channels <= pk.MAX_CHANNELS:
            raise ValueError(f"channels {channels} is not in [1, {pk.MAX_CHANNELS}]")
        self.host, self.port, self.token = host, port, token
        self.channels = channels
        self.page_size = int(memory.shape[1])
        self.ram_pages = int(memory.shape[0])
        self.layout = pk.Layout(self.page_size, self.ram_pages)
        if not 0 < packet_bytes <= pk.PACKET_BYTES:
            raise ValueError(f"packet_bytes {packet_bytes} is not in (0, {pk.PACKET_BYTES}] "
                             "(QEMU's MULTIFD_PACKET_SIZE)")
        # Smaller packets only for tests: the receiver takes up to Layout.packet_pages.
        self.packet_pages = min(self.layout.packet_pages, max(1, packet_bytes // self.page_size))
        self.burst_packets = min(pk.MAX_BURST_PACKETS,
                                 max(1, burst_bytes // (self.packet_pages * self.page_size)))
        self.heartbeat_timeout_s = heartbeat_timeout_s
        # An idle channel says it is alive well inside the target's silence timeout (the
        # same heartbeat on both sides of a migration).
        self.keepalive_s = keepalive_s if keepalive_s is not None else \
            min(DEFAULT_KEEPALIVE_S, heartbeat_timeout_s / 4)
        burst = self.burst_packets * self.packet_pages * self.page_size
        self.queue_limit_bytes = max(queue_bursts * channels * burst,
                                     2 * channels * pk.DEVICE_STATE_MAX_BYTES)
        self._ssl = ssl_context
        self._flat = memory.data.cast("B")  # all of RAM as one byte view: slices are free
        self._channels: list[_Channel] = []
        self._next = 0  # round-robin position
        self._lock = threading.Lock()
        self._queued_bytes = 0
        self._space = threading.Condition(self._lock)
        self._signal = AsyncSignal()
        self._error: MultifdError | None = None
        self._closed = False
        self._last_generation = 0
        self._pages_submitted = 0  # pages handed to the channels, all rounds

    # ---------------------------------------------------------------- life cycle

    def connect(self, timeout_s: float) -> None:
        """Open every channel and send its hello; then start the channel threads."""
        if self._channels or self._closed:
            raise MultifdError("multifd sender: connect() once, before close()")
        try:
            for i in range(self.channels):
                ch = _Channel(i, self._dial(i, timeout_s))
                ch.stats.bytes = pk.HELLO_SIZE
                self._channels.append(ch)
        except BaseException:
            for ch in self._channels:
                ch.sock.close()
            self._channels.clear()
            raise
        for ch in self._channels:
            ch.thread = threading.Thread(target=self._run, args=(ch,), daemon=True,
                                         name=f"multifd-send-{ch.index}")
            ch.thread.start()

    def _dial(self, index: int, timeout_s: float) -> socket.socket:
        where = f"multifd channel {index}: {self.host}:{self.port}"
        try:
            raw = socket.create_connection((self.host, self.port), timeout=timeout_s)
        except OSError as e:
            raise MultifdError(f"{where}: connect failed: {e}") from None
        sock: socket.socket = raw
        try:
            # A link that silently vanishes (no RST, no FIN) under an idle channel: its
            # keep-alives sit unacknowledged and the kernel aborts the connection after this
            # long, so the next write fails within the heartbeat, not after TCP's ~15 min of
            # retransmissions. A busy channel is caught by the send timeout already.
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT,
                           max(1, int(self.heartbeat_timeout_s * 1000)))
            if self._ssl is not None:  # the TLS socket takes over the fd; handshake here
                sock = self._ssl.wrap_socket(raw, server_hostname=self.host)
            hello = pk.Hello(self.token, index, self.channels, self.page_size, self.ram_pages)
            sock.sendall(pk.encode_hello(hello))
            set_timeouts(sock, self.heartbeat_timeout_s)
            return sock
        except (OSError, ssl.SSLError) as e:
            sock.close()
            raw.close()
            raise MultifdError(f"{where}: {'TLS handshake' if self._ssl else 'hello'} "
                               f"failed: {e}") from None

    def close(self, abort: bool = False, grace_s: float = 2.0) -> None:
        """Stop every channel; never leaks a thread or a socket.

        Normally each channel writes what is queued, then a FIN packet (the target then
        takes its EOF as the end, not a failure). abort=True drops what is queued. A channel
        that cannot finish within grace_s has its socket shut down under it.
        """
        if self._closed:
            return
        self._closed = True
        for ch in self._channels:
            if abort:
                self._drain(ch)
            else:
                ch.queue.put(_Fin())
            ch.queue.put(_STOP)
        deadline = time.monotonic() + grace_s
        for ch in self._channels:
            if ch.thread is not None:
                ch.thread.join(max(0.0, deadline - time.monotonic()))
                if ch.thread.is_alive():
                    shutdown_quietly(ch.sock)
                    ch.thread.join()
            ch.sock.close()
        with self._space:
            self._space.notify_all()
        self._signal.notify()

    def _drain(self, ch: _Channel) -> None:
        with contextlib.suppress(queue.Empty):
            while True:
                self._sent(_queued_bytes(ch.queue.get_nowait()))

    def __enter__(self) -> MultifdSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(abort=exc[0] is not None)

    # ---------------------------------------------------------------- state

    @property
    def error(self) -> MultifdError | None:
        return self._error

    def stats(self) -> list[ChannelStats]:
        return [ChannelStats(**vars(ch.stats)) for ch in self._channels]

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    def _fail(self, ch: _Channel, why: str) -> None:
        with self._lock:
            if self._error is None:
                self._error = MultifdError(f"multifd channel {ch.index}: {why}")
                log.warning("%s", self._error)
            self._space.notify_all()
        self._signal.notify()

    def _check(self) -> None:
        if self._error is not None:
            raise self._error
        if self._closed:
            raise MultifdError("multifd sender is closed")
        if not self._channels:
            raise MultifdError("multifd sender is not connected: call connect() first")

    # ---------------------------------------------------------------- submitting

    def _bursts(self, pages: np.ndarray) -> list[_Burst]:
        idx = np.asarray(pages)
        if idx.ndim != 1 or idx.dtype.kind not in "iu":
            raise ValueError("pages must be a 1-D integer array of page indices")
        if idx.size == 0:
            return []
        if idx.size > 1 and not bool((np.diff(idx.astype(np.int64)) > 0).all()):
            idx = np.unique(idx)  # packets carry strictly increasing indices
        if int(idx[0]) < 0 or int(idx[-1]) >= self.ram_pages:
            raise ValueError(f"pages: index outside RAM (allowed 0..{self.ram_pages - 1})")
        n, per = self.packet_pages, self.packet_pages * self.burst_packets
        return [_Burst([idx[j:j + n] for j in range(i, min(i + per, idx.size), n)],
                       min(per, idx.size - i) * self.page_size)
                for i in range(0, idx.size, per)]

    def _room(self) -> bool:
        return self._error is not None or self._closed or \
            self._queued_bytes < self.queue_limit_bytes

    def _drained(self) -> bool:
        """Down to the low-water mark: a waiter wakes once per half queue, not per packet
        (every wake-up is a context switch, and on a loaded machine a scheduling delay)."""
        return self._error is not None or self._closed or \
            self._queued_bytes <= self.queue_limit_bytes // 2

    def _enqueue(self, item: _Burst | _DeviceStatePacket) -> None:
        # Counting and queueing are one step under the lock, and sync() counts and queues
        # its SYNCs under it too: a submit() from another thread then lands wholly before a
        # sync (counted in its pages_sent, queued ahead of its SYNC) or wholly after it,
        # never counted on one side of the SYNC and sent on the other.
        with self._lock:
            ch = self._channels[self._next]
            self._next = (self._next + 1) % len(self._channels)
            self._queued_bytes += _queued_bytes(item)
            if isinstance(item, _Burst):
                self._pages_submitted += item.nbytes // self.page_size
            ch.queue.put(item)  # a SimpleQueue: never blocks, so the lock is held briefly

    def submit(self, pages: np.ndarray) -> None:
        """Queue these pages for sending; blocks this thread while the queue is full."""
        for burst in self._bursts(pages):
            with self._space:
                if not self._room():
                    while not self._drained():
                        self._space.wait(0.1)
            self._check()
            self._enqueue(burst)

    async def submit_async(self, pages: np.ndarray) -> None:
        """submit() for an event loop: awaits queue space instead of blocking."""
        for burst in self._bursts(pages):
            await self.wait_writable()
            self._check()
            self._enqueue(burst)

    async def submit_device_state(self, ds: pk.DeviceState, data: bytes) -> None:
        """Queue one packet of a device's state on the next channel (QEMU's
        multifd_queue_device_state -> multifd_send); awaits queue space."""
        if len(data) > pk.DEVICE_STATE_MAX_BYTES:
            raise ValueError(f"device state: {len(data)} bytes in one packet, at most "
                             f"{pk.DEVICE_STATE_MAX_BYTES}")
        if not data and not ds.last:
            raise ValueError("device state: only the device's last packet may be empty")
        await self.wait_writable()
        self._check()
        self._enqueue(_DeviceStatePacket(ds, data))

    async def wait_writable(self, timeout_s: float | None = None) -> bool:
        """Return when the queue has room (True), the sender failed (raises), or timeout (False)."""
        ok = self._room() or await self._signal.wait_for(self._drained, timeout_s)
        self._check()
        return ok

    async def sync(self, generation: int, timeout_s: float | None = None) -> int:
        """Every channel writes SYNC(generation) after all packets queued before it; returns
        when all have (QEMU's multifd_send_sync_main), with the pages sent on all channels
        up to this sync (MultifdSync.pages_sent). Generations strictly increase."""
        self._check()
        with self._lock:  # see _enqueue: the count and the SYNCs match the same queue
            if generation <= self._last_generation:
                raise ValueError(f"sync generation {generation} must be > "
                                 f"{self._last_generation}")
            self._last_generation = generation
            pages = self._pages_submitted
            for ch in self._channels:
                ch.queue.put(_Sync(generation))

        def done() -> bool:
            return self._error is not None or all(c.generation >= generation
                                                  for c in self._channels)

        if not await self._signal.wait_for(done, timeout_s):
            late = [c.index for c in self._channels if c.generation < generation]
            raise TimeoutError(f"multifd sync {generation}: channels {late} did not write "
                               f"it within {timeout_s:g} s")
        self._check()
        return pages

    # ---------------------------------------------------------------- channel threads

    def _sent(self, nbytes: int) -> None:
        if not nbytes:
            return
        with self._lock:
            before = self._queued_bytes
            self._queued_bytes -= nbytes
            low = self.queue_limit_bytes // 2
            if before > low >= self._queued_bytes:
                self._space.notify_all()
        self._signal.notify()

    def _run(self, ch: _Channel) -> None:
        name_os_thread(f"multifd-send-{ch.index}")
        try:
            while True:
                try:
                    item = ch.queue.get(timeout=self.keepalive_s)
                except queue.Empty:
                    self._write_control(ch, pk.FLAG_KEEPALIVE)
                    continue
                if isinstance(item, _Burst):
                    self._write_burst(ch, item.packets)
                    self._sent(item.nbytes)
                elif isinstance(item, _DeviceStatePacket):
                    self._write_device_state(ch, item)
                    self._sent(len(item.data))
                elif isinstance(item, _Sync):
                    ch.generation = item.generation
                    self._write_control(ch, pk.FLAG_SYNC)
                    ch.stats.syncs += 1
                    self._signal.notify()
                elif isinstance(item, _Fin):
                    self._write_control(ch, pk.FLAG_FIN)
                else:
                    return
        except Stalled:
            self._fail(ch, f"the target took nothing for {self.heartbeat_timeout_s:g} s: it "
                           "stopped reading or the link is gone (heartbeat timeout)")
        except PeerClosed as e:
            self._fail(ch, str(e))
        except OSError as e:
            if not self._closed:  # else: close() shut the socket under a stuck send
                self._fail(ch, f"connection lost: {e}")
        except Exception as e:  # a bug must fail the migration, not kill the thread silently
            log.exception("multifd channel %d: unexpected error", ch.index)
            self._fail(ch, f"internal error: {e!r}")

    def _header(self, ch: _Channel, block: bytearray, at: int, flags: int, count: int,
                more: int = 0) -> None:
        pk.encode_header_into(block, at, pk.Header(flags, ch.index, ch.seq, ch.generation,
                                                   count, more))
        ch.seq += 1

    def _write_control(self, ch: _Channel, flag: int) -> None:
        block = bytearray(self.layout.block)
        self._header(ch, block, 0, flag, 0)
        n = send_buffers(ch.sock, [memoryview(block)])
        ch.stats.bytes += n
        if flag == pk.FLAG_SYNC:
            ch.stats.packets += 1
        if flag != pk.FLAG_KEEPALIVE:
            _push(ch.sock)

    def _write_burst(self, ch: _Channel, packets: list[np.ndarray]) -> None:
        """The burst's blocks (header + indices, the unused index slots zero), then all its
        pages, in one sendmsg (packet.py: a burst). The headers are filled as one array."""
        size, k, ps, flat = self.layout.block, len(packets), self.page_size, self._flat
        blocks = bytearray(size * k)
        recs = np.frombuffer(blocks, dtype=self.layout.block_dtype, count=k)
        steps = np.arange(k, dtype=np.uint64)
        recs["magic"] = pk.MAGIC
        recs["flags"] = self.layout.index_flag
        recs["channel"] = ch.index
        recs["seq"] = np.uint64(ch.seq) + steps
        recs["generation"] = ch.generation
        recs["more"] = np.uint64(k - 1) - steps
        everything = packets[0] if k == 1 else np.concatenate(packets)
        if everything.size == k * self.packet_pages == k * self.layout.packet_pages:
            recs["count"] = self.packet_pages
            recs["idx"] = everything.reshape(k, self.packet_pages)
        else:
            for j, idx in enumerate(packets):
                recs["count"][j] = idx.size
                recs["idx"][j, :idx.size] = idx
        ch.seq += k
        bufs = [memoryview(blocks)]
        starts, counts = pk.page_runs(everything)
        for s, c in zip(starts.tolist(), counts.tolist(), strict=True):
            bufs.append(flat[s * ps:(s + c) * ps])
        ch.stats.bytes += send_buffers(ch.sock, bufs)
        ch.stats.packets += k
        ch.stats.pages += everything.size

    def _write_device_state(self, ch: _Channel, item: _DeviceStatePacket) -> None:
        block = bytearray(self.layout.block)
        self._header(ch, block, 0, pk.FLAG_DEVICE_STATE, len(item.data))
        pk.encode_device_state_into(block, 0, item.ds)
        bufs = [memoryview(block)]
        if item.data:
            bufs.append(memoryview(item.data))
        n = send_buffers(ch.sock, bufs)
        ch.stats.bytes += n
        ch.stats.device_bytes += n
        ch.stats.packets += 1
        ch.stats.device_packets += 1


def new_token() -> bytes:
    """A fresh session token: the target makes one per migration and hands it to the source."""
    return secrets.token_bytes(pk.TOKEN_BYTES)


def _push(sock: socket.socket) -> None:
    """Send what Nagle holds back, now: a SYNC ends a round and the target waits for it.

    Channels keep Nagle on: TCP_NODELAY on a bulk stream cost about 0.04 CPU s/GiB more on
    the sender here (every short tail pushed as its own segment). Turning it on pushes the
    pending segment at once (Linux), turning it off restores batching.
    """
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
