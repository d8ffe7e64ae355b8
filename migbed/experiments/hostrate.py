"""What this host moves, for `--time-dilation auto`: measured once per boot and transport,
then cached.

The measurement is the sweep's pre-copy calibration (migbed/experiments/sweep.py,
`measure_precopy_rate`): the bulk stage of an unthrottled RAM-only migration between two
local service processes, on the main stream or on N multifd channels, the best of three (a
rate is a capacity: a busy host only ever lowers a reading). The choice of K from it is pure
(migbed/core/dilation.py, `auto_factor`).

The cache ($MIGBED_CACHE or ~/.cache/migbed, host-rate.json) is keyed by the kernel's boot
id and the transport: a reboot, or another machine, measures again. Delete the file to
measure again now (e.g. on a quiet machine).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from migbed.core.clock import boot_id
from migbed.core.dilation import AutoDilation, auto_factor, transport_name
from migbed.core.scenario import Scenario

CACHE_NAME = "host-rate.json"
RUNS = 3


@dataclass(frozen=True)
class HostRate:
    rate: float  # bytes/s, the best of RUNS bulk stages
    transport: str  # "main" or "multifd-N"
    measured_at: str  # UTC, ISO 8601
    load_average: str  # /proc/loadavg's first three when it was measured
    boot_id: str


def cache_path() -> Path:
    base = os.environ.get("MIGBED_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "migbed")
    return Path(base) / CACHE_NAME


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(path: Path, data: dict[str, Any]) -> None:
    """Atomically (a reader never sees half a file); a cache that cannot be written is only
    a measurement repeated next time."""
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".host-rate-")
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1)
        os.replace(tmp, path)


def _cached(entry: Any) -> HostRate | None:
    try:
        hr = HostRate(**entry)
    except TypeError:
        return None
    return hr if isinstance(hr.rate, int | float) and hr.rate > 0 else None


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def measure(transport: str) -> HostRate:
    """RUNS calibration migrations between two fresh local services (stopped after)."""
    from migbed.experiments.sweep import measure_precopy_rate, services

    channels = int(transport.split("-", 1)[1]) if transport.startswith("multifd-") else 0
    load = load_average()
    with tempfile.TemporaryDirectory(prefix="migbed-host-rate-") as tmp, \
            services(Path(tmp)) as (source, target):
        rate = measure_precopy_rate(source, target, RUNS, multifd_channels=channels)
    return HostRate(rate, transport, dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                    load, boot_id())


def host_rate(transport: str, say: Any = print) -> HostRate:
    """This host's rate for `transport`, from the cache or measured now (and cached)."""
    path = cache_path()
    key = f"{boot_id()}/{transport}"
    data = _read_cache(path)
    hit = _cached(data.get(key))
    if hit is not None:
        return hit
    say(f"migbed: measuring this host's rate on the {transport} transport for --time-dilation "
        f"auto ({RUNS} unthrottled migrations between local services; cached in {path})")
    hr = measure(transport)
    data = _read_cache(path)  # another process may have written meanwhile
    data[key] = asdict(hr)
    _write_cache(path, data)
    return hr


def choose(scenario: Scenario, say: Any = print) -> AutoDilation:
    """`--time-dilation auto` for this scenario on this host: K and why, the measurement named."""
    hr = host_rate(transport_name(scenario), say)
    chosen = auto_factor(scenario, hr.rate)
    return AutoDilation(chosen.factor, f"{chosen.reason} (measured {hr.measured_at}, load "
                                       f"average {hr.load_average}; cached in {cache_path()})")
