"""One small migration with chosen VFIO devices between the shared local services
(tests/integration: test_drivers.py, test_time_aware_drivers.py)."""

from __future__ import annotations

from migbed.experiments.comparison import Plan, run_plan
from migbed.experiments.localstack import Service
from migbed.measure.record import RunRecord

# A 16 MiB guest; {devices} are [[device]] tables; [migration] is MIGRATION with a test's
# keys over it.
BASE = """
name = "drivers"
[guest]
ram-size = "{ram}"
dirty-rate = "2MiB/s"
working-set = "4MiB"
{devices}
[migration]
{migration}
"""
MIGRATION = {"downtime-limit": '"100ms"', "max-bandwidth": '"256MiB/s"',
             "avail-switchover-bandwidth": '"128MiB/s"', "max-iterations": "400",
             "max-time": '"30s"', "warmup": '"100ms"'}

# Per driver: a device of its kind (sizes its driver reads: docs/drivers.md), a 200 ms load
# setup and a 50 ms resume (above the target pacer's 10 ms credit), so where each is paid
# shows in the record.
SHAPES = {
    "generic": 'initial-bytes = "4MB"\nstop-copy-size = "1MB"',
    "mlx5": ('initial-bytes = "4MB"\nstop-copy-size = "1MB"\ndirty-rate = "256KiB/s"\n'
             'stop-copy-load-time = "0ms"'),
    "hisi_acc": 'initial-bytes = "40B"\nstop-copy-size = "136B"',
    "pds": 'initial-bytes = "0B"\nstop-copy-size = "64KiB"',
    "qat": 'initial-bytes = "1KiB"\nstop-copy-size = "3KiB"',
    "virtio": 'initial-bytes = "1MB"\nstop-copy-size = "0B"',
    "xe": 'initial-bytes = "0B"\nstop-copy-size = "2MB"',
}


def device(driver: str, name: str = "vf0", extra: str = "") -> str:
    return (f'[[device]]\nname = "{name}"\ndriver = "{driver}"\n{SHAPES[driver]}\n'
            f'load-setup-time = "200ms"\nresume-time = "50ms"\n{extra}\n')


def migrate(stack: tuple[Service, Service], devices: str, policy: str = "switchover-ack",
            ram: str = "16MiB", **migration: str) -> RunRecord:
    """One run; `migration` keys (with _ for -) replace MIGRATION's, "" removes one."""
    source, target = stack
    keys = {k: v for k, v in (MIGRATION | {k.replace("_", "-"): v
                                           for k, v in migration.items()}).items() if v}
    toml = BASE.format(ram=ram, devices=devices, migration="\n".join(f"{k} = {v}" for k, v in keys.items()))
    [r] = run_plan(Plan("drivers", toml, [policy], 1, source.address, target.address),
                   show_progress=False)
    assert r.outcome == "completed" and r.verified, r.error
    return r
