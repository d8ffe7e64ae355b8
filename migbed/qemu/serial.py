"""The guest's serial console: its lines, stamped with the host's clock when they arrive.

The guest prints (see guest/init.c)

  R <pages> <ws_pages> <rate> <touch_ms> <kernel_used>  ready: every page written once
  T <seq> <guest_ns> <pages_written> <rounds>        a tick, every few ms of guest time
  V <pages> <bad_pages> <checksum>                   the answer to a "v" (verify) request

Everything else (kernel messages) is kept but not interpreted. The guest's own clock stops
while QEMU has the VM stopped, so the stall a user sees is measured here, on the host's
clock: the gap between the last tick that reached us from the source and the first from the
destination. The pure functions below are what the tests check; ConsoleReader is the thread
that reads a QEMU chardev socket.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Tick:
    host_ns: int  # time.monotonic_ns() when the line arrived
    seq: int
    guest_ns: int
    pages_written: int
    rounds: int


@dataclass(frozen=True)
class Ready:
    host_ns: int
    pages: int
    working_set_pages: int
    rate: int
    touch_ms: int
    kernel_used_bytes: int  # memory in use before our buffer (sysinfo), after zeroing free pages


@dataclass(frozen=True)
class Verdict:
    host_ns: int
    pages: int
    bad_pages: int
    checksum: str


Line = Tick | Ready | Verdict


def parse_line(host_ns: int, text: str) -> Line | None:
    """One console line, or None for anything that is not ours (kernel messages, noise)."""
    parts = text.strip().split()
    try:
        if len(parts) == 5 and parts[0] == "T":
            return Tick(host_ns, *(int(p) for p in parts[1:]))
        if len(parts) == 6 and parts[0] == "R":
            return Ready(host_ns, *(int(p) for p in parts[1:]))
        if len(parts) == 4 and parts[0] == "V":
            return Verdict(host_ns, int(parts[1]), int(parts[2]), parts[3])
    except ValueError:
        return None
    return None


def split_lines(buffer: bytes) -> tuple[list[str], bytes]:
    """Complete lines in `buffer` and the unfinished rest."""
    *done, rest = buffer.split(b"\n")
    return [d.decode("ascii", "replace").rstrip("\r") for d in done], rest


@dataclass(frozen=True)
class Stall:
    """The guest-visible pause across the switchover, as the serial console shows it."""

    host_ms: float  # last source tick -> first destination tick, host clock
    guest_ms: float  # the same two ticks on the guest's own clock (paused while stopped)
    last_source_seq: int
    first_destination_seq: int
    tick_period_ms: float  # resolution: a stall is known within one tick period

    @property
    def continuous(self) -> bool:
        """The destination went on from where the source stopped: same guest, no lost tick."""
        return self.first_destination_seq <= self.last_source_seq + 1


def tick_period_ms(ticks: list[Tick]) -> float:
    """The median interval between ticks on the guest's clock."""
    gaps = sorted(b.guest_ns - a.guest_ns for a, b in itertools.pairwise(ticks))
    return gaps[len(gaps) // 2] / 1e6 if gaps else 0.0


def measure_stall(source: list[Tick], destination: list[Tick]) -> Stall | None:
    """None unless both sides ticked. Destination ticks that repeat a sequence number the
    source already delivered (a line still in the UART when the VM stopped) are not new
    progress and are skipped."""
    if not source or not destination:
        return None
    last = source[-1]
    fresh = [t for t in destination if t.seq > last.seq]
    if not fresh:
        return None
    first = fresh[0]
    return Stall((first.host_ns - last.host_ns) / 1e6, (first.guest_ns - last.guest_ns) / 1e6,
                 last.seq, first.seq, tick_period_ms(source))


def event_monotonic_ns(event: dict[str, Any], realtime_minus_monotonic_ns: int) -> int:
    """A QMP event's timestamp (the host's realtime clock) on the monotonic clock."""
    ts = event["timestamp"]
    return int(ts["seconds"]) * 1_000_000_000 + int(ts["microseconds"]) * 1000 - realtime_minus_monotonic_ns


def split_stall(last_source_tick_ns: int, first_destination_tick_ns: int, stop_ns: int,
                resume_ns: int) -> dict[str, float]:
    """Where the guest-visible stall went, on one host clock: before QEMU stopped the source
    (the guest already made no progress), stop -> the destination's RESUME, and after it."""
    return {"before_stop_ms": (stop_ns - last_source_tick_ns) / 1e6,
            "stop_to_resume_ms": (resume_ns - stop_ns) / 1e6,
            "after_resume_ms": (first_destination_tick_ns - resume_ns) / 1e6}


class ConsoleReader:
    """Reads one VM's serial chardev (a unix socket QEMU serves) on a thread."""

    def __init__(self, path: str, name: str) -> None:
        self.path = path
        self.name = name
        self.lines: list[tuple[int, str]] = []  # (host_ns, text), everything
        self.ticks: list[Tick] = []
        self.ready: Ready | None = None
        self.verdicts: list[Verdict] = []
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def connect(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(self.path)
                break
            except OSError:
                sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        self._sock = sock
        self._thread = threading.Thread(target=self._read, name=f"console-{self.name}", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._sock is not None
        rest = b""
        while not self._closed:
            try:
                data = self._sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            now = time.monotonic_ns()
            lines, rest = split_lines(rest + data)
            with self._lock:
                for text in lines:
                    self._take(now, text)

    def _take(self, now: int, text: str) -> None:
        self.lines.append((now, text))
        line = parse_line(now, text)
        if isinstance(line, Tick):
            self.ticks.append(line)
        elif isinstance(line, Ready):
            self.ready = line
        elif isinstance(line, Verdict):
            self.verdicts.append(line)

    def send(self, text: str) -> None:
        if self._sock is None:
            raise RuntimeError(f"console {self.name} is not connected")
        self._sock.sendall(text.encode())

    def snapshot_ticks(self) -> list[Tick]:
        with self._lock:
            return list(self.ticks)

    def tail(self, n: int = 20) -> str:
        with self._lock:
            return "\n".join(text for _, text in self.lines[-n:])

    def close(self) -> None:
        self._closed = True
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
        if self._thread is not None:
            self._thread.join(timeout=2)
