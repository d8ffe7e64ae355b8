"""A device loader on the target: writes chunks into the device in stream order, in real time.

Receipt never waits for loading: the session queues chunks here and goes on reading RAM.
Each chunk is charged to the device's LoadCost clock and the loader waits until that clock
says the chunk is loaded (sleeping only when the debt exceeds a couple of milliseconds, so
the total is exact without a sleep per chunk). On the INIT_DATA_SENT marker, once all
before it is loaded, the device approves the switchover.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from migbed.core.clock import now_ns
from migbed.core.device import TargetDevice
from migbed.core.loadcost import LoadCost

MIN_SLEEP_S = 0.002
_MARKER = "init-data-sent"


@dataclass
class LoadStatus:
    loaded_bytes: int
    backlog_bytes: int
    setup_remaining_s: float
    initial_loaded: bool
    load_rate: float
    stop_copy_load_time_s: float
    initial_loaded_ns: int
    initial_load_s: float


class DeviceLoader:
    def __init__(
        self, device: TargetDevice, cost: LoadCost, on_initial_loaded: Callable[[], None]
    ) -> None:
        self.device = device
        self.cost = cost
        self.on_initial_loaded = on_initial_loaded
        self.queue: asyncio.Queue[tuple[str, int, bytes]] = asyncio.Queue()
        self.backlog_bytes = 0
        self.initial_loaded = False
        self.initial_loaded_ns = 0
        self._first_initial_s: float | None = None
        self._initial_load_s = 0.0
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"load-{self.device.name}")

    def put(self, kind: str, offset: int, data: bytes) -> None:
        self.backlog_bytes += len(data)
        self.queue.put_nowait((kind, offset, data))

    def put_marker(self) -> None:
        self.queue.put_nowait((_MARKER, 0, b""))

    async def drain(self) -> None:
        """Wait until everything queued so far is loaded."""
        await self.queue.join()
        await self._settle()

    def status(self) -> LoadStatus:
        now = time.monotonic()
        return LoadStatus(
            loaded_bytes=self.device.loaded_bytes,
            backlog_bytes=self.backlog_bytes,
            setup_remaining_s=self.cost.setup_remaining(now),
            initial_loaded=self.initial_loaded,
            load_rate=self.cost.load_rate,
            stop_copy_load_time_s=self.cost.stop_copy_load_time,
            initial_loaded_ns=self.initial_loaded_ns,
            initial_load_s=self._initial_load_s,
        )

    async def _run(self) -> None:
        while True:
            kind, offset, data = await self.queue.get()
            try:
                now = time.monotonic()
                if kind == _MARKER:
                    await self._settle()
                    self.initial_loaded = True
                    self.initial_loaded_ns = now_ns()
                    if self._first_initial_s is not None:
                        self._initial_load_s = time.monotonic() - self._first_initial_s
                    self.on_initial_loaded()
                    continue
                if kind == "initial" and self._first_initial_s is None:
                    self._first_initial_s = now
                done = self.cost.charge(now, kind, len(data))
                self.device.write(offset, data)
                self.backlog_bytes -= len(data)
                if done - time.monotonic() > MIN_SLEEP_S:
                    await asyncio.sleep(done - time.monotonic())
            finally:
                self.queue.task_done()

    async def _settle(self) -> None:
        """Wait out what is still owed to the cost clock."""
        debt = self.cost.busy_until - time.monotonic()
        if debt > 0:
            await asyncio.sleep(debt)
