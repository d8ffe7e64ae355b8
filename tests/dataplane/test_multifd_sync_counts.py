"""The pages counted before each sync agree exactly on both sides, however far the target's
main stream lags behind its channels (MultifdSync.pages_sent is checked exactly).

The soak's finding (docs/faults.md, seed 608407079 run 110): the target's main stream,
busy loading a device, met MultifdSync(7) when the channels had read far more syncs; each
channel kept the counts of its last 64 syncs only, and wait_sync took the first one at or
after 7 it still had: a later sync's, with more pages. Channels now read at most SYNC_LEAD
syncs past the one the main stream waits for, and keep every count it may still ask for.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from multifd_lab import PAGE, wait_until

from migbed.dataplane.receiver import SYNC_LEAD, MultifdListener
from migbed.dataplane.sender import MultifdSender, new_token

pytestmark = pytest.mark.timeout(120)


def _round_pages(gen: int, pages: int) -> np.ndarray:
    """A few pages per round, a different number each time (0 in every fifth round)."""
    return (np.arange(gen % 5) * 37 + gen * 11) % pages


def _send_rounds(sender: MultifdSender, rounds: int, pages: int) -> dict[int, int]:
    """Rounds 1..rounds, each its pages then a sync, never waiting for the target; the
    sender's count of pages written before each sync."""
    async def run() -> dict[int, int]:
        sent = {}
        for gen in range(1, rounds + 1):
            await sender.submit_async(_round_pages(gen, pages))
            sent[gen] = await sender.sync(gen, 10.0)
        return sent

    return asyncio.run(run())


def test_a_main_stream_far_behind_gets_each_syncs_own_count(
        listener: MultifdListener, ram64: np.ndarray) -> None:
    """The source syncs SYNC_LEAD + 20 times before the target's main stream asks for the
    first: the channels stop SYNC_LEAD syncs ahead of it, and every wait_sync(g) returns
    the pages sent before sync g (before the fix: the count of sync 21, for generation 1)."""
    src = ram64[:1024]
    dst = np.zeros_like(src)
    rounds = SYNC_LEAD + 20
    token = new_token()
    session = listener.register(token, dst, 2, PAGE, silence_timeout_s=5.0)
    with MultifdSender("127.0.0.1", listener.port, token, 2, src) as sender:
        sender.connect(2.0)
        sent = _send_rounds(sender, rounds, src.shape[0])
        wait_until(lambda: session.synced(SYNC_LEAD), 5.0)
        time.sleep(0.3)  # time to read further, were the channels not waiting
        assert not session.synced(SYNC_LEAD + 1), session.stats()

        async def main_stream() -> dict[int, int]:
            return {gen: await session.wait_sync(gen, 5.0) for gen in range(1, rounds + 1)}

        assert asyncio.run(main_stream()) == sent
        assert sent[rounds] == sum(_round_pages(g, src.shape[0]).size for g in sent)
    touched = np.unique(np.concatenate([_round_pages(g, src.shape[0]) for g in sent]))
    assert np.array_equal(dst[touched], src[touched])
    listener.unregister(token)


def test_a_main_stream_that_asks_only_for_the_last_sync(
        listener: MultifdListener, ram64: np.ndarray) -> None:
    """Asking for sync g says no earlier one will be asked for: channels waiting SYNC_LEAD
    ahead of the start read on to g (no deadlock), and the count is g's."""
    src = ram64[:1024]
    dst = np.zeros_like(src)
    rounds = 2 * SYNC_LEAD + 5
    token = new_token()
    session = listener.register(token, dst, 3, PAGE, silence_timeout_s=5.0)
    with MultifdSender("127.0.0.1", listener.port, token, 3, src) as sender:
        sender.connect(2.0)
        sent = _send_rounds(sender, rounds, src.shape[0])
        assert asyncio.run(session.wait_sync(rounds, 5.0)) == sent[rounds]
    listener.unregister(token)


@pytest.mark.parametrize("seed", [1, 2])
def test_many_small_rounds_with_a_main_stream_lagging_at_random(
        listener: MultifdListener, ram64: np.ndarray, seed: int) -> None:
    """A stress loop on loopback: 300 rounds of 0-78 random pages (duplicates in a batch,
    the same page again in later rounds, new contents before each send), small packets on
    3 channels, while the target's main stream follows at a random lag. Every sync's count
    is the sender's, and the last copy of every page is the one that stays."""
    rng, lag = np.random.default_rng(seed), np.random.default_rng(seed + 100)
    src = ram64[:2048].copy()
    dst = np.zeros_like(src)
    rounds = 300
    token = new_token()
    session = listener.register(token, dst, 3, PAGE, silence_timeout_s=5.0)
    sent: dict[int, int] = {}
    delivered: dict[int, int] = {}
    touched: set[int] = set()
    with MultifdSender("127.0.0.1", listener.port, token, 3, src,
                       packet_bytes=4 * PAGE) as sender:
        sender.connect(2.0)

        async def source() -> None:
            for gen in range(1, rounds + 1):
                for _ in range(int(rng.integers(0, 3))):  # several batches per round
                    pages = rng.integers(0, src.shape[0], int(rng.integers(0, 40)))
                    src[pages] = gen % 251 + 1  # this round's contents
                    touched.update(pages.tolist())
                    await sender.submit_async(pages)
                sent[gen] = await sender.sync(gen, 10.0)

        async def main_stream() -> None:
            for gen in range(1, rounds + 1):
                if lag.random() < 0.1:
                    await asyncio.sleep(float(lag.uniform(0, 0.02)))
                delivered[gen] = await session.wait_sync(gen, 10.0)

        async def both() -> None:
            await asyncio.gather(source(), main_stream())

        asyncio.run(both())
        sender.close()
        wait_until(lambda: session.finished, 5.0)
    assert delivered == sent
    assert session.pages_received == sent[rounds]
    assert session.error is None
    written = np.array(sorted(touched))
    assert written.size > 1000
    assert np.array_equal(dst[written], src[written])
    assert not np.delete(dst, written, axis=0).any()  # nothing else was sent
    listener.unregister(token)
