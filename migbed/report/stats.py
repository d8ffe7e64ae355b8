"""How repeats of one figure are summarised, in one place: median [min-max].

The terminal table, the HTML report and the plots all show this summary, so the number a
user reads is the same in every view. The median, because a few repeats with one slow
outlier (a loaded CI machine) should not move the figure the way a mean does.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

SUMMARY = "median [min-max] over completed runs"


@dataclass(frozen=True)
class Spread:
    median: float
    low: float
    high: float
    count: int


def spread(values: Sequence[float]) -> Spread | None:
    """The median and range of `values`; None when there are none."""
    if not values:
        return None
    return Spread(statistics.median(values), min(values), max(values), len(values))


def format_spread(values: Sequence[float], scale: float = 1.0, digits: int = 0) -> str:
    """``median [min-max]`` (just the value for one, ``-`` for none), each divided by `scale`."""
    s = spread(values)
    if s is None:
        return "-"
    med, lo, hi = (x / scale for x in (s.median, s.low, s.high))
    if s.count == 1:
        return f"{med:.{digits}f}"
    return f"{med:.{digits}f} [{lo:.{digits}f}-{hi:.{digits}f}]"
