"""Moving RAM over multifd channels: exact copies, syncs per round, TLS, bounded queues."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from multifd_lab import PAGE, good_transfer, wait_until

from migbed.dataplane.receiver import MultifdListener
from migbed.dataplane.sender import MultifdError, MultifdSender, new_token
from migbed.dataplane.tls import client_context


@pytest.mark.parametrize("channels", [1, 2, 4])
def test_rounds_with_syncs_give_an_exact_copy(listener: MultifdListener, ram64: np.ndarray,
                                              channels: int) -> None:
    src = ram64.copy()
    dst = np.zeros_like(src)
    token = new_token()
    session = listener.register(token, dst, channels, PAGE, silence_timeout_s=2.0)
    sender = MultifdSender("127.0.0.1", listener.port, token, channels, src,
                           packet_bytes=256 << 10)
    rng = np.random.default_rng(channels)
    sent = 0
    try:
        sender.connect(2.0)

        async def round_(gen: int, pages: np.ndarray) -> None:
            await sender.submit_async(pages)
            sent = await sender.sync(gen)
            assert await session.wait_sync(gen, 5.0) == sent  # MultifdSync.pages_sent check

        async def migrate() -> int:
            n = src.shape[0]
            await round_(1, np.arange(n))  # the bulk stage: every page, one run per packet
            dirty = np.unique(rng.integers(0, n, 3000))  # scattered runs
            src[dirty] = rng.integers(0, 256, size=(dirty.size, PAGE), dtype=np.uint8)
            await round_(2, dirty)
            again = rng.integers(0, n, 500)  # unsorted, with duplicates: sent once each
            src[again] = 9
            await round_(3, again)
            return n + dirty.size + np.unique(again).size

        sent = asyncio.run(migrate())
        assert np.array_equal(dst, src)
        assert session.pages_received == sent
        sender.close()
        wait_until(lambda: session.finished, 2.0)
        # Both ends count the same bytes, packets, pages and syncs on every channel.
        assert sender.stats() == session.stats()
        assert all(s.syncs == 3 and s.pages > 0 for s in session.stats())
        assert sum(s.pages for s in sender.stats()) == sent
        assert session.error is None and sender.error is None
    finally:
        sender.close(abort=True)
        listener.unregister(token)


def test_each_round_lands_before_its_sync(listener: MultifdListener, ram64: np.ndarray) -> None:
    """wait_sync(g) returns only when the pages queued before sync(g) are in target RAM."""
    src = ram64[:4096]
    dst = np.zeros_like(src)
    token = new_token()
    session = listener.register(token, dst, 2, PAGE, silence_timeout_s=2.0)
    with MultifdSender("127.0.0.1", listener.port, token, 2, src) as sender:
        sender.connect(2.0)

        async def run() -> None:
            for gen, part in enumerate(np.array_split(np.arange(src.shape[0]), 4), start=1):
                await sender.submit_async(part)
                await sender.sync(gen)
                await session.wait_sync(gen, 5.0)
                assert np.array_equal(dst[: part[-1] + 1], src[: part[-1] + 1])
            with pytest.raises(ValueError, match="sync generation 2 must be > 4"):
                await sender.sync(2)

        asyncio.run(run())
    listener.unregister(token)


def test_tls_pair(tls_listener: MultifdListener, tls_dirs: tuple[Path, Path],
                  ram64: np.ndarray) -> None:
    good_transfer(tls_listener, ram64[:8192], channels=2,
                  ssl_context=client_context(tls_dirs[0]))


def test_tls_refuses_another_labs_certificate_and_plaintext(
        tls_listener: MultifdListener, tls_dirs: tuple[Path, Path], ram64: np.ndarray) -> None:
    src = ram64[:16]
    token = new_token()
    tls_listener.register(token, np.zeros_like(src), 1, PAGE, silence_timeout_s=2.0)
    stranger = MultifdSender("127.0.0.1", tls_listener.port, token, 1, src,
                             ssl_context=client_context(tls_dirs[1]))
    with pytest.raises(MultifdError, match=r"multifd channel 0: 127\.0\.0\.1:\d+: TLS handshake failed"):
        stranger.connect(2.0)
    wait_until(lambda: any("TLS handshake failed" in r for r in tls_listener.refusals), 2.0)
    plain = socket.create_connection(("127.0.0.1", tls_listener.port))
    plain.sendall(b"\x00" * 40)
    wait_until(lambda: len(tls_listener.refusals) >= 2, 2.0)
    plain.close()
    tls_listener.unregister(token)
    good_transfer(tls_listener, src, channels=1, ssl_context=client_context(tls_dirs[0]))


def test_the_queue_is_bounded_and_awaitable(no_leaks: None, ram64: np.ndarray) -> None:
    """Against a peer that reads nothing, submit_async stops at the bound and waits."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        sender = MultifdSender("127.0.0.1", port, new_token(), 2, ram64, heartbeat_timeout_s=5.0,
                               packet_bytes=256 << 10, burst_bytes=256 << 10,
                               queue_bursts=2)
        sender.connect(2.0)
        conns = [server.accept()[0] for _ in range(2)]
        try:
            async def run() -> None:
                # Kernel socket buffers take a few MiB first; then the queue fills and stays.
                deadline = time.monotonic() + 5.0
                while True:
                    try:
                        await asyncio.wait_for(sender.submit_async(np.arange(ram64.shape[0])), 0.3)
                    except TimeoutError:
                        if not await sender.wait_writable(timeout_s=0.2):
                            break
                    assert time.monotonic() < deadline, "the queue never filled"

            asyncio.run(run())
            packet = 256 << 10
            assert 0 < sender.queued_bytes <= sender.queue_limit_bytes + packet
            assert sender.error is None
        finally:
            sender.close(abort=True, grace_s=0.2)
            for c in conns:
                c.close()


def test_sync_counts_with_idle_channels_and_skipped_generations(
        listener: MultifdListener, ram64: np.ndarray) -> None:
    """A round of one page leaves three of four channels without data; generations may skip
    (a generation never synced is met by the next sync): the counts of pages before each
    sync still agree on both sides."""
    src = ram64[:64]
    dst = np.zeros_like(src)
    token = new_token()
    session = listener.register(token, dst, 4, PAGE, silence_timeout_s=2.0)
    with MultifdSender("127.0.0.1", listener.port, token, 4, src) as sender:
        sender.connect(2.0)

        async def run() -> None:
            for gen, pages in ((1, [7]), (5, []), (6, [1, 2, 3, 60])):
                await sender.submit_async(np.array(pages, dtype=np.int64))
                sent = await sender.sync(gen)
                if gen == 5:
                    assert await session.wait_sync(3, 1.0) == 1  # generation 3: met by sync 5
                assert await session.wait_sync(gen, 5.0) == sent
            assert sent == 5
            with pytest.raises(ValueError, match="syncs up to 5 were already waited for"):
                await session.wait_sync(4, 1.0)  # the main stream asks in order

        asyncio.run(run())
        assert np.array_equal(dst[[1, 2, 3, 7, 60]], src[[1, 2, 3, 7, 60]])
        assert not dst[0].any()
    listener.unregister(token)


def test_ipv6_loopback(no_leaks: None, ram64: np.ndarray) -> None:
    with MultifdListener("::1", hello_timeout_s=0.5) as lst:
        src = ram64[:256]
        dst = np.zeros_like(src)
        token = new_token()
        session = lst.register(token, dst, 2, PAGE, silence_timeout_s=2.0)
        with MultifdSender("::1", lst.port, token, 2, src) as sender:
            sender.connect(2.0)

            async def run() -> None:
                await sender.submit_async(np.arange(src.shape[0]))
                sent = await sender.sync(1)
                assert await session.wait_sync(1, 5.0) == sent == src.shape[0]

            asyncio.run(run())
        assert np.array_equal(dst, src)
