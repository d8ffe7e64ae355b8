"""The session's reader, in process: which message a load holds up, per load trigger.

handle() returns when the target has taken a message; a load makes it return late, and the
reader (and so the stream) waits that long.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from streamclient import MiB, chunks, device, marker, ram, setup

from migbed.dataplane import packet as pk
from migbed.dataplane.receiver import MultifdListener
from migbed.dataplane.sender import MultifdSender, new_token
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
        assert session.inline.ack_sent
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
def test_an_image_loads_once_in_the_chunk_that_completes_it(kind: int) -> None:
    """A middle (or final) image in three chunks with RAM and pings between them: nothing
    loads until the chunk that reaches its image_bytes, which loads all of it (mlx5:
    mlx5vf_resume_read_image reaches the header's length -> load_vhca_state)."""
    async def run() -> float:
        s = setup(ram=16 * MiB, devices=[device(initial=3 * MiB, stop=3 * MiB,
                                                load_rate_bytes_per_s=3 * MiB / SETUP_S)]).setup
        validate_setup(s)
        session = TargetSession(s)
        session.start()
        dev = session.devices[0]
        try:
            for m in chunks(0, pb.IMAGE_KIND_INITIAL, 0, 0, 3 * MiB):
                await session.handle(m)
            await session.handle(marker(0, 3))
            if kind == pb.IMAGE_KIND_FINAL:
                await session.handle(pb.SourceMessage(stop_copy=pb.StopCopy()))
            loaded = dev.loaded_bytes
            first, second, third = chunks(0, kind, 3, 3 * MiB if kind == pb.IMAGE_KIND_FINAL
                                          else 0, 3 * MiB)
            for m in (first, ram(0), pb.SourceMessage(ping=pb.Ping(seq=1)), second, ram(256)):
                await session.handle(m)
                assert dev.loaded_bytes == loaded, "loaded before the image was whole"
            assert dev.backlog_bytes == 2 * MiB
            t0 = time.monotonic()
            await session.handle(third)
            took = time.monotonic() - t0
            assert dev.loaded_bytes == loaded + 3 * MiB and dev.backlog_bytes == 0
            return took
        finally:
            session.close("test over")

    assert asyncio.run(run()) >= SETUP_S * 0.95


def test_the_marker_does_not_end_a_middle_image() -> None:
    """INIT_DATA_SENT after a middle image has begun (the source read the initial image's
    end and the next image's start in one go): the device approves, the image stays open."""
    async def run() -> None:
        s = setup(ram=16 * MiB, devices=[device(initial=2 * MiB)]).setup
        validate_setup(s)
        session = TargetSession(s)
        session.start()
        dev = session.devices[0]
        try:
            for m in chunks(0, pb.IMAGE_KIND_INITIAL, 0, 0, 2 * MiB):
                await session.handle(m)
            middle = list(chunks(0, pb.IMAGE_KIND_MIDDLE, 2, 0, 2 * MiB))
            await session.handle(middle[0])
            await session.handle(marker(0, 3))
            assert session.inline.ack_sent and dev.initial_loaded
            assert dev.loaded_bytes == 2 * MiB and dev.model.open_image().startswith("MIDDLE")
            await session.handle(middle[1])
            assert dev.loaded_bytes == 4 * MiB and dev.model.open_image() == ""
        finally:
            session.close("test over")

    asyncio.run(run())


def test_device_state_loads_from_the_switchover_and_finishes_an_open_image() -> None:
    """QEMU 10: a device's state from the multifd channels is loaded only once the main
    stream reaches the switchover (vfio_multifd_switchover_start starts its load thread);
    it goes on with the image pre-copy left open on the main stream, then the final image."""
    async def run() -> None:
        s = setup(ram=16 * MiB, devices=[device(initial=2 * MiB, stop=MiB)], multifd_channels=1,
                  device_state_transfer=pb.DEVICE_STATE_TRANSFER_MULTIFD).setup
        validate_setup(s)
        session = TargetSession(s)
        with MultifdListener("127.0.0.1") as listener:
            token = new_token()
            session.ram.attach_multifd(listener.register(
                token, session.memory.ram, 1, session.memory.page_size, 5.0, devices=1))
            session.start()
            dev = session.devices[0]
            src = np.zeros_like(session.memory.ram)
            with MultifdSender("127.0.0.1", listener.port, token, 1, src) as sender:
                sender.connect(2.0)
                try:
                    for m in chunks(0, pb.IMAGE_KIND_INITIAL, 0, 0, 2 * MiB):
                        await session.handle(m)
                    await session.handle(marker(0, 2))
                    await session.handle(next(chunks(0, pb.IMAGE_KIND_MIDDLE, 2, 0, MiB,
                                                     image_bytes=2 * MiB)))
                    await sender.submit_device_state(
                        pk.DeviceState(0, pk.DS_KIND_MIDDLE, 0, MiB, 2 * MiB, False), bytes(MiB))
                    await asyncio.sleep(0.2)
                    assert dev.state.written_bytes == 3 * MiB  # held back until the switchover
                    await session.handle(pb.SourceMessage(stop_copy=pb.StopCopy()))
                    await sender.submit_device_state(
                        pk.DeviceState(0, pk.DS_KIND_FINAL, 1, 2 * MiB, MiB, True), bytes(MiB))
                    await asyncio.wait_for(session.device_state.wait_all_loaded(), 5)
                    assert dev.loaded_bytes == 5 * MiB and dev.model.image is None
                    assert 0 in session.device_state.done
                finally:
                    session.close("test over")

    asyncio.run(run())


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
