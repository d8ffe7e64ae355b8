"""The source's link to the target: the main stream, the return path, pings and liveness.

One object owns the gRPC channel and the Migrate call: it writes SourceMessages (one
writer at a time), reads the return path on its own task (pongs feed the clock offset,
load progress the device reports, everything else is kept for whoever waits for it),
pings every 100 ms, and decides when the peer is lost.

A blocked write is not a dead peer. The destination loads device data inline: while a
device loads, it reads nothing more from the main stream, so HTTP/2 flow control blocks
the source's writes for as long as the load takes (seconds for an mlx5-like setup). The
target reports DeviceLoadProgress every ~50 ms while it loads, so the link fails a
blocked write only when the return path is silent too. And when the silence is this
process's own (the source was frozen or starved), it says so instead of blaming the target.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import grpc

from migbed.core.clock import OffsetEstimator, boot_id, now_ns
from migbed.core.policy import TargetLoad
from migbed.wire import migration_pb2 as pb
from migbed.wire.channel import stream_channel
from migbed.wire.encode import migrate_stream
from migbed.wire.errors import describe_rpc_error

from .failure import MigrationFailed

PING_PERIOD_S = 0.1  # x time-dilation: the clock offset and RTT samples per virtual second
STOP_PING_SEQ = 1 << 62  # the Ping sent at the stop (the periodic ones count from 1)
SETUP_TIMEOUT_S = 30.0  # the target allocates the guest's RAM before it accepts
WRITE_CHECK_S = 0.1  # a write blocked this long is watched against the return path
TICK_S = 0.05  # the source's own liveness tick
STALL_S = 0.5  # a tick gap this long means this process did not run


def stall_note(code: grpc.StatusCode | None, stall_s: float, since_stall_s: float,
               heartbeat_s: float) -> str:
    """Added to a failure the target reported: when it gave up on a silent source
    (DEADLINE_EXCEEDED) just after this process stalled, the silence was ours. Any other
    status (a reset connection: the target or its host died; a refusal) has its own cause,
    and a stall of ours beside it would mislead."""
    if code != grpc.StatusCode.DEADLINE_EXCEEDED:
        return ""
    if stall_s >= STALL_S and since_stall_s < 2 * heartbeat_s:
        return (f" [this source itself stalled for {stall_s:.1f}s just before: the target "
                "gave up on it as a silent source]")
    return ""


class Link:
    """The main stream to one target and what came back on its return path."""

    def __init__(self, target_address: str, credentials: grpc.ChannelCredentials | None,
                 heartbeat_s: float, devices: int, time_dilation: float = 1.0) -> None:
        self.address = target_address
        # Time dilation stretches the ping period (emulated traffic); SETUP_TIMEOUT_S and the
        # liveness tick are facts of the host (allocating RAM, a stalled process): not dilated.
        self.ping_period_s = PING_PERIOD_S * time_dilation
        self.credentials = credentials
        self.heartbeat_s = heartbeat_s
        self.phase = "setup"  # named in failures; the engine moves it on
        self.offset = OffsetEstimator(same_clock=False)
        self.loads = [TargetLoad() for _ in range(devices)]  # the target's last reports
        # when each device's initial data was loaded (target clock; 0: not reported)
        self.initial_loaded_ns = [0] * devices
        self.got: dict[str, pb.TargetMessage] = {}  # last message of each kind
        self.got_at_ns: dict[str, int] = {}  # when it arrived (CLOCK_MONOTONIC)
        self.error = ""  # the return path's failure, if it ended badly
        self.last_heard = time.monotonic()
        self.stop_ping_rtt_ms = 0.0
        self.on_ack: Callable[[], None] | None = None
        self._changed = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self._channel: grpc.aio.Channel | None = None
        self._call: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._ping_seq = 0
        self._writer: asyncio.Task[Any] | None = None  # the task inside a write, if any
        self._write_started = 0.0
        self._write_failure: MigrationFailed | None = None
        self._last_tick = time.monotonic()
        self._stall_s = 0.0  # the longest recent gap in this process's own tick
        self._stall_end = 0.0
        self._cancel_reason = ""
        # Completion reached (the target's Shut, or the last byte without the return path):
        # from here a cancel comes too late.
        self.completed = False

    # ------------------------------------------------------------ open / close

    def open(self) -> None:
        self._channel = stream_channel(self.address, self.credentials)
        self._call = migrate_stream(self._channel)  # as the stub; writes also take bytes
        self._tasks.append(asyncio.create_task(self._read_return_path()))
        self._tasks.append(asyncio.create_task(self._tick()))

    @property
    def channel(self) -> grpc.aio.Channel:
        """The gRPC channel (other streams of this migration ride on it)."""
        assert self._channel is not None, "open() first"
        return self._channel

    def accepted(self, accepted: pb.SetupAccepted) -> None:
        """Setup is done: one kernel means one clock; pings start."""
        same = bool(accepted.target_boot_id) and accepted.target_boot_id == boot_id()
        self.offset = OffsetEstimator(same_clock=same)
        self._tasks.append(asyncio.create_task(self._pinger()))

    async def close(self, completed: bool, abort_reason: str) -> None:
        for t in self._tasks:
            t.cancel()
        if self._call is not None:
            if not completed:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._call.write(pb.SourceMessage(
                        abort=pb.Abort(reason=abort_reason[:500]))), 0.5)
                self._call.cancel()
            else:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._call.done_writing(), 1.0)
        if self._channel is not None:
            await self._channel.close(grace=0.5)

    # ------------------------------------------------------------ writing

    async def write(self, msg: pb.SourceMessage | bytes) -> None:
        """Write one message; wait as long as the target is alive (see the module doc).

        No timer per write (this is the hot path): the link's tick task watches a write
        that has been blocked for a while and cancels it once the target counts as lost.
        """
        async with self._write_lock:
            self._writer = asyncio.current_task()
            self._write_started = time.monotonic()
            try:
                await self._call.write(msg)
            except asyncio.CancelledError:
                failure, self._write_failure = self._write_failure, None
                task = asyncio.current_task()
                if failure is None or task is None:
                    raise
                task.uncancel()
                raise failure from None
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as e:
                await self._write_failed(e)
            finally:
                self._writer = None

    def _watch_write(self, now: float) -> None:
        writer = self._writer
        if writer is None or (now - self._write_started < WRITE_CHECK_S
                              and not self._cancel_reason):
            return
        try:
            if self._cancel_reason:
                raise MigrationFailed(self._cancel_reason, "cancelled")
            if self.phase == "setup":
                if now - self._write_started > SETUP_TIMEOUT_S:
                    raise MigrationFailed(f"target {self.address} took no data for "
                                          f"{SETUP_TIMEOUT_S:g}s during setup")
                return
            self.check_alive(f"took no data for {now - self._write_started:.1f}s and ")
        except MigrationFailed as failure:
            self._write_failure = failure
            writer.cancel()

    async def _write_failed(self, e: Exception) -> None:
        # The return path gets the call's real status; a failed write often says only
        # "INTERNAL: Internal error from Core".
        await asyncio.wait(self._tasks[:1], timeout=0.5)
        if self.error:
            raise MigrationFailed(self.error) from None
        why = describe_rpc_error(e) if isinstance(e, grpc.aio.AioRpcError) else str(e)
        code = e.code() if isinstance(e, grpc.aio.AioRpcError) else None
        raise MigrationFailed(f"lost the target {self.address} during {self.phase}: "
                              f"{why}{self._stall_note(code)}") from None

    async def ping(self, seq: int) -> None:
        await self.write(pb.SourceMessage(ping=pb.Ping(seq=seq, source_send_ns=now_ns())))

    # ------------------------------------------------------------ liveness

    def cancel(self, reason: str) -> None:
        """The run is cancelled: a write blocked now (or later) ends with that reason."""
        self._cancel_reason = reason

    def check_alive(self, blocked: str = "") -> None:
        """Raise when the return path failed, or is silent past the heartbeat."""
        if self.error:
            raise MigrationFailed(self.error)
        now = time.monotonic()
        silent = now - self.last_heard
        # In setup the peer may not be connected yet: SETUP_TIMEOUT_S bounds that wait.
        if silent <= self.heartbeat_s or self.phase == "setup":
            return
        own_gap = now - self._last_tick  # this process has not ticked since: it did not run
        if own_gap >= STALL_S:
            self._stall_s, self._stall_end = own_gap, now
        if self._stall_end > self.last_heard and self._stall_s >= silent / 2:
            raise MigrationFailed(
                f"this source stalled for {self._stall_s:.1f}s during {self.phase} (its process "
                f"was frozen or starved of CPU): the target heard nothing from it; not a "
                f"silent target (heartbeat-timeout {self.heartbeat_s:g}s)")
        raise MigrationFailed(f"target {self.address} {blocked}silent for {silent:.1f}s "
                              f"during {self.phase} (heartbeat-timeout {self.heartbeat_s:g}s)")

    def _stall_note(self, code: grpc.StatusCode | None) -> str:
        return stall_note(code, self._stall_s, time.monotonic() - self._stall_end,
                          self.heartbeat_s)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            now = time.monotonic()
            gap = now - self._last_tick
            self._last_tick = now
            if gap >= STALL_S:
                self._stall_s, self._stall_end = gap, now
            self._watch_write(now)

    async def wait_for(self, what: str, check: Callable[[], None],
                       timeout: float | None = None) -> pb.TargetMessage:
        """Wait until the return path delivers `what`, running `check` (liveness, cancel)."""
        deadline = time.monotonic() + timeout if timeout else None
        while what not in self.got:
            check()
            self.check_alive()
            if deadline is not None and time.monotonic() > deadline:
                raise MigrationFailed(f"no {what} from the target within {timeout:g}s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), 0.05)
            self._changed.clear()
        return self.got[what]

    # ------------------------------------------------------------ return path

    async def _read_return_path(self) -> None:
        try:
            async for msg in self._call:
                self.last_heard = time.monotonic()
                self._take(msg)
            if "verified" not in self.got:
                self.error = "the target ended the stream early"
        except grpc.aio.AioRpcError as e:
            self.error = (f"target refused or failed during {self.phase}: "
                          f"{describe_rpc_error(e)}{self._stall_note(e.code())}")
            if self.phase == "setup" and "[" not in self.error and "Socket closed" in self.error:
                # TLS 1.3: a server that refuses our certificate just closes the socket.
                self.error += (
                    " [TLS: the target refused this source's certificate (another lab CA?) "
                    "or does not speak TLS]" if self.credentials is not None else
                    " [is the target serving TLS? then start the source with --tls-dir]")
        self._changed.set()

    def _take(self, msg: pb.TargetMessage) -> None:
        body = msg.WhichOneof("body")
        if body == "pong":
            got_ns = now_ns()
            self.offset.add(msg.pong.source_send_ns, msg.pong.target_recv_ns, got_ns)
            if msg.pong.seq == STOP_PING_SEQ:
                self.stop_ping_rtt_ms = (got_ns - msg.pong.source_send_ns) / 1e6
            return
        if body == "load_progress":
            p = msg.load_progress
            if p.device < len(self.loads):
                self.loads[p.device] = TargetLoad(
                    p.loaded_bytes, p.backlog_bytes, p.busy_s, p.measured_load_rate_bytes_per_s,
                    p.loading, p.initial_loaded, p.initial_load_s)
                if p.initial_loaded and not self.initial_loaded_ns[p.device]:
                    self.initial_loaded_ns[p.device] = p.initial_loaded_ns
            return
        if body is None:
            return
        self.got[body] = msg
        self.got_at_ns[body] = now_ns()
        if body == "shut":
            self.completed = True
        if body == "switchover_ack" and self.on_ack is not None:
            self.on_ack()
        self._changed.set()

    async def initial_loads_reported(self, devices: list[int], timeout_s: float) -> None:
        """Until the target has reported these devices' initial data loaded, or timeout_s."""
        deadline = time.monotonic() + timeout_s
        while (any(not self.initial_loaded_ns[i] for i in devices) and not self.error
               and time.monotonic() < deadline):
            await asyncio.sleep(0.01)

    async def _pinger(self) -> None:
        while True:
            self._ping_seq += 1
            with contextlib.suppress(Exception):
                await self.ping(self._ping_seq)
            await asyncio.sleep(self.ping_period_s)
