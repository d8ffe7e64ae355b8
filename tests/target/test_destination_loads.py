"""The destination loads devices as QEMU's does: inline on the main stream's one reader.

A real target process, driven by a hand-written source over real gRPC (streamclient.py):
what the target lets the source send, and when, is read from gRPC's own requests for the
next message, so a stalled reader shows up as a source that cannot send.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from faultlab import Lab, no_sessions, rss_bytes, stop_cleanly, wait_until
from streamclient import (
    PAGE,
    STOP,
    DeviceStateChannels,
    MiB,
    Stream,
    chunks,
    device,
    marker,
    ram,
    setup,
)

from migbed.core.device import device_digest
from migbed.experiments.localstack import Service
from migbed.wire import migration_pb2 as pb

pytestmark = pytest.mark.timeout(180)
INITIAL, FINAL, CONFIG = pb.IMAGE_KIND_INITIAL, pb.IMAGE_KIND_FINAL, pb.IMAGE_KIND_CONFIG


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    lb = Lab(tmp_path_factory.mktemp("dest"))
    try:
        svc = lb.start("target", extra_args=["--idle-timeout", "1.5"])
        yield svc
        wait_until(lambda: no_sessions(svc.address), 10, "every session to end")
        stop_cleanly(svc)
    finally:
        lb.close()


def loading_spans(st: Stream, dev: int) -> list[float]:
    """Arrival times of progress reports saying device `dev` is loading."""
    return [t for t, r in st.of("load_progress")
            if r.load_progress.device == dev and r.load_progress.loading]


def ram_behind_an_initial_image(setup_s: float, ram_mib: int) -> Stream:
    def script(st: Stream) -> Iterator[pb.SourceMessage]:
        yield setup(ram=ram_mib * MiB, devices=[device(load_setup_time_s=setup_s)])
        st.wait_for("setup_accepted")
        yield from chunks(0, INITIAL, 0, 0, 4 * MiB)  # the 4th chunk completes the image
        for first in range(0, ram_mib * MiB // PAGE, 256):
            yield ram(first)
        yield marker(0, 4)
        st.wait_for("switchover_ack")
        wait_until(lambda: any(r.load_progress.initial_loaded for _, r in st.of("load_progress")),
                   5, "a progress report with the initial data loaded")

    return script  # type: ignore[return-value]


def test_a_device_load_stalls_ram_on_the_main_stream(target: Service) -> None:
    """mlx5: the write that completes the initial image loads it (setup included); the
    reader reads nothing meanwhile, so the RAM behind it waits and the source cannot send."""
    setup_s = 1.5
    st = Stream(target.address)
    st.run(ram_behind_an_initial_image(setup_s, 64))  # type: ignore[arg-type]
    st.wait_for("switchover_ack", 30)
    loading = loading_spans(st, 0)
    assert loading, "no progress report said the device was loading"
    start, end = loading[0], loading[-1]
    assert end - start >= setup_s * 0.8, (start, end)
    # While it loads, the source's sends flatten: at most a flow-control window gets through.
    during = st.bytes_pulled(start + 0.2, end)
    total = st.bytes_pulled(0, time.monotonic() + 1)
    assert total >= 64 * MiB
    print(f"RAM sent while the device loaded: {during / MiB:.1f} MiB of {total / MiB:.0f}; "
          f"before its end {st.bytes_pulled(0, end) / MiB:.1f} MiB")
    assert during <= 16 * MiB, f"{during / MiB:.1f} MiB of RAM sent while the device loaded"
    # The return path stays alive meanwhile: a report at least every few periods.
    gaps = np.diff(loading)
    assert gaps.max() < 0.5, f"the return path fell silent for {gaps.max():.2f}s while loading"
    st.done.wait(10)
    final = st.of("load_progress")[-1][1].load_progress
    assert final.initial_loaded
    assert final.loaded_bytes == 4 * MiB and final.backlog_bytes == 0
    assert setup_s * 0.9 <= final.busy_s <= setup_s + 0.5, final.busy_s


def test_without_a_load_the_same_ram_flows_at_once(target: Service) -> None:
    """The control for the test above: same stream, no setup time, no stall."""
    st = Stream(target.address)
    st.run(ram_behind_an_initial_image(0.0, 64))  # type: ignore[arg-type]
    st.wait_for("switchover_ack", 30)
    ram_times = [t for t, b, _ in st.pulled if b == "ram"]
    assert ram_times[-1] - ram_times[0] < 1.0, ram_times[-1] - ram_times[0]


def test_two_devices_load_one_after_another(target: Service) -> None:
    """Devices on the main stream load serially: the second waits for the first."""
    setup_s = 0.6

    def script(st: Stream) -> Iterator[pb.SourceMessage]:
        yield setup(devices=[device("vf0", initial=MiB, load_setup_time_s=setup_s),
                             device("vf1", initial=MiB, load_setup_time_s=setup_s)])
        st.wait_for("setup_accepted")
        yield from chunks(0, INITIAL, 0, 0, MiB)
        yield from chunks(1, INITIAL, 0, 0, MiB)
        yield marker(0, 1)
        yield marker(1, 1)
        st.wait_for("switchover_ack")

    st = Stream(target.address)
    st.run(script)
    t_ack, _ = st.wait_for("switchover_ack", 30)
    first_chunk = next(t for t, b, _ in st.pulled if b == "device_data")
    assert t_ack - first_chunk >= 2 * setup_s * 0.9, t_ack - first_chunk
    zero, one = loading_spans(st, 0), loading_spans(st, 1)
    assert zero and one
    assert max(zero) <= min(one) + 0.06, "device 1 loaded while device 0 was still loading"


def device_digest_of(d: pb.DeviceShape, index: int) -> bytes:
    fill = index + 1
    return device_digest(np.full(d.initial_bytes, fill, np.uint8),
                         bytes([fill]) * d.stop_copy_size, bytes([fill]) * d.device_state_bytes)


def migrate(address: str, devs: list[pb.DeviceShape], multifd: bool) -> Stream:
    """A whole migration: initial images, stop, stop-copy state (inline, or QEMU 10.0's
    multifd device state: packets on a multifd channel), complete, digests."""
    ram_bytes = 16 * MiB
    transfer = pb.DEVICE_STATE_TRANSFER_MULTIFD if multifd else pb.DEVICE_STATE_TRANSFER_MAIN
    first = setup(ram=ram_bytes, devices=devs, device_state_transfer=transfer,
                  multifd_channels=1 if multifd else 0)

    def script(st: Stream) -> Iterator[pb.SourceMessage]:
        yield first
        accepted = st.wait_for("setup_accepted")[1].setup_accepted
        channels = DeviceStateChannels(accepted, ram_bytes) if multifd else None
        seqs = []
        for i, d in enumerate(devs):
            yield from chunks(i, INITIAL, 0, 0, d.initial_bytes)
            seqs.append(-(-d.initial_bytes // MiB))
            yield marker(i, seqs[i])
        st.wait_for("switchover_ack")
        yield STOP
        if channels is not None:
            send_device_state(channels, devs)
        else:
            for i, d in enumerate(devs):
                for m in chunks(i, FINAL, seqs[i], d.initial_bytes, d.stop_copy_size):
                    seqs[i] += 1
                    yield m
                if d.device_state_bytes:
                    yield from chunks(i, CONFIG, seqs[i], d.initial_bytes + d.stop_copy_size,
                                      d.device_state_bytes)
                    seqs[i] += 1
        yield pb.SourceMessage(complete=pb.Complete(device_next_seq=seqs))
        st.wait_for("resumed")
        ram_digest = hashlib.blake2b(bytes(ram_bytes), digest_size=32).digest()
        yield pb.SourceMessage(digests=pb.Digests(
            ram=ram_digest, devices=[device_digest_of(d, i) for i, d in enumerate(devs)]))
        st.wait_for("verified")
        if channels is not None:
            channels.close()

    st = Stream(address)
    st.run(script)
    return st


def send_device_state(channels: DeviceStateChannels, devs: list[pb.DeviceShape]) -> None:
    """Every device's final image and config state, the devices' packets interleaved on the
    channel, LAST on each device's last."""
    packets = []
    for i, d in enumerate(devs):
        fill = bytes([i + 1])
        parts = [("final", d.initial_bytes + off, min(MiB, d.stop_copy_size - off),
                  d.stop_copy_size) for off in range(0, d.stop_copy_size, MiB)]
        parts += [("config", d.initial_bytes + d.stop_copy_size, d.device_state_bytes,
                   d.device_state_bytes)] if d.device_state_bytes else []
        packets.append([(i, kind, off, fill * n, image, j == len(parts) - 1)
                        for j, (kind, off, n, image) in enumerate(parts)])
    for k in range(max(len(p) for p in packets)):
        for p in packets:
            if k < len(p):
                dev, kind, off, data, image, last = p[k]
                channels.send(dev, kind, off, data, image, last)


def final_load_s(st: Stream) -> float:
    """From the moment the source's last message before Complete was taken to Shut's
    arrival: the stop-copy loads (the target reads Complete only once they are done)."""
    sent = next(t for t, b, _ in st.pulled if b == "complete")
    return st.wait_for("shut")[0] - sent


def order_of(st: Stream) -> list[str]:
    wanted = ("received", "shut", "resumed", "verified")
    return [b for _, r in st.replies if (b := r.WhichOneof("body") or "") in wanted]


def test_shut_comes_after_every_load(target: Service) -> None:
    """Complete -> the final image (stop-copy cost) and the config state load, then Shut
    (MIG_RP_MSG_SHUT), then the guest resumes; what was loaded verifies."""
    dev = device(initial=MiB, stop=2 * MiB, stop_copy_load_time_s=0.4, config_load_time_s=0.2,
                 device_state_bytes=64 << 10)
    st = migrate(target.address, [dev], multifd=False)
    _, v = st.wait_for("verified", 30)
    assert v.verified.ok, v.verified.detail
    assert order_of(st) == ["received", "shut", "resumed", "verified"]
    assert final_load_s(st) >= 0.6 * 0.9, final_load_s(st)
    shut = st.wait_for("shut")[1].shut.target_loads_done_ns
    assert st.wait_for("resumed")[1].resumed.target_first_tick_ns >= shut


def test_multifd_device_state_loads_devices_in_parallel(target: Service) -> None:
    """QEMU 10: each device's stop-copy state on the multifd channels, loaded by its own
    task, in parallel; the same devices inline on the main stream load one after another."""
    devs = [device(f"vf{i}", initial=MiB, stop=2 * MiB, stop_copy_load_time_s=0.6)
            for i in range(2)]
    inline = migrate(target.address, devs, multifd=False)
    assert inline.wait_for("verified", 30)[1].verified.ok
    parallel = migrate(target.address, devs, multifd=True)
    v = parallel.wait_for("verified", 30)[1].verified
    assert v.ok, v.detail
    assert order_of(parallel) == ["received", "shut", "resumed", "verified"]
    print(f"stop-copy loads of 2 devices x 0.6 s: inline {final_load_s(inline):.3f} s, "
          f"parallel {final_load_s(parallel):.3f} s")
    assert final_load_s(inline) >= 1.2 * 0.9, final_load_s(inline)
    assert 0.6 * 0.9 <= final_load_s(parallel) < 1.0, final_load_s(parallel)


def test_a_stalled_target_holds_the_source_at_bounded_memory(target: Service) -> None:
    """A target whose reader cannot go on (a long load): the source blocks in its sends
    and the target does not buffer what the source tries to push (no unbounded queue)."""
    ram_mib = 256

    def script(st: Stream) -> Iterator[pb.SourceMessage]:
        yield setup(ram=ram_mib * MiB, devices=[device(load_setup_time_s=30.0)])
        st.wait_for("setup_accepted")
        yield from chunks(0, INITIAL, 0, 0, 4 * MiB)
        for first in range(0, ram_mib * MiB // PAGE, 256):
            yield ram(first)

    st = Stream(target.address)
    st.run(script, timeout=8)
    st.wait_for("setup_accepted")
    wait_until(lambda: loading_spans(st, 0), 10, "the device to load")
    before = rss_bytes(target.process.pid)
    time.sleep(3)
    after = rss_bytes(target.process.pid)
    sent = st.bytes_pulled(0, time.monotonic())
    print(f"stalled target: the source got {sent / MiB:.1f} MiB out, target RSS "
          f"{before / MiB:.0f} -> {after / MiB:.0f} MiB over 3 s")
    assert sent <= 24 * MiB, f"the source got {sent / MiB:.0f} MiB out of {ram_mib} MiB"
    assert after - before <= 32 * MiB, f"target RSS grew {(after - before) / MiB:.0f} MiB"
    st.done.wait(15)  # the call's deadline ends it; the session is freed
    assert st.error is not None and st.error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_until(lambda: no_sessions(target.address), 10, "the session to be freed")


def test_pings_alone_do_not_hold_a_session(target: Service, tmp_path: Path) -> None:
    """--idle-timeout 1.5: a session that sends only pings is ended."""
    def script(st: Stream) -> Iterator[pb.SourceMessage]:
        yield setup(ram=16 * MiB)
        st.wait_for("setup_accepted")
        for i in range(40):
            yield pb.SourceMessage(ping=pb.Ping(seq=i))
            time.sleep(0.1)

    st = Stream(target.address)
    t0 = time.monotonic()
    st.run(script)
    st.done.wait(10)
    assert st.error is not None, "the pinging session was kept"
    assert st.error.code() == grpc.StatusCode.DEADLINE_EXCEEDED, st.error
    assert "only pings" in str(st.error.details())
    assert time.monotonic() - t0 < 4
