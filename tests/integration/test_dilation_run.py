"""One dilated migration between the real services, verified, and reported in virtual time.

K = 3 on a scenario whose device pays a 400 ms load setup: the run must take about three
times its virtual length on the wall clock (the services really ran it slower), while the
record, its samples and the live progress say what the virtual run did (the setup ~400 ms,
one sample per virtual 100 ms window).
"""

from __future__ import annotations

import time

from shared_scenarios import one_vf

from migbed.core.scenario import parse_scenario
from migbed.experiments.controller import SourceControl
from migbed.experiments.localstack import Service
from migbed.measure.record import ProgressSample

K = 3.0
SETUP_S = 0.4
SCENARIO = f"time-dilation = {K}\n" + one_vf("dilated", setup=f"{SETUP_S * 1000:.0f}ms")


def test_a_dilated_run_is_verified_and_virtual(stack: tuple[Service, Service]) -> None:
    source, target = stack
    assert parse_scenario(SCENARIO).time_dilation == K
    samples: list[ProgressSample] = []
    control = SourceControl(source.address)
    try:
        started = time.monotonic()
        control.start(SCENARIO, "switchover-ack", target.address, "dilated-0", {"repeat": "0"})
        r = control.watch("dilated-0", samples.append)
        wall_s = time.monotonic() - started
    finally:
        control.close()
    assert r.outcome == "completed" and r.verified, r.error
    assert r.time_dilation == K
    # The device's first load paid its setup: ~400 ms virtual (1.2 s real), plus its bytes.
    load_ms = r.device_initial_load_ms["vf0"]
    assert SETUP_S * 1e3 <= load_ms < SETUP_S * 1e3 + 150, load_ms
    # ... and the run really took K times as long: the setup alone is K x 400 ms of wall time.
    assert wall_s >= K * SETUP_S, wall_s
    assert wall_s >= K * r.total_time_ms / 1e3 * 0.95, (wall_s, r.total_time_ms)
    # One sample per virtual 100 ms window: the engine's window was dilated too.
    windows = r.total_time_ms / 100
    assert len(r.timeline) <= windows + 3, (len(r.timeline), windows)
    # The live samples are the record's, in virtual time as well.
    assert [s.t_ms for s in samples] == [s.t_ms for s in r.timeline]
    assert all(s.t_ms <= r.total_time_ms for s in samples)
    # The guest-visible downtime's parts still add up (each was divided by K).
    parts = r.stop_lag_ms + r.stop_copy_ms + r.delivery_ms + r.destination_load_ms + r.resume_ms
    assert abs(parts - r.guest_downtime_ms) < 1e-6
