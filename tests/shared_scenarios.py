"""Scenario texts that more than one test module runs (one copy, so they cannot drift)."""

from __future__ import annotations

# A RAM-only guest whose dirty rate is 0.6 of the bandwidth: QEMU's geometric pre-copy
# converges in about 9 rounds (~3 s). [migration] is the last table, so a caller may append
# one of its keys (qemu-version = "...").
CONVERGING = """
name = "converging"
[guest]
ram-size = "16MiB"
dirty-rate = "9600KiB/s"
dirty-pattern = "uniform"
[migration]
max-bandwidth = "16MiB/s"
avail-switchover-bandwidth = "16MiB/s"
downtime-limit = "20ms"
max-iterations = 1000
max-time = "25s"
warmup = "100ms"
"""

# A 16 MiB guest with one VF: an 8 MB initial image that loads on the destination after
# `setup` (plus 8 ms at 1 GB/s), a 1 MB final image loaded in 20 ms, under limits that let
# pre-copy converge in about a second. {device_extra} ends vf0's table (a further [[device]]
# may follow it); {migration_extra} ends [migration].
ONE_VF = """
name = "{name}"
[guest]
ram-size = "16MiB"
dirty-rate = "4MiB/s"
working-set = "4MiB"
[[device]]
name = "vf0"
initial-bytes = "8MB"
stop-copy-size = "1MB"
load-setup-time = "{setup}"
load-rate = "1GB/s"
stop-copy-load-time = "20ms"
{device_extra}
[migration]
downtime-limit = "100ms"
max-bandwidth = "256MiB/s"
avail-switchover-bandwidth = "128MiB/s"
max-iterations = 500
max-time = "30s"
warmup = "100ms"
{migration_extra}
"""


def one_vf(name: str, setup: str = "300ms", device_extra: str = "", migration_extra: str = "") -> str:
    """ONE_VF with what a test sets: the device's setup time, and keys added to the device or
    to [migration]."""
    return ONE_VF.format(name=name, setup=setup, device_extra=device_extra, migration_extra=migration_extra)
