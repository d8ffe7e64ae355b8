"""The parts one migration is made of, built once the guest has booted.

The phases (precopy.py, switchover.py) work on these; the engine builds them, runs the
phases in order and, whatever happens, ends the run (engine.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from migbed.core.device import SourceDevice
from migbed.core.estimator import Estimator
from migbed.core.policy import Policy
from migbed.core.qemu_profile import QemuProfile
from migbed.core.ratelimit import RateLimiter
from migbed.core.scenario import Scenario
from migbed.runtime.guest import RunningGuest

from .counters import Counters
from .devices import DeviceStreams
from .link import Link
from .recorder import Recorder
from .scanner import PageScanner
from .transport import RamTransport


@dataclass
class Parts:
    scenario: Scenario
    profile: QemuProfile
    policy: Policy
    return_path: bool  # effective (switchover-ack forces it on, as QEMU requires)
    guest: RunningGuest[SourceDevice]
    link: Link
    scanner: PageScanner
    ram: RamTransport
    devices: DeviceStreams
    counters: Counters
    recorder: Recorder
    limiter: RateLimiter
    estimator: Estimator
    check: Callable[[], None]  # raises MigrationFailed: cancel, lost target, dead vCPU
