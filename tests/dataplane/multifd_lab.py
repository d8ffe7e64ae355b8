"""Helpers of the multifd tests: polling, a complete good transfer, hand-made channels."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable

import numpy as np

from migbed.dataplane import packet as pk
from migbed.dataplane.receiver import MultifdListener
from migbed.dataplane.sender import MultifdSender, new_token

PAGE = 4096


def wait_until(cond: Callable[[], object], timeout_s: float, step_s: float = 0.01) -> float:
    """Poll cond() until true; the seconds it took. Raises AssertionError at timeout."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout_s:
            raise AssertionError(f"condition not met within {timeout_s} s")
        time.sleep(step_s)
    return time.monotonic() - t0


def good_transfer(listener: MultifdListener, ram: np.ndarray, channels: int = 2,
                  **sender_kw: object) -> None:
    """A whole RAM image over `listener`; asserts the copy is exact and the session ends clean."""
    dst = np.zeros_like(ram)
    token = new_token()
    session = listener.register(token, dst, channels, ram.shape[1], silence_timeout_s=2.0)
    sender = MultifdSender("127.0.0.1", listener.port, token, channels, ram, **sender_kw)  # type: ignore[arg-type]
    try:
        sender.connect(2.0)

        async def run() -> None:
            await sender.submit_async(np.arange(ram.shape[0]))
            await sender.sync(1)
            await session.wait_sync(1, 5.0)

        asyncio.run(run())
        sender.close()
        wait_until(lambda: session.finished, 2.0)
        assert session.error is None and sender.error is None
        assert np.array_equal(dst, ram)
        assert session.pages_received == ram.shape[0]
    finally:
        sender.close(abort=True)
        listener.unregister(token)
    assert listener.sessions == 0


def dial(listener: MultifdListener) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", listener.port), timeout=2.0)
    return s


def hello(token: bytes, channel: int = 0, channels: int = 1, page_size: int = PAGE,
          ram_pages: int = 16) -> bytes:
    return pk.encode_hello(pk.Hello(token, channel, channels, page_size, ram_pages))


def page_packet(channel: int, seq: int, idx: list[int], generation: int = 0,
                page_size: int = PAGE, ram_pages: int = 16) -> bytes:
    a = np.array(idx, dtype=pk.INDEX32)
    return pk.encode_packet(pk.Layout(page_size, ram_pages),
                            pk.Header(0, channel, seq, generation, a.size), a,
                            bytes(a.size * page_size))


def control_packet(flags: int, channel: int, seq: int, generation: int = 0,
                   page_size: int = PAGE, ram_pages: int = 16) -> bytes:
    return pk.encode_packet(pk.Layout(page_size, ram_pages),
                            pk.Header(flags, channel, seq, generation, 0))


def peer_closed(s: socket.socket, timeout_s: float = 2.0) -> bool:
    """True when the other end closed `s` (EOF or reset) within the timeout."""
    s.settimeout(timeout_s)
    try:
        while True:
            if s.recv(4096) == b"":
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def serve_one_session(host: str, token_hex: str, pages: int, channels: int,
                      silence_s: float) -> None:
    """A target in its own process (maybe in a network namespace): prints its port, then the
    session's error when one comes; ends when stdin closes."""
    import sys
    import threading

    ram = np.zeros((pages, PAGE), np.uint8)
    with MultifdListener(host) as listener:
        session = listener.register(bytes.fromhex(token_hex), ram, channels, PAGE, silence_s)
        print(f"port {listener.port}", flush=True)
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                if session.error is not None:
                    print(f"error {session.error}", flush=True)
                    return
                time.sleep(0.01)

        t = threading.Thread(target=watch)
        t.start()
        sys.stdin.read()
        done.set()
        t.join()


if __name__ == "__main__":
    import sys
    serve_one_session(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]),
                      float(sys.argv[5]))
