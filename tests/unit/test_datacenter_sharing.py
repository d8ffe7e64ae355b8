"""Max-min fair sharing: hand-checked cases, and the incremental solver against a global
re-solve after every change on random networks."""

from __future__ import annotations

import math
import random

import pytest

from migbed.datacenter.sharing import FairShare, SharingError, global_max_min


def rates(share: FairShare) -> dict[int, float]:
    return dict(share.rate)


def test_flows_on_one_link_share_it_equally_and_a_limit_leaves_the_rest_to_others() -> None:
    share = FairShare([100.0])
    for f in range(4):
        share.add(f, [0])
    share.solve()
    assert rates(share) == pytest.approx({0: 25, 1: 25, 2: 25, 3: 25})
    share.set_limit(0, 10.0)
    share.solve()
    assert rates(share) == pytest.approx({0: 10, 1: 30, 2: 30, 3: 30})
    share.remove(1)
    changed = share.solve()
    assert rates(share) == pytest.approx({0: 10, 2: 45, 3: 45})
    assert set(changed) == {2, 3}


def test_the_textbook_case_two_links() -> None:
    # Links A (cap 10) and B (cap 4): flow 0 on A and B, flow 1 on A only, flow 2 on B only.
    share = FairShare([10.0, 4.0])
    share.add(0, [0, 1])
    share.add(1, [0])
    share.add(2, [1])
    share.solve()
    assert rates(share) == pytest.approx({0: 2, 1: 8, 2: 2})


def test_a_new_flow_saturating_an_idle_link_brings_a_faster_outsider_down() -> None:
    # Flow 0 alone on links 0 (cap 10) and 1 (cap 100) runs at 10; flow 1 on link 1 and 2
    # (cap 100): 90. Flow 2 on link 1 only: link 1 must be shared 45/45... but flow 0 keeps 10.
    share = FairShare([10.0, 100.0, 100.0])
    share.add(0, [0, 1])
    share.add(1, [1, 2])
    share.solve()
    assert rates(share) == pytest.approx({0: 10, 1: 90})
    share.add(2, [1])
    share.solve()
    assert rates(share) == pytest.approx({0: 10, 1: 45, 2: 45})


def test_bad_use_is_refused() -> None:
    with pytest.raises(SharingError, match="capacity"):
        FairShare([0.0])
    share = FairShare([1.0])
    with pytest.raises(SharingError, match="out of range"):
        share.add(0, [3])
    with pytest.raises(SharingError, match="not sharing"):
        share.remove(7)


@pytest.mark.parametrize("seed", range(12))
def test_incremental_equals_a_global_re_solve_after_every_change(seed: int) -> None:
    rng = random.Random(seed)
    links = [rng.choice([10.0, 25.0, 40.0, 100.0]) for _ in range(rng.randint(3, 14))]
    share = FairShare(links)
    live: dict[int, tuple[int, ...]] = {}
    next_id = 0
    for _ in range(150):
        op = rng.random()
        if op < 0.5 or not live:
            path = tuple(rng.sample(range(len(links)), rng.randint(1, min(4, len(links)))))
            limit = rng.choice([math.inf, math.inf, 5.0, 12.0, 30.0])
            share.add(next_id, path, limit)
            live[next_id] = path
            next_id += 1
        elif op < 0.85:
            f = rng.choice(sorted(live))
            share.remove(f)
            del live[f]
        else:
            share.set_limit(rng.choice(sorted(live)), rng.choice([math.inf, 3.0, 20.0]))
        if rng.random() < 0.7:  # several changes at one instant are solved together too
            share.solve()
            expected = global_max_min(links, live, share.limit)
            assert share.rate == pytest.approx(expected, rel=1e-6, abs=1e-9)
            for link, cap in enumerate(links):
                assert share.load[link] <= cap * (1 + 1e-9)
