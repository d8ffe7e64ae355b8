"""The limits a migration's shape must respect: one table, read by the scenario validator
(migbed/core/scenario.py) and by the target when a Setup arrives (services/target/).

A scenario the validator accepts is one the target accepts, and the target refuses the
same values a scenario file would have been refused for, naming the same bound.
"""

from __future__ import annotations

KiB, MiB, GiB = 1024, 1024**2, 1024**3

# ---------------------------------------------------------------- guest
PAGE_SIZES = (4 * KiB, 64 * KiB, 2 * MiB)
MIN_RAM_BYTES = 1 * MiB
MAX_RAM_BYTES = 64 * GiB
MAX_DIRTY_RATE = 64 * GiB  # bytes/s
VCPU_TICK_S = (1e-4, 1e-3)

# ---------------------------------------------------------------- devices
MAX_DEVICES = 16
MAX_DEVICE_BYTES = 16 * GiB  # initial-bytes, stop-copy-size: each
MAX_DEVICE_STATE_BYTES = 64 * MiB  # non-iterable device state (config space and the like)
MAX_LOAD_TIME_S = 600.0  # load-setup-time, stop-copy-load-time, config-load-time, save time
LOAD_RATE = (1 * MiB, 1000 * GiB)  # bytes/s the destination loads at
# bytes of guest RAM per second a device's dirty-page tracker reports (0 = no report)
MIN_TRACKER_REPORT_RATE = 1 * MiB
MAX_TRACKER_REPORT_RATE = 1024 * 1024 * GiB

# ---------------------------------------------------------------- migration
HEARTBEAT_TIMEOUT_S = (0.2, 60.0)
MAX_MULTIFD_CHANNELS = 16
# time-dilation K (migbed/core/dilation.py): the run takes K times its virtual time, so the
# bound keeps a 10 s virtual migration under ~3 hours of real time.
TIME_DILATION = (1.0, 1000.0)

# ---------------------------------------------------------------- the target's own
# A session that sends nothing but pings while the target has nothing of its own to do
# (no load running, no ACK pending) for this long holds a slot for nothing: it is ended.
DEFAULT_IDLE_TIMEOUT_S = MAX_LOAD_TIME_S + 60  # > the longest legitimate pause
# A stream must name its session (Setup, or a device-state stream's first chunk) this soon.
SETUP_DEADLINE_S = 30.0
# Share of the memory available at start that the target may commit to sessions by default.
DEFAULT_MEMORY_SHARE = 0.75
# Return-path messages queued for a source that does not read them: past this, the
# session ends (pongs and progress are small, but nothing may grow without bound).
MAX_OUTBOX_MESSAGES = 4096
# Error texts are sent in gRPC status details (16 KiB metadata limit) and logged.
MAX_ERROR_CHARS = 400


def clip(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """`text` cut to `limit` characters (with a mark saying so): error texts that echo
    input stay readable and within gRPC's metadata limit."""
    if len(text) <= limit:
        return text
    return text[: limit - 15] + " ...[truncated]"


def session_bytes(ram_bytes: int, device_bytes: list[int]) -> int:
    """Memory a target session holds: guest RAM plus every device's state buffers. What the
    target's memory budget is charged with before anything is allocated."""
    return ram_bytes + sum(device_bytes)
