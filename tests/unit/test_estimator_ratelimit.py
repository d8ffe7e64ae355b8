"""Rate limiter and bandwidth/threshold estimator (the load model: test_loadmodel.py)."""

import pytest

from migbed.core.estimator import Estimator
from migbed.core.ratelimit import RateLimiter


def test_rate_limiter_budget_per_window() -> None:
    rl = RateLimiter(1_000_000)  # 100 kB per 100 ms window
    assert rl.allowance(0.0) == 100_000
    rl.consume(0.01, 60_000)
    assert rl.allowance(0.02) == 40_000
    assert rl.wait(0.02) == 0.0
    rl.consume(0.03, 40_000)
    assert rl.wait(0.04) == pytest.approx(0.06)
    assert rl.allowance(0.10) == 100_000  # a new window


def test_rate_limiter_sustains_its_rate() -> None:
    rl = RateLimiter(10_000_000)
    t, sent = 0.0, 0
    while t < 1.0:
        n = min(rl.allowance(t), 65_536)
        if n == 0:
            t += rl.wait(t)
            continue
        rl.consume(t, n)
        sent += n
        t += 0.0001
    assert sent == pytest.approx(10_000_000, rel=0.02)


def test_rate_limiter_off_for_the_final_copy() -> None:
    rl = RateLimiter(1000)
    rl.enabled = False
    assert rl.allowance(0) > 10**15 and rl.wait(0) == 0


def test_estimator_windows_threshold_expected_downtime() -> None:
    e = Estimator(downtime_limit=0.3)
    e.start(0.0)
    e.on_sent(50_000_000)
    assert not e.update(0.05)  # window not over
    assert e.threshold == 0.0  # QEMU starts at 0: no switchover in the first window
    e.on_sync(10_000_000)
    assert e.expected_downtime == pytest.approx(0.3)  # QEMU starts at downtime-limit
    assert e.update(0.1)  # no dirty-pages-rate yet: expected_downtime is not recomputed
    assert e.bandwidth == pytest.approx(500_000_000)
    assert e.threshold == pytest.approx(150_000_000)
    assert e.expected_downtime == pytest.approx(0.3)
    e.on_sent(50_000_000)
    assert e.update(0.2, dirty_pages_rate=100.0)
    assert e.expected_downtime == pytest.approx(0.02)  # dirty bytes at the sync / bandwidth
    e.on_sent(5_000)  # <= 10000 bytes in the window: QEMU keeps the old value
    assert e.update(0.31, dirty_pages_rate=100.0)
    assert e.expected_downtime == pytest.approx(0.02)


def test_avail_switchover_bandwidth_replaces_measured_for_threshold_and_expected_downtime() -> None:
    e = Estimator(downtime_limit=0.3, avail_switchover_bandwidth=1_000_000_000)
    e.start(0.0)
    e.on_sent(1_000)
    e.on_sync(100_000_000)
    e.update(0.1, dirty_pages_rate=1.0)
    assert e.bandwidth == pytest.approx(10_000)
    assert e.threshold == pytest.approx(300_000_000)
    # QEMU 8.2+: expected-downtime uses the expected (avail) bandwidth too.
    e.on_sent(20_000)
    e.update(0.2, dirty_pages_rate=1.0)
    assert e.expected_downtime == pytest.approx(0.1)

