"""multifd RAM into a real target: pages on N TCP channels beside the main stream, a sync
per round that the main stream waits for, the page count in Complete, and a channel that
drops failing the session. The source side is the dataplane library's real sender."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from faultlab import Lab, no_sessions, stop_cleanly, wait_until
from streamclient import PAGE, STOP, MiB, Stream, setup

from migbed.core.guest import GuestMemory
from migbed.dataplane.sender import MultifdSender
from migbed.experiments.localstack import Service
from migbed.wire import migration_pb2 as pb

pytestmark = pytest.mark.timeout(120)
RAM = 32 * MiB


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    lb = Lab(tmp_path_factory.mktemp("multifd"))
    try:
        svc = lb.start("target")
        yield svc
        wait_until(lambda: no_sessions(svc.address), 10, "every session to end")
        stop_cleanly(svc)
    finally:
        lb.close()


def dial(st: Stream, address: str, memory: GuestMemory, channels: int) -> MultifdSender:
    _, acc = st.wait_for("setup_accepted")
    a = acc.setup_accepted
    assert a.multifd_port and len(a.multifd_token) == 16, a
    sender = MultifdSender(address.rpartition(":")[0], a.multifd_port, a.multifd_token,
                           channels, memory.ram, heartbeat_timeout_s=2.0)
    sender.connect(5.0)
    return sender


def test_ram_on_multifd_channels_verifies(target: Service) -> None:
    memory = GuestMemory(RAM, PAGE, seed=3)  # every page self-describing, none zero
    pages = memory.pages
    senders: list[MultifdSender] = []

    def script(st: Stream) -> Iterator[pb.SourceMessage]:
        yield setup(ram=RAM, multifd_channels=2)
        sender = dial(st, target.address, memory, 2)
        senders.append(sender)
        half = np.arange(pages // 2, dtype=np.int64)
        for gen, idx in ((1, half), (2, half + pages // 2)):
            sender.submit(idx)
            asyncio.run(sender.sync(gen, 10))
            yield pb.SourceMessage(multifd_sync=pb.MultifdSync(
                generation=gen, pages_sent=int(sum(s.pages for s in sender.stats()))))
        yield STOP
        yield pb.SourceMessage(complete=pb.Complete(ram_pages_sent=pages))
        st.wait_for("resumed")
        yield pb.SourceMessage(digests=pb.Digests(ram=memory.digest()))
        st.wait_for("verified")
        sender.close()

    st = Stream(target.address)
    st.run(script)
    v = st.wait_for("verified", 30)[1].verified
    assert v.ok, v.detail
    assert sum(s.pages for s in senders[0].stats()) == pages
    st.done.wait(10)
    assert st.error is None, st.error


def test_a_dropped_channel_fails_the_session(target: Service) -> None:
    """A channel closed before its final sync: the session fails at once (not at the next
    sync), with the channel named; the target serves on."""
    memory = GuestMemory(RAM, PAGE, seed=4)

    def script(st: Stream) -> Iterator[pb.SourceMessage]:
        yield setup(ram=RAM, multifd_channels=2)
        sender = dial(st, target.address, memory, 2)
        sender.submit(np.arange(64, dtype=np.int64))
        sender.close(abort=True)  # no FIN: the target sees a channel drop
        for i in range(50):  # the main stream stays alive meanwhile
            yield pb.SourceMessage(ping=pb.Ping(seq=i))
            time.sleep(0.1)

    st = Stream(target.address)
    t0 = time.monotonic()
    st.run(script)
    st.done.wait(15)
    assert st.error is not None and st.error.code() == grpc.StatusCode.UNAVAILABLE, st.error
    assert "multifd" in str(st.error.details()) and "channel" in str(st.error.details())
    assert time.monotonic() - t0 < 4
    wait_until(lambda: no_sessions(target.address), 10, "the session to be freed")


def _refused_sync(target: Service, seed: int, pages: int, *syncs: pb.MultifdSync) -> grpc.RpcError:
    """Pages 0..pages-1 on one channel and its SYNC 1, then these MultifdSync messages on
    the main stream: the error the target ends the stream with."""
    memory = GuestMemory(RAM, PAGE, seed=seed)

    def script(st: Stream) -> Iterator[pb.SourceMessage]:
        yield setup(ram=RAM, multifd_channels=1)
        sender = dial(st, target.address, memory, 1)
        sender.submit(np.arange(pages, dtype=np.int64))
        asyncio.run(sender.sync(1, 10))
        for sync in syncs:
            yield pb.SourceMessage(multifd_sync=sync)
        st.done.wait(10)
        sender.close(abort=True)

    st = Stream(target.address)
    st.run(script)
    st.done.wait(15)
    assert st.error is not None, "the target accepted the stream"
    return st.error


@pytest.mark.parametrize("claimed", [120, 80])  # pages lost / stray pages in RAM
def test_a_sync_whose_page_count_disagrees_is_data_loss(target: Service, claimed: int) -> None:
    error = _refused_sync(target, 5, 100, pb.MultifdSync(generation=1, pages_sent=claimed))
    assert error.code() == grpc.StatusCode.DATA_LOSS, error
    assert f"multifd_sync.pages_sent = {claimed}, the channels delivered 100" in str(error.details())


@pytest.mark.parametrize("second", [1, 0])  # the same generation again / one before it
def test_a_sync_generation_that_does_not_increase_is_refused(target: Service, second: int) -> None:
    error = _refused_sync(target, 6, 10, pb.MultifdSync(generation=1, pages_sent=10),
                          pb.MultifdSync(generation=second, pages_sent=10))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    assert f"multifd_sync.generation = {second} must be > the last one, 1" in str(error.details())
