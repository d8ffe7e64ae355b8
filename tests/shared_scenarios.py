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
