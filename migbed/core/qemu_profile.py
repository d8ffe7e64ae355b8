"""QEMU version profiles: the source-side migration behaviours that changed between releases.

Scenario key `migration.qemu-version` picks one ("8.1", "9.2", "10.0", "10.1"; default
"10.0").
Each field is one behaviour, with the QEMU function and change it follows; docs/fidelity.md
lists them under "Source behaviours and QEMU versions". Pure data: the engine reads it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class QemuProfile:
    version: str
    # qemu_savevm_state_iterate() before 9.0 stopped at the first handler that had not
    # finished its round ("if (ret <= 0) break"): RAM comes first, so device pre-copy data
    # went out only once RAM's dirty bitmap was empty. 9.0 iterates every handler each
    # call (commit 4e1871c450, "migration: Don't serialize devices in
    # qemu_savevm_state_iterate()").
    devices_wait_for_ram: bool
    # migration_update_counters(): avail-switchover-bandwidth (8.2, Peter Xu's series)
    # replaces the measured bandwidth in threshold_size and expected_downtime.
    avail_switchover_bandwidth: bool
    # migration_iteration_run(): "(!pending_size || pending_size < threshold_size)" up to
    # 10.0; 10.1 rewrote the completion test as "pending_size <= threshold_size" (Peter
    # Xu, "migration: Rewrite the migration complete detect logic", 2025).
    threshold_inclusive: bool
    # VFIO stop-copy device state over the multifd channels, loaded by a per-device load
    # thread on the destination (hw/vfio/migration-multifd.c, QEMU 10.0).
    multifd_device_state: bool


PROFILES: dict[str, QemuProfile] = {
    "8.1": QemuProfile("8.1", devices_wait_for_ram=True, avail_switchover_bandwidth=False,
                       threshold_inclusive=False, multifd_device_state=False),
    "9.2": QemuProfile("9.2", devices_wait_for_ram=False, avail_switchover_bandwidth=True,
                       threshold_inclusive=False, multifd_device_state=False),
    "10.0": QemuProfile("10.0", devices_wait_for_ram=False, avail_switchover_bandwidth=True,
                        threshold_inclusive=False, multifd_device_state=True),
    # 10.1: commit 7aaa1fc072 ("migration: Rewrite the migration complete detect logic").
    # The exact pending is still fetched only below the threshold (strict); completion is
    # "pending <= threshold". The switchover-ack rework (per device, reusable; QEMU 11.1
    # cycle, docs/drivers.md) could not be read in QEMU's tree: no profile models it.
    "10.1": QemuProfile("10.1", devices_wait_for_ram=False, avail_switchover_bandwidth=True,
                        threshold_inclusive=True, multifd_device_state=True),
}
DEFAULT_VERSION = "10.0"

# Behaviours every supported version shares (listed so the docs and the tests name them):
# - dirty-sync-count counts the setup sync (ram_init_bitmaps), every exact pending
#   (ram_state_pending_exact) and the final sync (ram_save_complete);
# - expected_downtime starts at downtime-limit (migrate_fd_connect) and is recomputed in
#   migration_update_counters only when dirty-pages-rate is non-zero and more than 10000
#   bytes went out in the window: dirty_bytes_last_sync / expected bandwidth;
# - the rate limit is lifted for the final copy (migration_completion);
# - with the return path, completion (and downtime) waits for MIG_RP_MSG_SHUT
#   (close_return_path_on_source in migration_completion).


def qemu_profile(version: str) -> QemuProfile:
    try:
        return PROFILES[version]
    except KeyError:
        raise ValueError(f"qemu-version = {version!r}: allowed {', '.join(PROFILES)}") from None
