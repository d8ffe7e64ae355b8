"""submit() in one thread, sync() in another: a batch is never counted on one side of a SYNC
and sent on the other (MultifdSync.pages_sent must equal what the target read before it).

The race, made to happen every time: channel 0's queue holds the submitted packet inside
put(), the moment between the sender counting the pages and queueing them; a sync is then
started in a second thread and the packet let go only once that sync has either queued its
SYNCs (the race: the packet lands behind a SYNC whose count includes it) or is waiting for
the sender's lock (the fix: it counts and queues only after the whole submit).
"""

from __future__ import annotations

import asyncio
import queue
import threading

import numpy as np
import pytest
from multifd_lab import PAGE

from migbed.dataplane.receiver import MultifdListener
from migbed.dataplane.sender import MultifdSender, _Burst, new_token

pytestmark = pytest.mark.timeout(60)

SYNC_THREAD = "sync-from-another-thread"


class _GatedQueue:
    """A channel's queue whose first packet of pages waits in put() until `release`; any
    other item (a SYNC) put while it waits sets `reached`."""

    def __init__(self, inner: queue.SimpleQueue[object], reached: threading.Event) -> None:
        self.inner = inner
        self.reached = reached
        self.holding = threading.Event()
        self.release = threading.Event()

    def put(self, item: object) -> None:
        if isinstance(item, _Burst) and not self.holding.is_set():
            self.holding.set()
            self.release.wait(30.0)
        elif not isinstance(item, _Burst):
            self.reached.set()
        self.inner.put(item)

    def get(self, timeout: float | None = None) -> object:
        return self.inner.get(timeout=timeout)

    def get_nowait(self) -> object:
        return self.inner.get_nowait()


class _WatchedLock:
    """The sender's lock, telling when the sync thread asks for it."""

    def __init__(self, reached: threading.Event) -> None:
        self._inner = threading.Lock()
        self.reached = reached

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if threading.current_thread().name == SYNC_THREAD:
            self.reached.set()
        return self._inner.acquire(blocking, timeout)

    def release(self) -> None:
        self._inner.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _gate(sender: MultifdSender, reached: threading.Event) -> list[_GatedQueue]:
    """Put the gated queues and the watched lock into a connected sender (white box)."""
    gates = []
    for ch in sender._channels:
        gate = _GatedQueue(ch.queue, reached)
        ch.queue = gate  # type: ignore[assignment]
        gates.append(gate)
    lock = _WatchedLock(reached)
    sender._lock = lock  # type: ignore[assignment]
    sender._space = threading.Condition(lock)  # type: ignore[arg-type]
    return gates


def test_a_sync_from_another_thread_never_splits_a_submit(
        listener: MultifdListener, ram64: np.ndarray) -> None:
    src = ram64[:256]
    dst = np.zeros_like(src)
    pages = np.arange(100)  # one burst: all of it goes to channel 0
    token = new_token()
    session = listener.register(token, dst, 2, PAGE, silence_timeout_s=5.0)
    result: dict[str, int] = {}
    with MultifdSender("127.0.0.1", listener.port, token, 2, src) as sender:
        sender.connect(2.0)
        reached = threading.Event()
        gates = _gate(sender, reached)
        submitter = threading.Thread(target=sender.submit, args=(pages,), name="submit")
        syncer = threading.Thread(
            target=lambda: result.update(sent=asyncio.run(sender.sync(1, 10.0))),
            name=SYNC_THREAD)
        submitter.start()
        try:
            assert gates[0].holding.wait(10.0), "the submit never queued its packet"
            syncer.start()
            assert reached.wait(10.0), "the sync neither queued a SYNC nor asked for the lock"
        finally:
            gates[0].release.set()
            submitter.join(10.0)
            if syncer.ident is not None:  # started
                syncer.join(10.0)
        assert result["sent"] == pages.size  # the submit began first: it is before the sync
        assert asyncio.run(session.wait_sync(1, 5.0)) == result["sent"]
    np.testing.assert_array_equal(dst[pages], src[pages])
    listener.unregister(token)
