"""The guest's dirtying workload: which pages (or device blocks) are written in each tick.

A writable working set (Clark et al. 2005): writes land on a hot set of pages that is
re-dirtied every round, so a higher dirty rate does not mean more distinct pages. The
"uniform" pattern spreads writes over all of memory instead. Pure: the caller supplies dt.
"""

from __future__ import annotations

import numpy as np


class Workload:
    """Turns a byte rate into page indices per tick, carrying fractions between ticks."""

    def __init__(
        self, rate_bytes_per_s: float, unit: int, units: int, hot_units: int, seed: int
    ) -> None:
        self.rate_units = rate_bytes_per_s / unit  # pages (or blocks) per second
        self.units = units
        self.hot = max(1, min(hot_units, units))
        self._rng = np.random.default_rng(seed)
        self._carry = 0.0

    def next(self, dt: float) -> np.ndarray:
        """Indices written during the next dt seconds (may repeat a hot page)."""
        want = self.rate_units * dt + self._carry
        n = int(want)
        self._carry = want - n
        if n == 0:
            return np.empty(0, dtype=np.int64)
        return self._rng.integers(0, self.hot, size=n, dtype=np.int64)


def guest_workload(
    ram_size: int, page_size: int, dirty_rate: float, working_set: int, uniform: bool, seed: int
) -> Workload:
    pages = ram_size // page_size
    hot = pages if uniform else max(1, working_set // page_size)
    return Workload(dirty_rate, page_size, pages, hot, seed)
