"""The target side of multifd: one listener per target process, one session per migration.

MultifdListener accepts TCP (or TLS) connections; a connection's hello names a session by
its token, and from then on its thread reads packets straight into that session's guest RAM:
recv_into / recvmsg_into with views of RAM as buffers, one per run of consecutive pages, so
page bytes are never copied in Python and no Python object is made per page (only per
run). Device-state packets (QEMU 10.0's multifd device state) go to the session's
DeviceStateBuffers (reorder.py), where each device's loader takes them in order. A hello
that does not fit (unknown token, channel index out of range or taken, wrong page size or
RAM size, garbage) is refused: a log line, that connection closed, the listener serves on.

Why threads and not asyncio: a blocking recv_into releases the GIL for the whole copy, and
with a blocking socket one MSG_WAITALL call fills a whole run; asyncio's sock_recv_into
returns whatever is in the socket buffer and comes back through the event loop for every
piece. bench/multifd_throughput.py measures both on raw TCP into a numpy buffer: over five
runs on this (shared, 2-core) machine the asyncio receiver reached 0.69-1.09 of the threaded
one with 1 connection and 0.54-1.06 with 2 (medians 0.95 and 0.65), and always cost more
receiver CPU (0.21-0.28 against 0.16-0.20 CPU s/GiB).

Writing into memory here bypasses GuestMemory.store_pages, which does nothing but the copy
(no lock, dirty log or snapshot is involved on the target), so nothing is skipped. The
session must be closed, or every channel must have reached the final sync, before the
target's guest resumes: pages arriving after that would land under a running vCPU.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from migbed.dataplane import packet as pk
from migbed.dataplane._io import (
    AsyncSignal,
    PeerClosed,
    Stalled,
    name_os_thread,
    recv_buffers,
    recv_exact,
    set_timeouts,
    shutdown_quietly,
)
from migbed.dataplane.reorder import DEFAULT_WINDOW, DeviceStateBuffers, DeviceStatePacket
from migbed.dataplane.sender import ChannelStats, MultifdError

log = logging.getLogger("migbed.dataplane")

DEFAULT_HELLO_TIMEOUT_S = 5.0
# Connections accepted but not yet routed by their hello, from one address and in all. A
# source opens all its channels at once (at most pk.MAX_CHANNELS) and sends each hello at
# once; at either limit the oldest such connection (of that address, or of the address
# holding the most) is dropped for the new one, so silent strangers can delay a source's
# channel by a hello timeout at most, never lock it out.
DEFAULT_MAX_PENDING_PER_PEER = pk.MAX_CHANNELS
DEFAULT_MAX_PENDING = 4 * pk.MAX_CHANNELS
REFUSAL_LOG_WINDOW_S = 10.0  # one warning per address per window; the rest are counted
# How many syncs a channel may read past the one the main stream waits for. QEMU's channels
# wait at every SYNC until the main thread reaches it (multifd_recv_sync_main); ours may run
# this far ahead, so a main stream busy loading a device does not stall RAM at once, and
# then wait. It bounds each channel's sync counts (see _record_sync).
SYNC_LEAD = 64


@dataclass
class _Conn:
    """A channel of a session: its socket and progress (written by its thread only)."""

    index: int
    sock: socket.socket
    stats: ChannelStats
    next_seq: int = 0
    generation: int = 0  # the last SYNC received
    fin: bool = False
    # (generation, pages received before it) of every sync the main stream may still ask
    # about (those after MultifdSession._floor), for wait_sync's count
    syncs: collections.deque[tuple[int, int]] = field(default_factory=collections.deque)


class MultifdSession:
    """One migration's channels on the target; created by MultifdListener.register()."""

    def __init__(self, token: bytes, memory: np.ndarray, channels: int, page_size: int,
                 silence_timeout_s: float, listener: MultifdListener | None = None, *,
                 devices: int = 0, device_window: int = DEFAULT_WINDOW) -> None:
        if memory.ndim != 2 or memory.dtype != np.uint8 or not memory.flags.c_contiguous \
                or not memory.flags.writeable:
            raise ValueError("memory must be a writable C-contiguous 2-D uint8 array")
        if memory.shape[1] != page_size:
            raise ValueError(f"page_size {page_size} but memory rows are {memory.shape[1]} bytes")
        if not 1 <= channels <= pk.MAX_CHANNELS:
            raise ValueError(f"channels {channels} is not in [1, {pk.MAX_CHANNELS}]")
        if silence_timeout_s <= 0:
            raise ValueError(f"silence_timeout_s {silence_timeout_s} must be > 0")
        self.token = token
        self.channels = channels
        self.page_size = page_size
        self.ram_pages = int(memory.shape[0])
        self.layout = pk.Layout(page_size, self.ram_pages)
        self.silence_timeout_s = silence_timeout_s
        # Device state on these channels, per device in order (0 devices: none expected).
        self.device_state = DeviceStateBuffers(devices, device_window)
        self._flat = memory.data.cast("B")
        self._listener = listener
        self._lock = threading.Lock()
        # The round barrier of the channel threads (QEMU's multifd_recv_sync_main): see _barrier.
        self._round = threading.Condition(self._lock)
        # The main stream will ask wait_sync about no generation <= this (it asks in order).
        self._floor = 0
        self._conns: dict[int, _Conn] = {}
        self._threads: list[threading.Thread] = []
        self._signal = AsyncSignal()
        self._error: MultifdError | None = None
        self._closed = False

    # ---------------------------------------------------------------- state

    @property
    def error(self) -> MultifdError | None:
        return self._error

    @property
    def pages_received(self) -> int:
        """Pages written into RAM (a page sent in two rounds counts twice)."""
        return sum(c.stats.pages for c in list(self._conns.values()))

    def stats(self) -> list[ChannelStats]:
        conns = dict(self._conns)
        return [ChannelStats(**vars(conns[i].stats)) if i in conns else ChannelStats(i)
                for i in range(self.channels)]

    @property
    def finished(self) -> bool:
        """Every channel has received the source's FIN (it closed them on purpose)."""
        conns = list(self._conns.values())
        return len(conns) == self.channels and all(c.fin for c in conns)

    def synced(self, generation: int) -> bool:
        conns = list(self._conns.values())
        return len(conns) == self.channels and all(c.generation >= generation for c in conns)

    async def wait_sync(self, generation: int, timeout_s: float | None) -> int:
        """Return when every channel has delivered SYNC(generation): all pages sent before
        it are in RAM (QEMU's multifd_recv_sync_main). Returns the pages received on all
        channels before that sync, to compare with the source's MultifdSync.pages_sent.
        Generations are asked in order, as the main stream meets them (asking one lets the
        channels forget the syncs before it). Raises MultifdError or TimeoutError."""
        self._ask(generation)
        ok = await self._signal.wait_for(lambda: self._error is not None or self.synced(generation),
                                         timeout_s)
        if self._error is not None:
            raise self._error
        if not ok:
            raise TimeoutError(f"multifd sync {generation}: not delivered within "
                               f"{timeout_s:g} s ({self._progress()})")
        return self._pages_through(generation)

    def _ask(self, generation: int) -> None:
        """The main stream now waits for `generation`: it will ask about none before it, so
        the channels may drop those syncs' counts and read up to SYNC_LEAD syncs past it."""
        with self._round:
            if generation <= self._floor:
                raise ValueError(f"multifd sync {generation}: syncs up to {self._floor} were "
                                 "already waited for (ask in order)")
            self._floor = generation - 1
            self._round.notify_all()

    def _pages_through(self, generation: int) -> int:
        total = 0
        with self._lock:
            for c in self._conns.values():
                # The channel's first sync at or after `generation` (generations may skip);
                # every sync after _floor is kept, so it is never a later one's count.
                at = [pages for gen, pages in c.syncs if gen >= generation]
                if not at:
                    raise MultifdError(f"multifd sync {generation}: channel {c.index} has "
                                       f"no count for it (last sync {c.generation})")
                total += at[0]
        return total

    def _progress(self) -> str:
        conns = dict(self._conns)
        return ", ".join(f"channel {i}: " + (f"at sync {conns[i].generation}" if i in conns
                                             else "not connected")
                         for i in range(self.channels))

    def _fail(self, why: str) -> None:
        with self._lock:
            first = self._error is None and not self._closed
            if first:
                self._error = MultifdError(why)
            conns = list(self._conns.values())
            self._round.notify_all()
        if first:
            self.device_state.fail(MultifdError(why))
            log.warning("multifd session: %s", why)
            for c in conns:  # one channel lost fails the migration: stop the others too
                shutdown_quietly(c.sock)
        self._signal.notify()

    def close(self) -> None:
        """Stop every channel of this session and join their threads (idempotent)."""
        with self._lock:
            self._closed = True
            conns = list(self._conns.values())
            threads = list(self._threads)
            self._round.notify_all()
        self.device_state.fail(MultifdError("multifd session closed"))
        for c in conns:
            shutdown_quietly(c.sock)
        me = threading.current_thread()
        for t in threads:
            if t is not me:
                t.join()
        if self._listener is not None:
            self._listener._forget(self.token, self)
        self._signal.notify()

    # ---------------------------------------------------------------- a channel arrives

    def _attach(self, hello: pk.Hello, sock: socket.socket) -> _Conn:
        if hello.page_size != self.page_size:
            raise pk.PacketError(f"hello: page_size {hello.page_size}, this session's is "
                                 f"{self.page_size}")
        if hello.ram_pages != self.ram_pages:
            raise pk.PacketError(f"hello: ram_pages {hello.ram_pages}, this session's guest "
                                 f"has {self.ram_pages}")
        if hello.channels != self.channels:
            raise pk.PacketError(f"hello: channels {hello.channels}, this session expects "
                                 f"{self.channels}")
        with self._lock:
            if self._closed or self._error is not None:
                raise pk.PacketError("hello: this session is closed or has failed")
            if hello.channel in self._conns:
                raise pk.PacketError(f"hello: channel {hello.channel} is already connected")
            conn = _Conn(hello.channel, sock, ChannelStats(hello.channel, bytes=pk.HELLO_SIZE))
            self._conns[hello.channel] = conn
            self._threads.append(threading.current_thread())
        return conn

    def _serve(self, conn: _Conn) -> None:
        """The channel's thread, after its hello: read packets until FIN + EOF or failure."""
        where = f"channel {conn.index}"
        name_os_thread(f"multifd-recv-{conn.index}")
        try:
            set_timeouts(conn.sock, self.silence_timeout_s)
            self._read_packets(conn)
        except PeerClosed:
            if not conn.fin:
                self._fail(f"{where} dropped (connection closed) before the final sync "
                           f"(last sync {conn.generation})")
        except Stalled:
            self._fail(f"{where} silent for {self.silence_timeout_s:g} s (no packet, "
                       "not even a keep-alive)")
        except pk.PacketError as e:
            self._fail(f"{where}: {e}")
        except OSError as e:
            self._fail(f"{where}: connection lost: {e}")
        except Exception as e:  # a bug must fail the migration, not kill the thread silently
            log.exception("multifd %s: unexpected error", where)
            self._fail(f"{where}: internal error: {e!r}")
        self._signal.notify()

    async def next_device_state(self, device: int, timeout_s: float | None) -> DeviceStatePacket:
        """The device's next state packet, in order (its loader's read); raises MultifdError
        if the session failed or closed, TimeoutError."""
        return await self.device_state.next(device, timeout_s)

    def _read_packets(self, conn: _Conn) -> None:
        """Blocks and payloads until FIN + EOF or failure. A burst of RAM packets takes two
        reads: its other blocks, then every page of it with the next block (packet.py)."""
        sock, layout = conn.sock, self.layout
        buf = bytearray(pk.MAX_BURST_PACKETS * layout.block)
        view = memoryview(buf)
        first = view[:layout.block]  # every packet's (or burst's) first block lands here
        recv_exact(sock, first)
        while True:
            h = pk.decode_header(first, layout)
            self._check_order(conn, h)
            if not h.flags & pk.NOT_RAM:
                self._read_burst(conn, buf, h)
                continue  # the next first block came with the pages
            conn.next_seq += 1
            conn.stats.bytes += layout.block
            if h.flags & pk.FLAG_DEVICE_STATE:
                self._read_device_state(conn, buf, h)
            elif h.flags & pk.FLAG_SYNC:
                conn.stats.packets += 1
                conn.stats.syncs += 1
                self._record_sync(conn, h.generation)
                self._signal.notify()
                self._barrier(conn, h.generation)
                self._wait_for_main(h.generation)
            elif h.flags & pk.FLAG_FIN:
                conn.fin = True
            recv_exact(sock, first)

    def _read_burst(self, conn: _Conn, buf: bytearray, h: pk.Header) -> None:
        """A burst's pages straight into guest RAM, and the block that follows them."""
        layout, ps, flat = self.layout, self.page_size, self._flat
        k, size = h.more + 1, layout.block
        view = memoryview(buf)
        if k > 1:
            recv_exact(conn.sock, view[size:k * size])
        recs = np.frombuffer(buf, dtype=layout.block_dtype, count=k)
        if k > 1 and not pk.burst_ok(recs[1:], pk.Header(h.flags, h.channel, h.seq + 1,
                                                           h.generation, 0), layout):
            self._bad_burst(conn, view, h)
        idx = pk.burst_indices(recs, layout)
        starts, counts = pk.checked_page_runs(idx, self.ram_pages)
        bufs = [flat[s * ps:(s + c) * ps] for s, c in zip(starts.tolist(), counts.tolist(), strict=True)]
        bufs.append(view[:size])  # the next packet's block
        conn.next_seq += k
        recv_buffers(conn.sock, bufs)
        conn.stats.bytes += k * size + idx.size * ps
        conn.stats.pages += idx.size
        conn.stats.packets += k

    def _bad_burst(self, conn: _Conn, view: memoryview, h: pk.Header) -> None:
        """Name what is wrong with a burst's later blocks (one at a time, slowly: only on the
        way to failing the channel)."""
        size = self.layout.block
        for j in range(1, h.more + 1):
            hj = pk.decode_header(view[j * size:(j + 1) * size], self.layout)
            if hj.flags & pk.NOT_RAM:
                raise pk.PacketError(f"packet: block {j} of a burst of {h.more + 1} RAM packets "
                                     f"has flags 0x{hj.flags:x}")
            if hj.more != h.more - j:
                raise pk.PacketError(f"packet: block {j} of a burst of {h.more + 1} says more "
                                     f"{hj.more}, expected {h.more - j}")
            conn.next_seq = h.seq + j
            self._check_order(conn, hj)
        raise pk.PacketError("packet: a burst's blocks disagree with its first")

    def _read_device_state(self, conn: _Conn, block: bytearray, h: pk.Header) -> None:
        ds = pk.decode_device_state(block, h)
        data = bytearray(h.count)
        if h.count:
            recv_exact(conn.sock, memoryview(data))
        conn.stats.bytes += h.count
        conn.stats.device_bytes += self.layout.block + h.count
        conn.stats.packets += 1
        conn.stats.device_packets += 1
        # The buffer itself (no copy): nothing else holds it.
        self.device_state.put(ds, data, lambda: self._closed or self._error is not None)

    def _record_sync(self, conn: _Conn, generation: int) -> None:
        """The pages this channel received before SYNC(generation), for wait_sync; the counts
        of syncs the main stream has gone past are dropped (it asks in order)."""
        with self._lock:
            conn.syncs.append((generation, conn.stats.pages))
            conn.generation = generation
            while conn.syncs and conn.syncs[0][0] <= self._floor:
                conn.syncs.popleft()

    def _barrier(self, conn: _Conn, generation: int) -> None:
        """Read no page of the next round until every channel has delivered this round's
        SYNC (QEMU: the channels wait at multifd_recv_sync_main). A page sent again in the
        next round on another channel can then never be overwritten by its older copy still
        on its way here on this one; and no channel counts the next round's pages early."""
        deadline = time.monotonic() + self.silence_timeout_s
        with self._round:
            self._round.notify_all()
            while self._error is None and not self._closed and not self.synced(generation):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise pk.PacketError(
                        f"sync {generation}: the other channels did not deliver it within "
                        f"{self.silence_timeout_s:g} s ({self._progress()})")
                self._round.wait(min(left, 0.25))

    def _wait_for_main(self, generation: int) -> None:
        """Read no further than SYNC_LEAD syncs past the one the main stream waits for. A
        channel that waits here has delivered that one already, so this never blocks the
        main stream's wait_sync; and a channel's counts stay bounded. No deadline of its
        own: the main stream may be busy loading a device for longer than the heartbeat, and
        its own deadlines (or a close) end the session."""
        with self._round:
            while self._error is None and not self._closed \
                    and generation - self._floor >= SYNC_LEAD:
                self._round.wait()

    @staticmethod
    def _check_order(conn: _Conn, h: pk.Header) -> None:
        if conn.fin:
            raise pk.PacketError("packet after FIN (the source closed this channel)")
        if h.channel != conn.index:
            raise pk.PacketError(f"packet: channel {h.channel} on channel {conn.index}'s connection")
        if h.seq != conn.next_seq:
            raise pk.PacketError(f"packet: seq {h.seq}, expected {conn.next_seq} (lost or "
                                 "reordered packet)")
        if h.flags & pk.FLAG_SYNC:
            if h.generation <= conn.generation:
                raise pk.PacketError(f"packet: SYNC generation {h.generation} must be > the "
                                     f"last one, {conn.generation}")
        elif h.generation != conn.generation:
            raise pk.PacketError(f"packet: generation {h.generation} on a page packet, the "
                                 f"channel's last sync was {conn.generation}")


class MultifdListener:
    """The target's multifd port: routes each connection to its session by the hello's token."""

    def __init__(self, host: str, port: int = 0, ssl_context: ssl.SSLContext | None = None, *,
                 hello_timeout_s: float = DEFAULT_HELLO_TIMEOUT_S,
                 max_pending: int = DEFAULT_MAX_PENDING,
                 max_pending_per_peer: int = DEFAULT_MAX_PENDING_PER_PEER) -> None:
        self._ssl = ssl_context
        self.hello_timeout_s = hello_timeout_s
        self.max_pending = max_pending
        self.max_pending_per_peer = max_pending_per_peer
        self._refusal_log = RefusalLog(REFUSAL_LOG_WINDOW_S)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET  # "::1" too
        self._sock = socket.create_server((host, port), family=family, backlog=64)
        self.host = host
        self.port: int = self._sock.getsockname()[1]
        self._lock = threading.Lock()
        self._sessions: dict[bytes, MultifdSession] = {}
        self._pending: set[_Pending] = set()
        self._threads: set[threading.Thread] = set()
        self.refusals: collections.deque[str] = collections.deque(maxlen=100)
        self._closed = False
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True,
                                          name=f"multifd-listen-{self.port}")
        self._acceptor.start()

    # ---------------------------------------------------------------- sessions

    def register(self, token: bytes, memory: np.ndarray, channels: int, page_size: int,
                 silence_timeout_s: float, *, devices: int = 0,
                 device_window: int = DEFAULT_WINDOW) -> MultifdSession:
        """A session for one migration; `devices` that send their state on the channels
        (QEMU 10.0's multifd device state), each buffering at most `device_window` packets."""
        if len(token) != pk.TOKEN_BYTES:
            raise ValueError(f"token must be {pk.TOKEN_BYTES} bytes, got {len(token)}")
        session = MultifdSession(token, memory, channels, page_size, silence_timeout_s, self,
                                 devices=devices, device_window=device_window)
        with self._lock:
            if self._closed:
                raise MultifdError("multifd listener is closed")
            if token in self._sessions:
                raise ValueError("a session with this token is already registered")
            self._sessions[token] = session
        return session

    def unregister(self, token: bytes) -> None:
        with self._lock:
            session = self._sessions.get(token)
        if session is not None:
            session.close()

    def _forget(self, token: bytes, session: MultifdSession) -> None:
        with self._lock:
            if self._sessions.get(token) is session:
                del self._sessions[token]

    @property
    def sessions(self) -> int:
        return len(self._sessions)

    def close(self) -> None:
        """Stop accepting, close every session and pending connection, join every thread."""
        with self._lock:
            self._closed = True
            sessions = list(self._sessions.values())
            pending = list(self._pending)
        shutdown_quietly(self._sock)
        self._sock.close()
        self._acceptor.join()
        for s in sessions:
            s.close()
        for p in pending:
            shutdown_quietly(p.sock)
        with self._lock:
            threads = list(self._threads)
        for t in threads:
            t.join()

    def __enter__(self) -> MultifdListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- connections

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, addr = self._sock.accept()
            except OSError:
                if self._closed:
                    return
                continue  # ECONNABORTED and the like: keep serving
            pending = _Pending(conn, _host(addr))
            with self._lock:
                if self._closed:
                    conn.close()
                    return
                admit, victim = self._make_room(pending.host)
                if admit:
                    self._pending.add(pending)
            if not admit:  # every slot holds a connection whose hello is arriving
                self._refuse(addr, conn, f"{self.max_pending_per_peer} connections from this "
                             "address (or all slots) are reading their hello; try again")
                continue
            if victim is not None:  # its thread, blocked on the hello, sees the close
                shutdown_quietly(victim.sock)
            t = threading.Thread(target=self._connection, args=(pending, addr), daemon=True,
                                 name=f"multifd-recv-{addr[1]}")
            with self._lock:
                self._threads.add(t)
            t.start()

    def _make_room(self, host: str) -> tuple[bool, _Pending | None]:
        """(Under the lock.) Whether one more connection from `host` may wait for its hello,
        and the pending one dropped for it: its own oldest at the per-address limit, else
        the oldest of the address holding the most when every slot is taken (see _victim);
        none while there is room. Not admitted when no slot can be freed."""
        by_host: dict[str, list[_Pending]] = collections.defaultdict(list)
        for p in self._pending:
            if not p.evicted:
                by_host[p.host].append(p)
        if len(by_host[host]) >= self.max_pending_per_peer:
            crowd, why = by_host[host], (f"{self.max_pending_per_peer} connections from this "
                                         "address waiting for their hello; the oldest made room")
        elif sum(map(len, by_host.values())) >= self.max_pending:
            crowd = max(by_host.values(), key=len)
            why = (f"{self.max_pending} connections waiting for their hello; the oldest of the "
                   "address holding the most made room")
        else:
            return True, None
        victim = _victim(crowd)
        if victim is None:
            return False, None
        victim.evicted = why
        return True, victim

    def _refuse(self, addr: object, conn: socket.socket, why: str) -> None:
        line = f"multifd: refused connection from {_peer(addr)}: {why}"
        self.refusals.append(line)
        shown = self._refusal_log.note(_host(addr), line, time.monotonic())
        if shown:
            log.warning("%s", shown)
        with contextlib.suppress(OSError):
            conn.close()

    def _connection(self, pending: _Pending, addr: object) -> None:
        try:
            session, conn = self._route(pending, addr)
            if session is not None and conn is not None:
                session._serve(conn)
        finally:
            with self._lock:
                self._pending.discard(pending)
                self._threads.discard(threading.current_thread())
            with contextlib.suppress(OSError):
                pending.sock.close()

    def _route(self, pending: _Pending, addr: object) -> tuple[MultifdSession | None, _Conn | None]:
        """Read the hello and attach the connection to its session, or refuse it."""
        try:
            set_timeouts(pending.sock, self.hello_timeout_s, tls=self._ssl is not None)
            if self._ssl is not None:  # the TLS socket takes over the fd
                pending.sock = self._ssl.wrap_socket(pending.sock, server_side=True)
            buf = memoryview(bytearray(pk.HELLO_SIZE))
            recv_exact(pending.sock, buf)
            hello = pk.decode_hello(buf)
            with self._lock:
                session = self._sessions.get(hello.token)
                self._pending.discard(pending)
            if session is None:
                raise pk.PacketError("hello: unknown session token (no migration registered "
                                     "it on this target, or it has finished)")
            return session, session._attach(hello, pending.sock)
        except (Stalled, TimeoutError):  # TimeoutError: a TLS handshake that never came
            self._refuse(addr, pending.sock, f"no hello within {self.hello_timeout_s:g} s")
        except PeerClosed as e:
            self._refuse(addr, pending.sock, pending.evicted or f"closed before its hello ({e})")
        except pk.PacketError as e:
            self._refuse(addr, pending.sock, str(e))
        except ssl.SSLError as e:
            self._refuse(addr, pending.sock, f"TLS handshake failed: {e.reason or e}")
        except OSError as e:
            self._refuse(addr, pending.sock, pending.evicted or f"{e}")
        return None, None


class _Pending:
    """A connection whose hello has not routed it yet (its socket may become a TLS socket)."""

    def __init__(self, sock: socket.socket, host: str) -> None:
        self.sock = sock
        self.host = host  # the peer's address, without the port
        self.since = time.monotonic()
        self.evicted = ""  # why it was dropped to make room, once it was


HELLO_GRACE_S = 0.5  # a connection whose hello is arriving is dropped only after this


def _victim(crowd: list[_Pending]) -> _Pending | None:
    """The connection to drop: the oldest silent one (nothing received: a source sends its
    hello at once, so its channels are never silent for long); else the oldest whose hello
    has been arriving for HELLO_GRACE_S (a stranger sending it byte by byte); else none."""
    now = time.monotonic()
    oldest_first = sorted(crowd, key=lambda p: p.since)
    for p in oldest_first:
        if not _has_bytes(p.sock):
            return p
    return next((p for p in oldest_first if now - p.since > HELLO_GRACE_S), None)


def _has_bytes(sock: socket.socket) -> bool:
    """Bytes (or an end) are waiting on the socket: its peer is talking."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):  # closed meanwhile
        return False
    return bool(readable)


class RefusalLog:
    """Refusals of one address, logged at most once per window: the first as it comes, the
    ones after it counted and reported with the first refusal of a later window. A flood of
    silent connections costs a log line per window, not one per connection."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._since: dict[str, float] = {}  # host -> when its window began
        self._held: dict[str, int] = {}  # host -> refusals not logged in its window

    def note(self, host: str, line: str, now: float) -> str:
        """The line to log for this refusal ("" to log nothing now)."""
        began = self._since.get(host)
        if began is not None and now - began < self.window_s:
            self._held[host] = self._held.get(host, 0) + 1
            return ""
        held = self._held.pop(host, 0)
        self._since[host] = now
        if len(self._since) > 4096:  # many addresses: forget the oldest windows
            for old in sorted(self._since, key=self._since.__getitem__)[:2048]:
                self._since.pop(old, None)
                self._held.pop(old, None)
        if held and began is not None:
            return (f"{line} (and {held} more refused from {host} in the "
                    f"{now - began:.0f} s before)")
        return line


def _host(addr: object) -> str:
    return str(addr[0]) if isinstance(addr, tuple) and addr else str(addr)


def _peer(addr: object) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        return f"{addr[0]}:{addr[1]}"
    return str(addr)
