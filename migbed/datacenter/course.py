"""A migration's course from the analytical model, as a cheap function of its bandwidth.

The model (migbed.model.simulate) predicts one migration on a wire of constant rate. At
datacenter scale a migration's share of the network changes whenever another starts or
ends, and 200 000 model runs would not fit the time goal. So:

- **Bandwidth classes.** The model runs once per (guest kind, policy, class): classes are
  geometric, `step` wide (2 %: a bandwidth is rounded by at most ~1 %), and every
  migration that starts with a share in the same class shares the prediction.
- **The course.** From that prediction a migration's course is cut into what needs the
  network and what does not: pre-copy sends `precopy_bytes` (at most max-bandwidth), then
  idles `precopy_idle_s` (waiting for the ACK, or blocked behind a destination load); the
  downtime saves on the source (`save_s`), sends `downtime_bytes` at the wire's rate, then
  waits `downtime_fixed_s` (destination loads, writes blocked behind them).
  At the class's bandwidth, constant, the course takes exactly the model's times.
- **Changes on the way.** The simulator keeps the byte counts and fixed times chosen at
  the start and re-times only the transfers as the share moves (the bytes go at whatever
  rate the sharing gives). What this leaves out: a longer transfer lets the guest dirty
  more pages, and the switchover decision sees another bandwidth; docs/datacenter.md
  measures the error against real migrations whose bandwidth changed under them.

Pure: no clock, no I/O.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from migbed.core.scenario import Scenario
from migbed.model import ModelParams, Outcome, inputs_from, simulate
from migbed.model.inputs import Inputs
from migbed.model.pipe import WireSchedule

MIN_CLASS_RATE = 1e5  # bytes/s: below this a migration is stalled, not slow


@dataclass(frozen=True)
class Course:
    outcome: str  # completed | cancelled | no-convergence (the model's)
    bandwidth: float  # bytes/s: the class's bandwidth the model ran at
    precopy_bytes: float
    precopy_idle_s: float
    precopy_cap: float  # bytes/s: the migration's max-bandwidth in pre-copy
    save_s: float
    downtime_bytes: float
    downtime_fixed_s: float
    setup_s: float  # QEMU's setup time before pre-copy (a model parameter)
    guest_extra_s: float  # guest-visible minus QEMU-reported downtime (the resume)
    model: Outcome  # the prediction the course was cut from
    low: float = 0.0  # bytes/s: the bandwidths of its class, [low, high)
    high: float = 0.0


def course_from(outcome: Outcome, inp: Inputs, bandwidth: float) -> Course:
    """Cut the model's prediction at `bandwidth` into transfers and fixed times."""
    params = inp.params
    cap = inp.max_bandwidth
    precopy_rate = min(cap, bandwidth)
    if outcome.outcome != "completed":  # pre-copy until the model gave up or cancelled
        span = outcome.total_time_s - params.setup
        idle = max(0.0, span - outcome.precopy_bytes / precopy_rate)
        return Course(outcome.outcome, bandwidth, outcome.precopy_bytes, idle, cap, 0.0, 0.0, 0.0,
                      params.setup, 0.0, outcome)
    idle = max(0.0, outcome.stop_s - outcome.precopy_bytes / precopy_rate)
    fixed = max(0.0, outcome.downtime_s - outcome.save_s - outcome.downtime_bytes / bandwidth)
    return Course("completed", bandwidth, outcome.precopy_bytes, idle, cap, outcome.save_s,
                  outcome.downtime_bytes, fixed, params.setup,
                  outcome.guest_downtime_s - outcome.downtime_s, outcome)


class CourseCache:
    """Courses per (guest kind, policy, bandwidth class), computed on first use."""

    def __init__(self, scenarios: list[Scenario], step: float = 0.02,
                 params: ModelParams | None = None) -> None:
        if not 0 < step < 1:
            raise ValueError(f"step = {step}: allowed 0 .. 1 (exclusive)")
        params = params or ModelParams(shaped=False)
        self.inputs = [inputs_from(s, params) for s in scenarios]
        self.step = step
        self._log_step = math.log1p(step)
        self._courses: dict[tuple[int, str, int], Course] = {}
        self.model_runs = 0

    def bandwidth_class(self, bandwidth: float) -> int:
        return round(math.log(max(bandwidth, MIN_CLASS_RATE)) / self._log_step)

    def class_bandwidth(self, k: float) -> float:
        return math.exp(k * self._log_step)

    def course(self, kind: int, policy: str, bandwidth: float) -> Course:
        k = self.bandwidth_class(bandwidth)
        key = (kind, policy, k)
        found = self._courses.get(key)
        if found is None:
            found = dataclasses.replace(self.exact(kind, policy, self.class_bandwidth(k)),
                                        low=self.class_bandwidth(k - 0.5), high=self.class_bandwidth(k + 0.5))
            self._courses[key] = found
        return found

    def exact(self, kind: int, policy: str, bandwidth: float) -> Course:
        """The model at exactly `bandwidth` (no class, no cache)."""
        inp = dataclasses.replace(self.inputs[kind], precopy_wire=bandwidth, stop_wire=bandwidth)
        self.model_runs += 1
        return course_from(simulate(inp, policy), inp, bandwidth)

    def on_schedule(self, kind: int, policy: str, changes: list[tuple[float, float]]) -> Outcome:
        """The model run on a wire whose rate changes as `changes` says ((s from the
        migration's start, bytes/s)): the reference the course approximation is measured
        against. Only for guests whose max-bandwidth is above every rate (pipe.WireSchedule)."""
        schedule = WireSchedule([(max(0.0, t), max(rate, MIN_CLASS_RATE)) for t, rate in changes])
        inp = dataclasses.replace(self.inputs[kind], precopy_wire=schedule, stop_wire=schedule)
        self.model_runs += 1
        return simulate(inp, policy)

    def keys(self) -> list[tuple[int, str, int]]:
        """(guest kind, policy, bandwidth class) of every course computed so far."""
        return list(self._courses)
