"""The analytical model (migbed/model) against cases computed by hand.

Units in the comments: MiB and seconds; the wire is 1 GiB/s (1 MiB takes 1/1024 s), so a
burst of x MiB takes x/1024 s. QEMU's rate limit gives a window of 100 ms a budget of
max-bandwidth/10, sent at the wire's speed, then the sender sleeps to the window's end.
"""

from __future__ import annotations

import math

import pytest

from migbed.core.scenario import parse_scenario
from migbed.model import ModelParams, inputs_from, predict, simulate
from migbed.model.pipe import Limiter, Pipe

MiB = 1024 * 1024
WIRE = ModelParams(wire_rate=1024**3, shaped=False)  # 1 GiB/s, no shaped link


def outcome(text: str, policy: str, params: ModelParams = WIRE):  # type: ignore[no-untyped-def]
    return simulate(inputs_from(parse_scenario(text), params), policy)


RAM_ONLY = """
[guest]
ram-size = "64MiB"
[migration]
max-bandwidth = "64MiB/s"
avail-switchover-bandwidth = "64MiB/s"
downtime-limit = "300ms"
"""

ONE_VF = """
[guest]
ram-size = "16MiB"
[[device]]
name = "vf0"
initial-bytes = "8MiB"
stop-copy-size = "1MiB"
load-setup-time = "500ms"
load-rate = "1GiB/s"
stop-copy-load-time = "20ms"
{extra}
[migration]
max-bandwidth = "256MiB/s"
avail-switchover-bandwidth = "128MiB/s"
downtime-limit = "100ms"
{migration}
"""


def test_limiter_bursts_a_budget_per_window_then_sleeps() -> None:
    # 10 MB/s on a 100 MB/s wire: 1 MB per 100 ms window, sent in 10 ms.
    lim = Limiter(10e6, 100e6)
    end, ws, used = lim.plan(0.0, 2.5e6)
    # 1 MB in [0, 0.01], 1 MB in [0.1, 0.11], 0.5 MB in [0.2, 0.205]
    assert end == pytest.approx(0.205)
    assert (ws, used) == (pytest.approx(0.2), pytest.approx(0.5e6))
    # From 0 to 0.15: 1 MB (window 1) + 0.5 MB (0.05 s of window 2's burst at 100 MB/s... capped
    # by its 1 MB budget: 0.1..0.11 sends 1 MB) = 2 MB.
    assert lim.sendable(0.0, 0.15) == pytest.approx(2e6)


def test_limiter_does_not_bind_when_the_wire_is_slower() -> None:
    lim = Limiter(100e6, 10e6)
    assert lim.plan(0.0, 5e6)[0] == pytest.approx(0.5)  # 5 MB at the wire's 10 MB/s


def test_pipe_blocks_the_writer_after_the_buffer_while_the_destination_loads() -> None:
    # 1 MB/s wire, no limit; an image of 1 MB completes at t=1 and loads for 2 s: the
    # destination reads nothing in [1, 3). With a 0.5 MB buffer the next 1 MB goes 0.5 MB
    # in [1, 1.5], waits for the load to end at 3, then 0.5 MB more: done at 3.5.
    pipe = Pipe(Limiter(math.inf, 1e6), buffer=0.5e6)
    assert pipe.write(0.0, 1e6) == pytest.approx(1.0)
    stall = pipe.load(1.0, 2.0)
    assert (stall.start, stall.end) == (1.0, 3.0)
    assert pipe.write(1.0, 1e6) == pytest.approx(3.5)
    # A second image, complete at 3.5, waits for nothing (the reader is free): [3.5, 4.0).
    assert pipe.load(3.5, 0.5).end == pytest.approx(4.0)


def test_ram_only_rounds_and_final_copy() -> None:
    # 64 MiB, no dirtying, 6.4 MiB per window, threshold 64 MiB/s x 0.3 s = 19.2 MiB.
    # The estimate at the check of window k (t = 0.1 k) is 64 - 6.4 k: below 19.2 first at
    # k = 8 (12.8 MiB), t = 0.8 s -> sync, 12.8 MiB fits -> stop. Final copy at the wire's
    # 1 GiB/s: 12.8/1024 = 12.5 ms of downtime; guest +2 ms resume; total 0.8125 s.
    # Syncs: setup, the one at 0.8 s, the final one = 3.
    o = outcome(RAM_ONLY, "legacy")
    assert o.stop_s == pytest.approx(0.8)
    assert o.downtime_s == pytest.approx(0.0125)
    assert o.guest_downtime_s == pytest.approx(0.0145)
    assert o.total_time_s == pytest.approx(0.8125)
    assert o.iterations == 3
    assert o.downtime_bytes == pytest.approx(12.8 * MiB)


def test_legacy_stops_during_the_device_setup_and_pays_the_rest_of_it() -> None:
    # Window 1 (budget 25.6 MiB): RAM 16 + the initial image 8 = 24 MiB by 24/1024 =
    # 0.0234375 s. The destination loads it inline: setup 0.5 + 8 MiB / 1 GiB/s 0.0078125
    # -> busy until 0.53125. Nothing left to send: the source rests to the window's end,
    # 0.1 s, where the threshold (128 MiB/s x 0.1 s = 12.8 MiB) exists: pending = 1 MiB of
    # stop-copy -> legacy stops at 0.1. The final image (1 MiB, in the buffer by 0.101) loads
    # after the setup: 0.53125 + 20 ms + 1/1024 s = 0.5522265625.
    # Downtime = 0.5522265625 - 0.1 = 0.4522265625; setup left at the stop 0.43125.
    o = outcome(ONE_VF.format(extra="", migration=""), "legacy")
    assert o.stop_s == pytest.approx(0.1)
    assert o.downtime_s == pytest.approx(0.4522265625)
    assert o.guest_downtime_s == pytest.approx(0.4542265625)
    assert o.setup_in_downtime_s == pytest.approx(0.43125)
    assert o.ack_s == pytest.approx(0.53125)
    assert o.iterations == 3


def test_switchover_ack_waits_for_the_load_and_keeps_only_the_final_image() -> None:
    # Same run; the data fits from 0.1 but the ACK comes at 0.53125. One check per window
    # while waiting: 0.2, 0.3, 0.4, 0.5 (no ACK yet), 0.6 -> stop.
    # Downtime: 1 MiB at the wire 0.9765625 ms + 20 ms + 0.9765625 ms load = 21.953125 ms.
    # Syncs: setup + 6 exact (0.1 ... 0.6) + final = 8. The ACK costs 0.621953125 -
    # 0.5522265625 = 69.73 ms of total time; the penalty is 452.23 - 21.95 = 430.27 ms.
    text = ONE_VF.format(extra="", migration="")
    o = outcome(text, "switchover-ack")
    assert o.stop_s == pytest.approx(0.6)
    assert o.downtime_s == pytest.approx(0.021953125)
    assert o.iterations == 8
    assert o.setup_in_downtime_s == 0.0
    cell = predict(parse_scenario(text), ["legacy", "switchover-ack"], WIRE)
    assert cell.regime == "in-downtime"
    assert cell.ack_cost_s == pytest.approx(0.621953125 - 0.5522265625)
    assert cell.legacy_penalty_s == pytest.approx(0.4522265625 - 0.021953125)


def test_fixed_costs_save_and_config_load() -> None:
    # stop-copy-save-time 50 ms on the source, config-load-time 30 ms on the destination.
    # legacy: the save (0.1 -> 0.15) hides behind the setup still loading; the final image
    # still loads 0.53125 -> 0.5522265625, then the config: 0.5822265625.
    # Downtime 0.5822265625 - 0.1 = 0.4822265625.
    # switchover-ack: 0.6 + 50 ms save, 1 MiB 0.9765625 ms, load 20.9765625 ms, config
    # 30 ms: 101.953125 ms.
    text = ONE_VF.format(extra='stop-copy-save-time = "50ms"\nconfig-load-time = "30ms"', migration="")
    assert outcome(text, "legacy").downtime_s == pytest.approx(0.4822265625)
    ack = outcome(text, "switchover-ack")
    assert ack.downtime_s == pytest.approx(0.101953125)
    assert ack.save_s == pytest.approx(0.05)


def test_without_return_path_downtime_ends_at_the_last_byte() -> None:
    # legacy as above: the final 1 MiB is in the buffer at 0.1 + 1/1024 s, so QEMU reports
    # ~1 ms; the guest still waits for the setup: 454.23 ms.
    o = outcome(ONE_VF.format(extra="", migration="return-path = false"), "legacy")
    assert o.downtime_s == pytest.approx(1 / 1024)
    assert o.guest_downtime_s == pytest.approx(0.4542265625)


def test_two_devices_load_one_after_the_other() -> None:
    # vf0 (setup 0.5 s) and vf1 (setup 0.3 s), 8 MiB initial each. Window 1: RAM 16, vf0 8
    # (complete at 0.0234375, loads until 0.53125), vf1 1.6 MiB: budget spent, check at 0.1:
    # estimate 6.4 < 12.8 -> pending 2 x 6.4 + 1 + 1 = 14.8 MiB does not fit; send vf1's
    # 6.4 MiB (to position 32 MiB = 24 + the 8 MiB buffer) by 0.10625. vf1 waits for vf0:
    # loads 0.53125 -> 0.53125 + 0.3 + 0.0078125 = 0.8390625 = the ACK.
    # legacy stops at 0.10625 (pending 2 MiB); vf0's final waits behind the buffer until
    # 0.53125 and loads after vf1's initial: 0.8390625 + 0.0209765625, then vf1's final:
    # + 0.0209765625 = 0.881015625. Downtime 0.881015625 - 0.10625 = 0.774765625.
    vf1 = ('[[device]]\nname = "vf1"\ninitial-bytes = "8MiB"\nstop-copy-size = "1MiB"\n'
           'load-setup-time = "300ms"\nload-rate = "1GiB/s"\nstop-copy-load-time = "20ms"\n')
    text = ONE_VF.format(extra="", migration="").replace("[migration]", vf1 + "[migration]")
    o = outcome(text, "legacy")
    assert o.ack_s == pytest.approx(0.8390625)
    assert o.stop_s == pytest.approx(0.10625)
    assert o.downtime_s == pytest.approx(0.774765625)


def test_per_chunk_loads_stall_the_stream_early_and_pre_copy_absorbs_the_setup() -> None:
    # load-trigger per-chunk: the first 1 MiB chunk pays the 0.5 s setup when it arrives,
    # while 63 MiB of the initial image are still to send (more than the 8 MiB buffer): the
    # source blocks behind the load, and the setup ends long before anything could fit.
    # image-complete: the setup starts at the image's last byte and legacy stops inside it.
    big = ONE_VF.replace('initial-bytes = "8MiB"', 'initial-bytes = "64MiB"')
    chunked = big.format(extra='load-trigger = "per-chunk"', migration="")
    cell = predict(parse_scenario(chunked), ["legacy", "switchover-ack"], WIRE)
    assert cell.regime == "absorbed"
    # What remains at the stop is the load of the last chunks still in the buffer (~5 ms).
    assert cell.outcomes["legacy"].setup_in_downtime_s < 0.01
    assert cell.outcomes["legacy"].stop_s > 0.5  # the setup went into pre-copy instead
    whole = predict(parse_scenario(big.format(extra="", migration="")), ["legacy"], WIRE)
    assert whole.regime == "in-downtime"
    assert whole.setup_in_downtime_s > 0.4


def test_a_guest_that_dirties_faster_than_the_link_never_converges() -> None:
    text = RAM_ONLY.replace('ram-size = "64MiB"', 'ram-size = "64MiB"\ndirty-rate = "256MiB/s"')
    o = outcome(text, "legacy", ModelParams(wire_rate=1024**3, shaped=False, horizon=5.0))
    assert o.outcome == "no-convergence" and o.basis == ""  # nothing decided
    capped = text.replace('downtime-limit = "300ms"', 'downtime-limit = "300ms"\nmax-iterations = 5')
    forced = outcome(capped, "legacy")
    assert forced.outcome == "completed" and forced.forced_by_cap == "max-iterations"
    assert forced.basis == "cap"  # as the engine records a forced switchover
    cancel = capped.replace("max-iterations = 5", 'max-iterations = 5\ncap-action = "cancel"')
    cancelled = outcome(cancel, "legacy")
    assert (cancelled.outcome, cancelled.basis) == ("cancelled", "cap")


def test_qemu_9_interleaves_device_data_with_ram_when_the_wire_is_the_limit() -> None:
    # 256 MiB of RAM, a 4 MiB initial image; max-bandwidth 2 GiB/s on the 1 GiB/s wire, so
    # the limit never binds (the threshold, measured, is ~1 GiB/s x 20 ms ~ 21 MiB). QEMU >=
    # 9.0: each 50 ms of RAM (51.2 MiB) is followed by a 1 MiB VFIO block, the image
    # completes after 4 turns (~0.2 s) with 51 MiB of RAM still to send (more than the
    # threshold and the 8 MiB buffer): the source blocks behind the 0.5 s setup, which
    # pre-copy absorbs. QEMU 8.1 sends the device after RAM's pass: the image completes at
    # the end, legacy stops at once and the setup lands in the downtime.
    text = """
[guest]
ram-size = "256MiB"
[[device]]
name = "vf0"
initial-bytes = "4MiB"
stop-copy-size = "1MiB"
load-setup-time = "500ms"
load-rate = "1GiB/s"
[migration]
max-bandwidth = "2GiB/s"
downtime-limit = "20ms"
qemu-version = "{version}"
"""
    new = predict(parse_scenario(text.format(version="10.0")), ["legacy"], WIRE)
    old = predict(parse_scenario(text.format(version="8.1")), ["legacy"], WIRE)
    assert new.regime == "absorbed"
    assert new.outcomes["legacy"].ack_s == pytest.approx((4 * 51.2 + 4) / 1024 + 0.5 + 4 / 1024, abs=0.002)
    assert old.regime == "in-downtime"
    assert old.setup_in_downtime_s > 0.4


def test_multifd_device_state_loads_final_images_in_parallel() -> None:
    # Two devices, each with a 100 ms fixed final-image cost, under switchover-ack (setups
    # over before the stop). On the main stream they load one after the other (>= 200 ms of
    # downtime); with QEMU 10's multifd device state each has its own load thread (~100 ms).
    vf1 = ('[[device]]\nname = "vf1"\ninitial-bytes = "8MiB"\nstop-copy-size = "1MiB"\n'
           'load-setup-time = "300ms"\nload-rate = "1GiB/s"\nstop-copy-load-time = "100ms"\n')
    base = ONE_VF.replace('stop-copy-load-time = "20ms"', 'stop-copy-load-time = "100ms"')
    serial = base.format(extra="", migration="").replace("[migration]", vf1 + "[migration]")
    parallel = base.format(extra="", migration='multifd = true\ndevice-state-transfer = "multifd"').replace(
        "[migration]", vf1 + "[migration]", 1)
    one_after_other = outcome(serial, "switchover-ack").downtime_s
    side_by_side = outcome(parallel, "switchover-ack").downtime_s
    assert one_after_other >= 0.2
    assert 0.1 <= side_by_side < 0.11


def test_a_wire_schedule_that_never_changes_predicts_what_the_constant_wire_does() -> None:
    import dataclasses

    from migbed.core.scenario import resolve_scenario
    from migbed.model.pipe import WireSchedule

    inp = inputs_from(resolve_scenario("sharing-check"), ModelParams(shaped=False))
    for policy in ("legacy", "switchover-ack"):
        flat = dataclasses.replace(inp, precopy_wire=100e6, stop_wire=100e6)
        sched = dataclasses.replace(inp, precopy_wire=WireSchedule([(0.0, 100e6), (50.0, 100e6)]),
                                    stop_wire=WireSchedule([(0.0, 100e6)]))
        a, b = simulate(flat, policy), simulate(sched, policy)
        assert b.total_time_s == pytest.approx(a.total_time_s, rel=1e-9)
        assert b.guest_downtime_s == pytest.approx(a.guest_downtime_s, rel=1e-9)


def test_a_wire_that_doubles_halfway_ends_sooner_and_sends_by_its_integral() -> None:
    from migbed.model.pipe import WireSchedule

    w = WireSchedule([(0.0, 10.0), (2.0, 20.0)])
    assert float(w) == 20.0 and w.bytes_between(1.0, 3.0) == 30.0
    assert w.send_end(0.0, 40.0) == 3.0  # 20 bytes by t=2, then 20 more at 20/s
    assert Limiter(math.inf, w).plan(1.0, 10.0)[0] == 2.0
    with pytest.raises(ValueError, match="below max-bandwidth"):
        Limiter(15.0, w)
