"""Bytes sent, by kind and by stage, as query-migrate counts them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Counters:
    ram_transferred: int = 0
    device_transferred: int = 0
    precopy_bytes: int = 0  # sent while the guest ran
    downtime_bytes: int = 0  # sent after the stop

    def ram(self, nbytes: int, downtime: bool) -> None:
        self.ram_transferred += nbytes
        self._stage(nbytes, downtime)

    def device(self, nbytes: int, downtime: bool) -> None:
        self.device_transferred += nbytes
        self._stage(nbytes, downtime)

    def _stage(self, nbytes: int, downtime: bool) -> None:
        if downtime:
            self.downtime_bytes += nbytes
        else:
            self.precopy_bytes += nbytes
