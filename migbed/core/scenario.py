"""Scenario files: the knobs of one experiment, parsed and validated before anything starts.

Key names are QEMU's where one exists (downtime-limit, max-bandwidth,
avail-switchover-bandwidth), guestperf's for the caps (max-iterations, max-time). Every
value is checked here; a bad one raises ScenarioError naming the field, the value and
what is allowed, so nothing half-starts.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, TypeVar

from migbed.core import limits as lim
from migbed.core.bounded import (
    MAX_SCENARIO_BYTES,
    InputError,
    clip,
    decode_utf8,
    loads_toml,
    read_regular_file,
)
from migbed.core.drivers import (
    DEFAULT_DRIVER,
    DRIVERS,
    LOAD_FROM_SCENARIO,
    DriverProfile,
    driver_profile,
)
from migbed.core.qemu_profile import PROFILES, qemu_profile
from migbed.core.units import (
    UnitError,
    parse_bit_rate,
    parse_byte_rate,
    parse_duration,
    parse_size,
)

KiB, MiB, GiB = 1024, 1024**2, 1024**3
T = TypeVar("T")

DEFAULT_SCENARIO = "cover-letter"  # `migbed run`, `bin/migbed up`, `migbed predict`: a real driver (mlx5)
# The QEMU releases whose migration behaviour can be emulated (qemu-version); each profile's
# differences are listed in docs/fidelity.md.
QEMU_VERSIONS = tuple(PROFILES)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class ScenarioError(ValueError):
    """A scenario value that is not allowed. str() names the field, the value and the rule."""


@dataclass(frozen=True)
class GuestConfig:
    ram_size: int
    page_size: int = 4 * KiB
    dirty_rate: float = 0.0  # bytes/s written by the workload
    working_set: int = 0  # bytes; the hot pages the workload re-dirties
    dirty_pattern: str = "working-set"  # or "uniform" over all of RAM
    vcpu_tick: float = 0.001  # s; period of the vCPU progress tick
    seed: int = 1

    @property
    def pages(self) -> int:
        return self.ram_size // self.page_size


@dataclass(frozen=True)
class DeviceConfig:
    name: str
    initial_bytes: int
    stop_copy_size: int
    dirty_rate: float = 0.0
    block_size: int = 64 * KiB
    load_setup_time: float = 0.0  # s; data-size independent (mlx5 resource allocation)
    load_rate: float = 2e9  # bytes/s loaded on the target
    stop_copy_load_time: float = 0.0  # s; fixed cost of loading the final image
    # When the destination pays an image's load cost: "image-complete" (mlx5: the image
    # loads synchronously inside the write() that completes it) or "per-chunk".
    load_trigger: str = "image-complete"
    stop_copy_save_time: float = 0.0  # s; source: STOP_COPY transition and save, inside downtime
    config_load_time: float = 0.0  # s; destination: config space / non-iterable state load
    device_state_size: int = 0  # bytes of non-iterable device state, sent in stop-copy
    # The VFIO variant driver whose migration semantics the device follows
    # (migbed/core/drivers.py); "generic" is migbed's behaviour before profiles.
    driver: str = "generic"
    # s; destination: the arcs to RUNNING at vm_start, before the Shut (mlx5: RESUME_VHCA)
    resume_time: float = 0.0
    # bytes of guest RAM per second the device's dirty-page tracker reports at every RAM
    # dirty sync (VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT); 0 = no tracker report
    tracker_report_rate: float = 0.0
    # s; source: the arcs out of RUNNING/PRE_COPY at vm_stop (mlx5: SUSPEND_VHCA), paid
    # device after device inside the downtime, before RAM's final copy
    suspend_time: float = 0.0


@dataclass(frozen=True)
class MigrationConfig:
    downtime_limit: float = 0.3  # s (QEMU default 300 ms)
    max_bandwidth: float = 128 * MiB  # bytes/s (QEMU default 128 MiB/s)
    avail_switchover_bandwidth: float = 0.0  # bytes/s; 0 = use the measured bandwidth
    max_iterations: int = 0  # dirty-sync rounds; 0 = no cap
    max_time: float = 0.0  # s; 0 = no cap
    cap_action: str = "switchover"  # what a cap does: "switchover" (guestperf) or "cancel"
    switchover_ack_timeout: float = 0.0  # s; 0 = wait for the ACK forever (QEMU 8.1)
    ack_timeout_action: str = "cancel"  # "cancel" or "legacy" (switch on the data rule)
    warmup: float = 0.5  # s the guest runs before migration starts (builds its working set)
    # s without a message from the peer = peer lost. Generous: a loaded 2-core host can stall
    # a process for seconds; fault tests set 1 s.
    heartbeat_timeout: float = 10.0
    # QEMU's return-path capability (libvirt turns it on; switchover-ack needs it): the
    # reported downtime then ends when the destination has loaded everything (MIG_RP_MSG_SHUT).
    return_path: bool = True
    qemu_version: str = "10.0"  # the QEMU behaviour profile (migbed/core/qemu_profile.py)
    multifd: bool = False  # RAM on multifd channels beside the main stream
    multifd_channels: int = 2  # QEMU's default
    # Where stop-copy device state goes: "main" (inline on the main stream, devices loaded one
    # after another) or "multifd" (QEMU 10.0: on the multifd channels beside the RAM, each
    # device loaded by its own task from switchover start). The scenario key also takes
    # "auto" (the default, QEMU's x-migration-multifd-transfer=auto: multifd whenever
    # multifd is on and the version has it); this field holds what "auto" resolved to.
    device_state_transfer: str = "main"


@dataclass(frozen=True)
class LinkConfig:
    rate: float = 0.0  # bits/s on the source's egress (tc tbf); 0 = unshaped
    burst: int = 0  # bytes; 0 = rate x 5 ms, at least 64 KiB
    latency: float = 0.05  # s; tbf queueing limit


@dataclass(frozen=True)
class Scenario:
    name: str
    guest: GuestConfig
    devices: tuple[DeviceConfig, ...]
    migration: MigrationConfig
    link: LinkConfig = field(default_factory=LinkConfig)
    source_text: str = ""  # the TOML it came from (sent to the source service as is)
    # Run K times slower, reported in virtual time (migbed/core/dilation.py). The values
    # above are virtual unless `dilated`: dilate() scales them for the engine (x K times,
    # / K rates) and sets `dilated`; parsing never does.
    time_dilation: float = 1.0
    dilated: bool = False

    @property
    def total_device_initial_bytes(self) -> int:
        return sum(d.initial_bytes for d in self.devices)


# ---------------------------------------------------------------- field readers


def parse_required(table: _Table, key: str, parse: Callable[[Any], T]) -> T:
    table.used.add(key)
    raw = table.data[key]
    try:
        return parse(raw)
    except (UnitError, ValueError, TypeError, OverflowError) as e:
        # The field first, then the value (clipped: it may be huge) and the rule.
        raise ScenarioError(f"{table.where}.{key} = {_shown(raw)}: {clip(str(e))}") from None


def _shown(raw: Any) -> str:
    if isinstance(raw, int) and not isinstance(raw, bool) and raw.bit_length() > 200:
        return f"<an integer of about {int(raw.bit_length() * 0.30103)} digits>"
    return clip(repr(raw), 80)


class _Table:
    """One TOML table being read: remembers which keys were used, to refuse unknown ones."""

    def __init__(self, data: Any, where: str) -> None:
        if not isinstance(data, dict):
            raise ScenarioError(f"{where}: expected a table, got {type(data).__name__}")
        self.data = data
        self.where = where
        self.used: set[str] = set()

    def get(self, key: str, parse: Callable[[Any], T], default: T, check: str = "") -> T:
        self.used.add(key)
        if key not in self.data:
            return default
        return parse_required(self, key, parse)

    def require(self, key: str, parse: Callable[[Any], T]) -> T:
        if key not in self.data:
            raise ScenarioError(f"{self.where}.{key} is required")
        return parse_required(self, key, parse)

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            shown = clip(", ".join(clip(str(k), 40) for k in unknown[:10]), 160)
            raise ScenarioError(
                f"{self.where}: unknown key(s) {shown} "
                f"(allowed: {', '.join(sorted(self.used))})"
            )


def _in_range(where: str, value: float, lo: float, hi: float, shown: str) -> None:
    if not (lo <= value <= hi):
        raise ScenarioError(f"{where} = {shown} is out of range (allowed {_fmt(lo)} .. {_fmt(hi)})")


def _fmt(x: float) -> str:
    return f"{x:g}"


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError("expected an integer")
    if not -(2**63) <= v < 2**63:
        raise ValueError("out of range (a 64-bit integer)")
    return v


def _str(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise ValueError("expected a non-empty string")
    return v


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError("expected true or false")
    return v


def _choice(*allowed: str) -> Callable[[Any], str]:
    def parse(v: Any) -> str:
        if v not in allowed:
            raise ValueError(f"allowed: {', '.join(allowed)}")
        return str(v)

    return parse


def _power_of_two(x: int) -> bool:
    return x > 0 and (x & (x - 1)) == 0


# ---------------------------------------------------------------- sections


def _guest(t: _Table) -> GuestConfig:
    ram = t.require("ram-size", parse_size)
    page = t.get("page-size", parse_size, 4 * KiB)
    rate = t.get("dirty-rate", parse_byte_rate, 0.0)
    ws = t.get("working-set", parse_size, ram)
    pattern = t.get("dirty-pattern", _choice("working-set", "uniform"), "working-set")
    tick = t.get("vcpu-tick", parse_duration, 0.001)
    seed = t.get("seed", _int, 1)
    t.finish()
    if page not in lim.PAGE_SIZES:
        raise ScenarioError(f"guest.page-size = {page}: allowed 4KiB, 64KiB, 2MiB")
    _in_range("guest.ram-size", ram, lim.MIN_RAM_BYTES, lim.MAX_RAM_BYTES, f"{ram} bytes")
    if ram % page:
        raise ScenarioError(f"guest.ram-size = {ram} bytes is not a multiple of page-size {page}")
    _in_range("guest.dirty-rate", rate, 0, lim.MAX_DIRTY_RATE, f"{rate:g} B/s")
    _in_range("guest.working-set", ws, page, ram, f"{ws} bytes")
    _in_range("guest.vcpu-tick", tick, *lim.VCPU_TICK_S, f"{tick * 1e3:g}ms")
    _in_range("guest.seed", seed, 0, 2**63 - 1, str(seed))
    return GuestConfig(ram, page, rate, ws, pattern, tick, seed)


def _device(t: _Table, names: set[str]) -> DeviceConfig:
    name = t.require("name", _str)
    if name in names:
        raise ScenarioError(f"{t.where}.name = {name!r}: device names must be unique")
    if not name.replace("-", "").replace("_", "").isalnum() or len(name) > 32:
        raise ScenarioError(f"{t.where}.name = {name!r}: letters, digits, - and _ only, at most 32")
    names.add(name)
    drv = driver_profile(t.get("driver", _choice(*DRIVERS), DEFAULT_DRIVER))

    def timing(key: str, fallback: float = 0.0) -> float:
        """A time input; its default is the driver's (drivers.py names its source)."""
        return t.get(key, parse_duration, drv.default(key, fallback))

    d = DeviceConfig(
        name=name, initial_bytes=t.require("initial-bytes", parse_size),
        stop_copy_size=t.get("stop-copy-size", parse_size, 0),
        dirty_rate=t.get("dirty-rate", parse_byte_rate, 0.0),
        block_size=t.get("block-size", parse_size, 64 * KiB),
        load_setup_time=timing("load-setup-time"),
        load_rate=t.get("load-rate", parse_byte_rate, drv.default("load-rate", 2e9)),
        stop_copy_load_time=timing("stop-copy-load-time"), load_trigger=_load_trigger(t, drv),
        stop_copy_save_time=timing("stop-copy-save-time"),
        config_load_time=timing("config-load-time"),
        device_state_size=t.get("device-state-size", parse_size, 0), driver=drv.name,
        resume_time=timing("resume-time"),
        tracker_report_rate=t.get("tracker-report-rate", parse_byte_rate,
                                  drv.default("tracker-report-rate", 0.0)),
        suspend_time=timing("suspend-time"))
    t.finish()
    _check_device(t.where, d)
    return d


def _check_device(w: str, d: DeviceConfig) -> None:
    initial, stop, block, rate = d.initial_bytes, d.stop_copy_size, d.block_size, d.dirty_rate
    _in_range(f"{w}.initial-bytes", initial, 0, lim.MAX_DEVICE_BYTES, f"{initial} bytes")
    _in_range(f"{w}.stop-copy-size", stop, 0, lim.MAX_DEVICE_BYTES, f"{stop} bytes")
    if not _power_of_two(block) or not (4 * KiB <= block <= 1 * MiB):
        raise ScenarioError(f"{w}.block-size = {block}: a power of two from 4KiB to 1MiB")
    _in_range(f"{w}.dirty-rate", rate, 0, 64 * GiB, f"{rate:g} B/s")
    for key, value in (("load-setup-time", d.load_setup_time),
                       ("stop-copy-load-time", d.stop_copy_load_time),
                       ("stop-copy-save-time", d.stop_copy_save_time),
                       ("config-load-time", d.config_load_time), ("resume-time", d.resume_time),
                       ("suspend-time", d.suspend_time)):
        _in_range(f"{w}.{key}", value, 0, lim.MAX_LOAD_TIME_S, f"{value:g}s")
    _in_range(f"{w}.load-rate", d.load_rate, *lim.LOAD_RATE, f"{d.load_rate:g} B/s")
    _in_range(f"{w}.device-state-size", d.device_state_size, 0, lim.MAX_DEVICE_STATE_BYTES,
              f"{d.device_state_size} bytes")
    report = d.tracker_report_rate
    _in_range(f"{w}.tracker-report-rate", report, 0, lim.MAX_TRACKER_REPORT_RATE, f"{report:g} B/s")
    if report and report < lim.MIN_TRACKER_REPORT_RATE:
        raise ScenarioError(f"{w}.tracker-report-rate = {report:g} B/s: 0 (no report) or at "
                            f"least {lim.MIN_TRACKER_REPORT_RATE:g} B/s")
    if initial == 0 and stop == 0:
        raise ScenarioError(f"{w}: initial-bytes and stop-copy-size are both 0 (a device "
                            "without state has nothing to migrate; remove it)")
    if rate and not initial:
        raise ScenarioError(f"{w}.dirty-rate = {rate:g} B/s needs initial-bytes > 0 (dirty "
                            "blocks are blocks of the state buffer)")
    if rate and initial < block:
        raise ScenarioError(f"{w}.initial-bytes = {initial} is smaller than block-size {block} "
                            "(a dirtying device needs whole blocks)")


def _load_trigger(t: _Table, drv: DriverProfile) -> str:
    """The device's load trigger: the scenario's for "generic", the driver's otherwise (a
    real driver loads the way its code does; a contradicting `load-trigger` is refused)."""
    chosen = t.get("load-trigger", _choice("image-complete", "per-chunk"), "")
    if drv.load == LOAD_FROM_SCENARIO:
        return chosen or "image-complete"
    if chosen and chosen != drv.load:
        raise ScenarioError(f"{t.where}.load-trigger = {chosen!r}: driver {drv.name!r} loads "
                            f"{drv.load!r} ({drv.cites.get('load', '')}); remove load-trigger "
                            'or use driver = "generic"')
    return drv.load


def _migration(t: _Table) -> MigrationConfig:
    d = MigrationConfig()
    limit = t.get("downtime-limit", parse_duration, d.downtime_limit)
    bw = t.get("max-bandwidth", parse_byte_rate, d.max_bandwidth)
    avail = t.get("avail-switchover-bandwidth", parse_byte_rate, 0.0)
    iters = t.get("max-iterations", _int, 0)
    max_time = t.get("max-time", parse_duration, 0.0)
    cap_action = t.get("cap-action", _choice("switchover", "cancel"), d.cap_action)
    ack_timeout = t.get("switchover-ack-timeout", parse_duration, 0.0)
    ack_action = t.get("ack-timeout-action", _choice("cancel", "legacy"), d.ack_timeout_action)
    warmup = t.get("warmup", parse_duration, d.warmup)
    heartbeat = t.get("heartbeat-timeout", parse_duration, d.heartbeat_timeout)
    return_path = t.get("return-path", _bool, d.return_path)
    version = t.get("qemu-version", _choice(*QEMU_VERSIONS), d.qemu_version)
    multifd = t.get("multifd", _bool, d.multifd)
    channels = t.get("multifd-channels", _int, d.multifd_channels)
    transfer = t.get("device-state-transfer", _choice("auto", "main", "multifd"), "auto")
    t.finish()
    # QEMU: downtime-limit 0..2000 s; we need at least 1 ms to compute a threshold.
    _in_range("migration.downtime-limit", limit, 0.001, 2000, f"{limit * 1e3:g}ms")
    _in_range("migration.max-bandwidth", bw, 1 * MiB, 100 * GiB, f"{bw:g} B/s")
    _in_range("migration.avail-switchover-bandwidth", avail, 0, 100 * GiB, f"{avail:g} B/s")
    _in_range("migration.max-iterations", iters, 0, 100_000, str(iters))
    _in_range("migration.max-time", max_time, 0, 24 * 3600, f"{max_time:g}s")
    _in_range("migration.switchover-ack-timeout", ack_timeout, 0, 3600, f"{ack_timeout:g}s")
    _in_range("migration.warmup", warmup, 0, 60, f"{warmup:g}s")
    _in_range("migration.heartbeat-timeout", heartbeat, *lim.HEARTBEAT_TIMEOUT_S, f"{heartbeat:g}s")
    _in_range("migration.multifd-channels", channels, 1, lim.MAX_MULTIFD_CHANNELS, str(channels))
    if transfer == "multifd" and not multifd:
        raise ScenarioError('migration.device-state-transfer = "multifd" needs migration.multifd = true '
                            "(QEMU sends device state on the multifd channels)")
    if avail and version == "8.1":
        raise ScenarioError(f"migration.avail-switchover-bandwidth = {avail:g} B/s needs "
                            "qemu-version 9.2 or later (QEMU added it in 8.2)")
    if transfer == "multifd" and QEMU_VERSIONS.index(version) < QEMU_VERSIONS.index("10.0"):
        raise ScenarioError(f'migration.device-state-transfer = "multifd" needs qemu-version 10.0 '
                            f"or later (got {version!r}: multifd device state came in QEMU 10.0)")
    if transfer == "auto":
        # vfio_multifd_setup: auto means multifd_device_state_supported() (multifd on) and
        # the switchover-start point (10.0): every VFIO device with migration supports it.
        transfer = "multifd" if multifd and qemu_profile(version).multifd_device_state else "main"
    return MigrationConfig(
        limit, bw, avail, iters, max_time, cap_action, ack_timeout, ack_action, warmup, heartbeat,
        return_path, version, multifd, channels, transfer,
    )


def _time_dilation(v: Any) -> float:
    if v == "auto":
        raise ValueError("auto is for the command line (--time-dilation auto measures this "
                         "host); a scenario gives a number")
    if isinstance(v, bool) or not isinstance(v, int | float) or v != v:
        raise ValueError(f"expected a number from {_fmt(lim.TIME_DILATION[0])} to "
                         f"{_fmt(lim.TIME_DILATION[1])}")
    if not lim.TIME_DILATION[0] <= v <= lim.TIME_DILATION[1]:
        raise ValueError(f"out of range (allowed {_fmt(lim.TIME_DILATION[0])} .. "
                         f"{_fmt(lim.TIME_DILATION[1])}: the run takes K times as long)")
    return float(v)


def _link(t: _Table) -> LinkConfig:
    rate = t.get("rate", parse_bit_rate, 0.0)
    burst = t.get("burst", parse_size, 0)
    latency = t.get("latency", parse_duration, 0.05)
    for unsupported in ("delay", "loss"):
        if unsupported in t.data:
            raise ScenarioError(
                f"link.{unsupported} = {t.data[unsupported]!r}: needs tc netem, which this "
                "testbed does not use (netem is missing from common CI kernels); remove it"
            )
    t.finish()
    _in_range("link.rate", rate, 0, 400e9, f"{rate:g} bit/s")
    if rate and rate < 1e6:
        raise ScenarioError(f"link.rate = {rate:g} bit/s: at least 1Mbit (or 0 for unshaped)")
    _in_range("link.burst", burst, 0, 1 * GiB, f"{burst} bytes")
    if 0 < burst < 2 * KiB:  # tbf drops every frame larger than its bucket
        raise ScenarioError(f"link.burst = {burst} bytes: 0 (automatic) or at least 2KiB, "
                            "more than one 1500-byte frame")
    _in_range("link.latency", latency, 0.001, 10, f"{latency:g}s")
    return LinkConfig(rate, burst, latency)


def parse_scenario(text: str, where: str = "scenario") -> Scenario:
    """Parse and validate a scenario TOML text (bounded: size, nesting, digits). Raises ScenarioError."""
    return _scenario_from_data(_load_toml(text, where), text)


def _load_toml(text: str, where: str) -> dict[str, Any]:
    if not isinstance(text, str):
        raise ScenarioError(f"{where}: expected TOML text")
    try:
        return loads_toml(text, where)
    except InputError as e:
        raise ScenarioError(str(e)) from None


def _scenario_from_data(data: dict[str, Any], text: str) -> Scenario:
    top = _Table(data, "scenario")
    name = top.get("name", _str, "unnamed")
    # The name goes into run ids, metric labels and file names.
    if not _NAME.match(name):
        raise ScenarioError(f"scenario.name = {name[:80]!r}: 1 to 64 of letters, digits, "
                            ". _ - (starting with a letter or digit)")
    guest = _guest(_Table(top.require("guest", lambda v: v), "guest"))
    raw_devices: Any = top.get("device", lambda v: v, [])
    if not isinstance(raw_devices, list):
        raise ScenarioError("device: use [[device]] tables (an array of tables)")
    if len(raw_devices) > lim.MAX_DEVICES:
        raise ScenarioError(f"device: {len(raw_devices)} devices; at most {lim.MAX_DEVICES} allowed")
    names: set[str] = set()
    devices = tuple(
        _device(_Table(d, f"device[{i}]"), names) for i, d in enumerate(raw_devices)
    )
    migration = _migration(_Table(top.get("migration", lambda v: v, {}), "migration"))
    link = _link(_Table(top.get("link", lambda v: v, {}), "link"))
    dilation = top.get("time-dilation", _time_dilation, 1.0)
    top.finish()
    return Scenario(name, guest, devices, migration, link, text, dilation)


def read_scenario_text(path: str | os.PathLike[str]) -> str:
    """A scenario file's text: a regular file of at most MAX_SCENARIO_BYTES, UTF-8."""
    try:
        return decode_utf8(read_regular_file(path, MAX_SCENARIO_BYTES, "scenario file"), str(path))
    except InputError as e:
        raise ScenarioError(str(e)) from None


def load_scenario(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> Scenario:
    text = read_scenario_text(path)
    return _with_overrides(text, str(path), overrides)


def builtin_scenario_text(name: str = DEFAULT_SCENARIO) -> str:
    """The scenarios shipped inside the package (migbed/scenarios/*.toml)."""
    if name not in builtin_scenarios():
        raise ScenarioError(
            f"scenario {clip(repr(name), 80)}: no such file and no built-in scenario of that name "
            f"(built-in: {', '.join(builtin_scenarios())})"
        )
    return resources.files("migbed").joinpath(f"scenarios/{name}.toml").read_text(encoding="utf-8")


def builtin_scenarios() -> list[str]:
    folder = resources.files("migbed").joinpath("scenarios")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def is_scenario_file(arg: str) -> bool:
    """--scenario NAME|FILE: a file when it looks like a path or names an existing one."""
    return arg.endswith(".toml") or os.sep in arg or os.path.lexists(arg)


def resolve_scenario(arg: str | None = None, overrides: Sequence[str] = ()) -> Scenario:
    """THE resolver of "a scenario file or a built-in name" (run, up, deploy, sweep, bench/),
    with `--set KEY=VALUE` overrides applied before validation. Raises ScenarioError."""
    arg = arg or DEFAULT_SCENARIO
    if is_scenario_file(arg):
        return load_scenario(arg, overrides)
    return _with_overrides(builtin_scenario_text(arg), arg, overrides)


def _with_overrides(text: str, where: str, overrides: Sequence[str]) -> Scenario:
    if not overrides:
        return parse_scenario(text, where)
    from migbed.core.overrides import OverrideError, apply_overrides, dump_toml

    data = _load_toml(text, where)
    try:
        apply_overrides(data, overrides)
    except OverrideError as e:
        raise ScenarioError(str(e)) from None
    new_text = f"# {where} with --set {' --set '.join(overrides)}\n" + dump_toml(data)
    return _scenario_from_data(_load_toml(new_text, where), new_text)
