"""What loading device state costs on the destination, in time: the mlx5 lesson.

Loading is sequential per device, in stream order, as mlx5 loads each image synchronously
on write. The first chunk of any kind pays a data-size independent setup (the initial image
may only arrive in stop-copy when the source switched early: the setup is then paid in the
downtime, which is the point) (firmware allocating
and building device resources); every byte pays 1/load_rate; the final image pays a fixed
stop-copy cost on top. The model is a clock of "busy until" instants: the caller (the
target's loader) waits until them in real time. Pure: time is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LoadCost:
    setup_time: float  # s, paid once, before the first chunk loads
    load_rate: float  # bytes/s
    stop_copy_load_time: float  # s, paid once, on the first final chunk

    def __post_init__(self) -> None:
        if self.load_rate <= 0:
            raise ValueError("load_rate must be positive")
        self.busy_until = 0.0
        self.setup_started_at: float | None = None
        self.setup_done_at: float | None = None
        self._final_started = False

    def charge(self, now: float, kind: str, nbytes: int) -> float:
        """Account for loading one chunk that is ready at `now`; return when it is loaded."""
        start = max(now, self.busy_until)
        if self.setup_started_at is None:
            self.setup_started_at = start
            start += self.setup_time
            self.setup_done_at = start
        if kind == "final" and not self._final_started:
            self._final_started = True
            start += self.stop_copy_load_time
        self.busy_until = start + nbytes / self.load_rate
        return self.busy_until

    def setup_remaining(self, now: float) -> float:
        """Setup work not yet done at `now` (the full setup if it has not started)."""
        if self.setup_done_at is None:
            return self.setup_time
        return max(0.0, self.setup_done_at - now)

    def backlog_time(self, now: float) -> float:
        """Time until everything charged so far is loaded."""
        return max(0.0, self.busy_until - now)
