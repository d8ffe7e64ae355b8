"""The return path's periodic device reports, which are also the target's sign of life.

Each device's progress goes back when it changes, every period while it loads, and every
few periods anyway: the source takes the return path as the target's sign of life, and
pongs come only as fast as the main stream's reader works through the data ahead of them.
"""

from __future__ import annotations

from migbed.wire import migration_pb2 as pb

from .parts import Parts

PROGRESS_PERIOD_S = 0.05  # while a device loads, the return path says so this often
KEEPALIVE_PERIODS = 4  # an unchanged device's progress is repeated this often (200 ms)


class ProgressReports:
    def __init__(self, parts: Parts) -> None:
        self.p = parts
        self._last: list[pb.DeviceLoadProgress | None] = [None] * len(parts.devices)
        self._beat = 0  # periods since the last keepalive, modulo KEEPALIVE_PERIODS

    def next_period(self) -> None:
        """One period's reports (called every PROGRESS_PERIOD_S)."""
        self._beat = (self._beat + 1) % KEEPALIVE_PERIODS
        for i, dev in enumerate(self.p.devices):
            p = dev.progress()
            if p == self._last[i] and not p.loading and self._beat:
                continue
            self._last[i] = p
            self.p.send(pb.TargetMessage(load_progress=p))
            if self.p.metrics is not None:
                self.p.metrics.on_load_progress(self.p.scenario, dev.name, p.loaded_bytes,
                                                p.backlog_bytes, p.busy_s / self.p.time_dilation,
                                                p.loading, p.initial_loaded)
