"""The session's reader, in process: which message a load holds up, per load trigger.

handle() returns when the target has taken a message; a load makes it return late, and the
reader (and so the stream) waits that long.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from streamclient import MiB, chunks, device, marker, ram, setup

from migbed.services.target.session import TargetSession
from migbed.services.target.validate import validate_setup
from migbed.wire import migration_pb2 as pb

SETUP_S = 0.3


async def timed(trigger: int) -> list[tuple[str, float]]:
    """Handle: initial chunk, RAM, initial chunk (the image's last), RAM, marker."""
    s = setup(ram=16 * MiB, devices=[device(initial=2 * MiB, load_setup_time_s=SETUP_S,
                                            load_trigger=trigger)]).setup
    validate_setup(s)
    session = TargetSession(s)
    session.start()
    first, second = list(chunks(0, pb.IMAGE_KIND_INITIAL, 0, 0, 2 * MiB))
    out = []
    try:
        for name, msg in (("chunk 1", first), ("ram 1", ram(0)), ("chunk 2", second),
                          ("ram 2", ram(256)), ("marker", marker(0, 2))):
            t0 = time.monotonic()
            await session.handle(msg)
            out.append((name, time.monotonic() - t0))
        assert session.ack_sent
    finally:
        session.close("test over")
    return out


def test_image_complete_holds_the_write_that_completes_the_image() -> None:
    took = dict(asyncio.run(timed(pb.LOAD_TRIGGER_IMAGE_COMPLETE)))
    assert took["chunk 1"] < 0.1 and took["ram 1"] < 0.1  # buffered: RAM between goes on
    assert took["chunk 2"] >= SETUP_S * 0.95, took
    assert took["ram 2"] < 0.1 and took["marker"] < 0.1


def test_per_chunk_holds_the_first_write() -> None:
    took = dict(asyncio.run(timed(pb.LOAD_TRIGGER_PER_CHUNK)))
    assert took["chunk 1"] >= SETUP_S * 0.95, took
    assert took["chunk 2"] < 0.1 and took["ram 1"] < 0.1


@pytest.mark.parametrize("kind", [pb.IMAGE_KIND_MIDDLE, pb.IMAGE_KIND_FINAL])
def test_an_image_without_a_known_size_loads_when_the_stream_moves_on(kind: int) -> None:
    async def run() -> float:
        s = setup(ram=16 * MiB, devices=[device(initial=MiB, stop=MiB, load_rate_bytes_per_s=
                                                4 * MiB / SETUP_S)]).setup
        session = TargetSession(s)
        session.start()
        try:
            await session.handle(next(chunks(0, pb.IMAGE_KIND_INITIAL, 0, 0, MiB)))
            await session.handle(marker(0, 1))
            if kind == pb.IMAGE_KIND_FINAL:
                await session.handle(pb.SourceMessage(stop_copy=pb.StopCopy()))
            dev = session.devices[0]
            loaded = dev.loaded_bytes
            await session.handle(next(chunks(0, kind, 1, MiB if kind == pb.IMAGE_KIND_FINAL
                                             else 0, MiB)))
            assert dev.loaded_bytes == loaded  # buffered: nothing of it loaded yet
            t0 = time.monotonic()
            await session.handle(ram(0))  # the stream moves on: the image loads first
            took = time.monotonic() - t0
            assert dev.loaded_bytes == loaded + MiB
            return took
        finally:
            session.close("test over")

    assert asyncio.run(run()) >= SETUP_S / 4 * 0.9


def test_no_garbage_collection_from_the_stop_until_the_session_ends() -> None:
    """The target's part of the downtime runs without Python's collector (runtime/gcpause);
    a session that ends before resuming (failed, cancelled) gives collection back."""
    import gc

    async def run() -> tuple[bool, bool]:
        s = setup(ram=16 * MiB).setup
        validate_setup(s)
        session = TargetSession(s)
        session.start()
        await session.handle(pb.SourceMessage(stop_copy=pb.StopCopy(source_stop_ns=1)))
        during = gc.isenabled()
        session.close("cancelled")
        return during, gc.isenabled()

    assert gc.isenabled()
    assert asyncio.run(run()) == (False, True)
