"""QEMU 10.0's multifd device state on the data plane: device-state packets on the shared
channels, mixed with RAM pages (multifd_queue_device_state -> multifd_send), put back in
order per device on the target (vfio_multifd_load_state_buffer, vfio_load_bufs_thread),
with a bound QEMU lacks."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from multifd_lab import PAGE, dial, hello, page_packet, wait_until

from migbed.dataplane import packet as pk
from migbed.dataplane.receiver import MultifdListener, MultifdSession
from migbed.dataplane.reorder import DeviceStatePacket
from migbed.dataplane.sender import MultifdError, MultifdSender, new_token

pytestmark = pytest.mark.timeout(60)

CHUNK = 256 << 10


def device_stream(device: int, size: int, seed: int) -> list[tuple[pk.DeviceState, bytes]]:
    """A device's stop-copy state as packets: CHUNK-sized buffers of a final image, LAST
    on the last one."""
    data = np.random.default_rng(seed).bytes(size)
    chunks = [data[o:o + CHUNK] for o in range(0, size, CHUNK)]
    return [(pk.DeviceState(device, pk.DS_KIND_FINAL, i, i * CHUNK, size, i == len(chunks) - 1), c)
            for i, c in enumerate(chunks)]


async def load_all(session: MultifdSession, device: int) -> list[DeviceStatePacket]:
    got = []
    while not got or not got[-1].last:
        got.append(await session.next_device_state(device, 10.0))
    return got


def test_device_state_shares_the_channels_with_ram_and_arrives_in_order(
        listener: MultifdListener, ram64: np.ndarray) -> None:
    src = ram64[:4096]
    dst = np.zeros_like(src)
    streams = [device_stream(d, 3 << 20, d) for d in range(3)]
    token = new_token()
    session = listener.register(token, dst, 2, PAGE, silence_timeout_s=5.0, devices=3)
    with MultifdSender("127.0.0.1", listener.port, token, 2, src, burst_bytes=512 << 10) as sender:
        sender.connect(2.0)

        async def run() -> list[list[DeviceStatePacket]]:
            loaders = [asyncio.ensure_future(load_all(session, d)) for d in range(3)]
            # RAM and the devices' packets interleaved, each device queued one packet at a
            # time from its own task, as QEMU's save threads queue theirs.
            async def save(d: int) -> None:
                for ds, data in streams[d]:
                    await sender.submit_device_state(ds, data)
                    await asyncio.sleep(0)

            await asyncio.gather(sender.submit_async(np.arange(src.shape[0])),
                                 *(save(d) for d in range(3)))
            sent = await sender.sync(1)
            assert await session.wait_sync(1, 5.0) == sent
            return await asyncio.gather(*loaders)

        loaded = asyncio.run(run())
        tx, rx = sender.stats(), session.stats()
    assert np.array_equal(dst, src)
    for d in range(3):
        assert [p.idx for p in loaded[d]] == list(range(len(streams[d])))
        assert b"".join(p.data for p in loaded[d]) == b"".join(c for _, c in streams[d])
        assert [p.kind for p in loaded[d]] == ["final"] * len(streams[d])
    assert tx == rx
    payload = sum(len(c) for s in streams for _, c in s)
    packets = sum(len(s) for s in streams)
    # Per-channel bytes hold the device state too, and both channels carried some of it.
    assert sum(s.device_packets for s in rx) == packets
    assert sum(s.device_bytes for s in rx) == payload + packets * sender.layout.block
    assert all(s.device_packets > 0 and s.pages > 0 for s in rx)
    assert sum(s.bytes for s in rx) >= src.nbytes + payload
    listener.unregister(token)


def test_device_state_waits_within_its_window_until_the_loader_takes_it(
        listener: MultifdListener, ram64: np.ndarray) -> None:
    """QEMU buffers a device's packets without a bound; migbed holds at most `window` of
    them: past that, the channel reads nothing more (back-pressure to the source) until the
    device's loader takes the next one. Then everything arrives."""
    src = ram64[:64]
    stream = device_stream(0, 24 * CHUNK, 5)
    token = new_token()
    session = listener.register(token, np.zeros_like(src), 1, PAGE, silence_timeout_s=5.0,
                                devices=1, device_window=4)
    with MultifdSender("127.0.0.1", listener.port, token, 1, src) as sender:
        sender.connect(2.0)

        async def run() -> list[DeviceStatePacket]:
            for ds, data in stream:
                await sender.submit_device_state(ds, data)
            await asyncio.sleep(0.5)  # nobody loads: the channel stops at the window
            held = session.device_state.buffered_bytes()
            assert 0 < held <= 4 * CHUNK, held
            assert sender.error is None and session.error is None
            return await load_all(session, 0)

        loaded = asyncio.run(run())
    assert [p.idx for p in loaded] == list(range(len(stream)))
    assert session.device_state.buffered_bytes() == 0
    listener.unregister(token)


def _device_packet(seq: int, ds: pk.DeviceState, data: bytes) -> bytes:
    return pk.encode_packet(pk.Layout(PAGE, 16), pk.Header(pk.FLAG_DEVICE_STATE, 0, seq, 0, len(data)),
                            payload=data, ds=ds)


@pytest.mark.parametrize(("packets", "says"), [
    ([_device_packet(0, pk.DeviceState(2, pk.DS_KIND_FINAL, 0, 0, 4, False), b"abcd")],
     "device 2, this session has 1 device(s)"),
    ([_device_packet(0, pk.DeviceState(0, pk.DS_KIND_FINAL, 0, 0, 8, False), b"abcd"),
      _device_packet(1, pk.DeviceState(0, pk.DS_KIND_FINAL, 0, 4, 8, False), b"efgh")],
     "device 0 packet 0 arrived twice"),
    ([_device_packet(0, pk.DeviceState(0, pk.DS_KIND_FINAL, 0, 0, 4, True), b"abcd"),
      _device_packet(1, pk.DeviceState(0, pk.DS_KIND_CONFIG, 1, 4, 4, False), b"efgh")],
     "packet 1 after its LAST packet (0)"),
    ([_device_packet(0, pk.DeviceState(0, 7, 0, 0, 4, False), b"abcd")], "kind 7 is not one of"),
], ids=["device", "twice", "after-last", "kind"])
def test_bad_device_state_fails_the_session(listener: MultifdListener, packets: list[bytes],
                                            says: str) -> None:
    token = new_token()
    session = listener.register(token, np.zeros((16, PAGE), np.uint8), 1, PAGE, 2.0, devices=1)
    s = dial(listener)
    s.sendall(hello(token))
    for p in packets:
        s.sendall(p)
    wait_until(lambda: session.error is not None, 3.0)
    assert says in str(session.error)

    async def loader() -> None:
        with pytest.raises(MultifdError):
            await session.next_device_state(0, 1.0)

    asyncio.run(loader())
    s.close()
    listener.unregister(token)


def test_a_session_without_devices_refuses_device_state(listener: MultifdListener) -> None:
    token = new_token()
    session = listener.register(token, np.zeros((16, PAGE), np.uint8), 1, PAGE, 2.0)
    s = dial(listener)
    s.sendall(hello(token) + page_packet(0, 0, [1]) + _device_packet(
        1, pk.DeviceState(0, pk.DS_KIND_FINAL, 0, 0, 4, True), b"abcd"))
    wait_until(lambda: session.error is not None, 3.0)
    assert "this session has 0 device(s)" in str(session.error)
    s.close()
    listener.unregister(token)
