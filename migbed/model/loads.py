"""One device on the model's destination, as the target's DeviceLoadProgress reports it.

The engine's policies read the destination through the reports the target sends on the
return path (services/target/devices.py `LoadingDevice.progress`): bytes loaded, the
backlog written into the device and not loaded yet, wall time inside loads, the load rate
it measured (bytes / time of the loads that carried bytes: the first pays the setup, so the
rate is low until more data has loaded), whether a load runs now, whether the initial data
is loaded. The model knows when each of the device's bytes reached the destination and when
each load ran (pipe.py); `LoadLog.view(t)` turns that into the same report at time t.

Loads on the main stream run one after another, so their ends only grow: a view is a
binary search, cheap enough for every check of a thousand-cell scan.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass, field

from migbed.core.policy import TargetLoad


@dataclass
class LoadLog:
    arrived_t: list[float] = field(default_factory=list)  # when bytes reached the device
    arrived_total: list[float] = field(default_factory=list)  # cumulative bytes by then
    starts: list[float] = field(default_factory=list)  # each load's start, in order
    ends: list[float] = field(default_factory=list)  # ... and end (non-decreasing)
    loaded_total: list[float] = field(default_factory=list)  # cumulative bytes loaded
    busy_total: list[float] = field(default_factory=list)  # cumulative s inside loads
    first_initial_at: float = math.nan  # the first initial chunk's arrival

    def arrive(self, t: float, nbytes: float, initial: bool = False) -> None:
        if initial and math.isnan(self.first_initial_at):
            self.first_initial_at = t
        self.arrived_t.append(t)
        self.arrived_total.append((self.arrived_total[-1] if self.arrived_total else 0.0) + nbytes)

    def load(self, start: float, end: float, nbytes: float) -> None:
        """A data load of `nbytes` (the first one includes the device's setup)."""
        self.starts.append(start)
        self.ends.append(end)
        self.loaded_total.append((self.loaded_total[-1] if self.loaded_total else 0.0) + nbytes)
        self.busy_total.append((self.busy_total[-1] if self.busy_total else 0.0) + end - start)

    def view(self, t: float, initial_loaded_at: float) -> TargetLoad:
        """The report at t: loads count once they end, as the target adds them up."""
        k = bisect_right(self.ends, t)
        loaded = self.loaded_total[k - 1] if k else 0.0
        busy = self.busy_total[k - 1] if k else 0.0
        a = bisect_right(self.arrived_t, t)
        arrived = self.arrived_total[a - 1] if a else 0.0
        initial_loaded = not math.isnan(initial_loaded_at) and initial_loaded_at <= t
        return TargetLoad(
            loaded_bytes=round(loaded), backlog_bytes=max(0, round(arrived - loaded)),
            busy_s=busy, measured_load_rate=loaded / busy if busy > 0 else 0.0,
            loading=k < len(self.starts) and self.starts[k] <= t,
            initial_loaded=initial_loaded,
            initial_load_s=initial_loaded_at - self.first_initial_at if initial_loaded else 0.0)
