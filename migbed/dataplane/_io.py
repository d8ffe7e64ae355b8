"""Socket plumbing shared by the sender and the receiver: kernel timeouts, scatter/gather
I/O that survives partial transfers, and waking asyncio waiters from channel threads.

Channel sockets are *blocking* with the timeout in the kernel (SO_SNDTIMEO/SO_RCVTIMEO), not
Python's settimeout(): Python's timeout makes the fd non-blocking and polls before every call,
so a 1 MiB packet would cost several poll+send rounds. With a blocking fd one sendmsg moves a
whole packet and one recv_into(MSG_WAITALL) fills a whole run. The kernel timeout bounds one
call's *inactivity*: a call that made progress returns a short count and is simply continued;
a call that made none raises, and that is the stall/silence we report.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import socket
import ssl
import struct
import threading
from collections.abc import Callable

IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024

# What a blocking socket with a kernel timeout raises when the timeout passes with no
# progress (EAGAIN), and what a TLS socket with a Python timeout raises.
STALLED = (BlockingIOError, TimeoutError)


_PR_SET_NAME = 15
_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def name_os_thread(name: str) -> None:
    """Give the calling thread `name` in the kernel (top -H, perf, /proc/PID/task/TID/comm show
    it; Python 3.11 names only its own Thread objects). Best effort: at most 15 bytes."""
    with contextlib.suppress(OSError, AttributeError):
        _LIBC.prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)


class PeerClosed(ConnectionError):
    """EOF: the peer closed the connection."""


class Stalled(TimeoutError):
    """No byte moved for the whole timeout."""


def _stalled(e: OSError) -> Stalled:
    """EAGAIN from the kernel timeout, Python's timeout (TLS), or ETIMEDOUT when the kernel
    aborted the connection (TCP_USER_TIMEOUT: data, or zero-window probes, unacknowledged):
    either way nothing moved for the whole timeout."""
    return Stalled(str(e) or "timed out")


def set_timeouts(sock: socket.socket, timeout_s: float, tls: bool | None = None) -> None:
    """Bound every send and receive on `sock` by timeout_s of inactivity.

    Plain TCP: a blocking fd with the timeout in the kernel (see above). TLS: Python's own
    timeout, because the ssl module retries a blocking SSL_read/SSL_write that the kernel
    timed out (WANT_READ on a blocking socket), which would wait forever; with a Python
    timeout it polls and raises TimeoutError. `tls` says what `sock` will be wrapped into.
    """
    if is_tls(sock) if tls is None else tls:
        sock.settimeout(timeout_s)
    else:
        set_kernel_timeouts(sock, timeout_s)


def set_kernel_timeouts(sock: socket.socket, timeout_s: float) -> None:
    sock.settimeout(None)  # blocking fd
    sec = int(timeout_s)
    tv = struct.pack("ll", sec, int((timeout_s - sec) * 1e6))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)


def is_tls(sock: socket.socket) -> bool:
    return isinstance(sock, ssl.SSLSocket)


def send_buffers(sock: socket.socket, bufs: list[memoryview]) -> int:
    """Write every buffer (1-D byte views), in order; the byte count. Raises Stalled."""
    total = sum(b.nbytes for b in bufs)
    try:
        if is_tls(sock):  # SSLSocket has no sendmsg: one record stream per buffer
            for b in bufs:
                sock.sendall(b)
            return total
        i = 0
        while i < len(bufs):
            n = sock.sendmsg(bufs[i:i + IOV_MAX])
            while n:
                head = bufs[i].nbytes
                if n >= head:
                    n -= head
                    i += 1
                else:  # a short write: continue inside this buffer
                    bufs[i] = bufs[i][n:]
                    n = 0
            while i < len(bufs) and bufs[i].nbytes == 0:
                i += 1
    except STALLED as e:
        raise _stalled(e) from None
    return total


def recv_exact(sock: socket.socket, view: memoryview) -> None:
    """Fill `view` completely. Raises PeerClosed at EOF, Stalled on silence."""
    flags = 0 if is_tls(sock) else socket.MSG_WAITALL
    got, want = 0, view.nbytes
    while got < want:
        try:
            n = sock.recv_into(view[got:], want - got, flags)
        except STALLED as e:
            raise _stalled(e) from None
        if n == 0:
            raise PeerClosed(f"connection closed by the peer after {got} of {want} bytes")
        got += n


def recv_buffers(sock: socket.socket, bufs: list[memoryview]) -> None:
    """Fill every buffer in order: one recvmsg_into per IOV_MAX buffers on plain TCP."""
    if is_tls(sock):  # no recvmsg_into on SSLSocket
        for b in bufs:
            recv_exact(sock, b)
        return
    i = 0
    while i < len(bufs):
        batch = bufs[i:i + IOV_MAX]
        want = sum(b.nbytes for b in batch)
        try:
            n = sock.recvmsg_into(batch, 0, socket.MSG_WAITALL)[0]
        except STALLED as e:
            raise _stalled(e) from None
        if n == 0:
            raise PeerClosed(f"connection closed by the peer with {want} bytes of pages due")
        while n:
            head = bufs[i].nbytes
            if n >= head:
                n -= head
                i += 1
            else:
                bufs[i] = bufs[i][n:]
                n = 0


def shutdown_quietly(sock: socket.socket) -> None:
    """Wake a thread blocked on `sock` (it sees EOF or an error). The base class's shutdown:
    SSLSocket.shutdown would drop the TLS object under the feet of a thread reading it."""
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class AsyncSignal:
    """Wakes asyncio waiters from any thread when their condition holds.

    A waiter's predicate is checked under the lock when it starts waiting and again on every
    notify(), and notify() is called after the state change, so no wake-up is lost.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None],
                                  Callable[[], bool]]] = []

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float | None) -> bool:
        """True when predicate() held, False on timeout."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        entry = (loop, fut, predicate)
        with self._lock:
            if predicate():
                return True
            self._waiters.append(entry)
        try:
            await asyncio.wait_for(fut, timeout_s)
            return True
        except TimeoutError:
            return predicate()
        finally:
            with self._lock, contextlib.suppress(ValueError):
                self._waiters.remove(entry)

    def notify(self) -> None:
        if not self._waiters:  # the common case on the hot path: nobody waits
            return
        with self._lock:
            ready = [w for w in self._waiters if w[2]()]
            for w in ready:
                self._waiters.remove(w)
        for loop, fut, _ in ready:
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody to wake
                loop.call_soon_threadsafe(_resolve, fut)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
