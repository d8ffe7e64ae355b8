"""VFIO variant driver profiles: how a real driver's migration behaves, as pure data.

Scenario key `driver` (per `[[device]]`) picks one. A profile fixes *semantics* read from
the driver's source in Linux (drivers/vfio/pci/<driver>/), each field citing the function
it follows; the timings stay inputs (scenario keys), and a profile only gives their
defaults, each marked as a published figure (with its source) or a guess.

"generic" is not a real driver: it is migbed's behaviour before profiles existed, kept so
that older scenarios and results stay comparable. Its MIG_DATA_SIZE is what is left to read,
it cuts a new pre-copy image on any read, it saves in the first stop-copy read and its
load trigger is the scenario's `load-trigger`.

Where each behaviour takes effect:
  data_size, image_cut, dirty_while_initial   migbed/core/device.py (SourceDevice)
  stop_copy_save                              migbed/core/device.py (begin_stop_copy,
                                              save_wait), services/source/switchover.py
  pre_copy                                    migbed/core/vfio_migration.py (vfio_save_setup)
  load                                        migbed/core/loadmodel.py (the target's loads)
  resume, dirty_tracking                      the destination's vm_start; the source's syncs
docs/fidelity.md has one row per behaviour with the test that fails without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# MIG_DATA_SIZE (VFIO_DEVICE_FEATURE_MIG_DATA_SIZE): what the driver answers.
WHOLE_STATE = "whole-state"  # the device's whole state, whatever pre-copy already sent
REMAINING = "remaining"  # everything still unread, plus what stop-copy will add
DATA_SIZES = (WHOLE_STATE, REMAINING)

# When a new pre-copy (middle) image of dirty state is cut.
CUT_ON_PRECOPY_INFO = "precopy-info"  # only inside VFIO_MIG_GET_PRECOPY_INFO
CUT_ON_READ = "read"  # on any read that finds the previous image read out
CUT_NEVER = "never"  # pre-copy carries the initial data only; dirty state waits for STOP_COPY
IMAGE_CUTS = (CUT_ON_PRECOPY_INFO, CUT_ON_READ, CUT_NEVER)

# The STOP_COPY save on the source.
SAVE_ASYNC = "async"  # issued on the arc to STOP_COPY (at vm_stop), readable when it completes
SAVE_SYNC = "sync"  # done inside the arc to STOP_COPY: vm_stop waits for it, device by device
SAVE_FIRST_READ = "first-read"  # generic: paid when the stop-copy data is first read
SAVES = (SAVE_ASYNC, SAVE_SYNC, SAVE_FIRST_READ)

# How the destination loads (core/loadmodel.py has the first two).
LOAD_IMAGE_COMPLETE = "image-complete"  # inside the write() that completes an image
LOAD_PER_CHUNK = "per-chunk"  # every write loads its own bytes
LOAD_ON_STOP = "on-stop"  # buffered; loaded on the RESUMING -> STOP arc (at vm_start)
LOAD_FROM_SCENARIO = "scenario"  # generic only: the device's `load-trigger` key decides
LOADS = (LOAD_IMAGE_COMPLETE, LOAD_PER_CHUNK, LOAD_ON_STOP, LOAD_FROM_SCENARIO)

# Who reports the pages the device wrote by DMA.
TRACKING_DEVICE = "device"  # the device's tracker: VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT
TRACKING_IOMMU = "iommu"  # the IOMMU (iommufd dirty tracking): no per-device report
TRACKINGS = (TRACKING_DEVICE, TRACKING_IOMMU)


@dataclass(frozen=True)
class Default:
    """A timing input's default for a driver, and where the number comes from."""

    value: float
    source: str  # "published: <where>" or "guess: <why this order of magnitude>"

    @property
    def published(self) -> bool:
        return self.source.startswith("published")


@dataclass(frozen=True)
class DriverProfile:
    name: str
    real: bool  # an in-tree Linux driver (False: migbed's own "generic")
    where: str  # its source in Linux
    pre_copy: bool  # advertises VFIO_MIGRATION_PRE_COPY
    initial_bytes: str  # what the initial bytes hold (prose, cited)
    # dirty_bytes reported while initial bytes are unread (False: reported as 0 until then)
    dirty_while_initial: bool
    data_size: str
    image_cut: str
    stop_copy_save: str
    load: str
    # The destination pays `resume-time` on the arcs to RUNNING at vm_start, before the Shut.
    resume: bool
    dirty_tracking: str
    # Scenario key -> its default for this driver (absent: migbed's global default).
    defaults: dict[str, Default] = field(default_factory=dict)
    # Field -> the function(s) in the driver (or QEMU) it is read from.
    cites: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for value, allowed in ((self.data_size, DATA_SIZES), (self.image_cut, IMAGE_CUTS),
                               (self.stop_copy_save, SAVES), (self.load, LOADS),
                               (self.dirty_tracking, TRACKINGS)):
            if value not in allowed:
                raise ValueError(f"driver {self.name}: {value!r} not in {allowed}")
        if self.load == LOAD_FROM_SCENARIO and self.real:
            raise ValueError(f"driver {self.name}: a real driver fixes its load trigger")
        if not self.pre_copy and self.image_cut != CUT_NEVER:
            raise ValueError(f"driver {self.name}: no PRE_COPY, so no pre-copy images")

    def default(self, key: str, fallback: float) -> float:
        d = self.defaults.get(key)
        return fallback if d is None else d.value


GENERIC = DriverProfile(
    name="generic",
    real=False,
    where="(none: migbed's behaviour before driver profiles)",
    pre_copy=True,
    initial_bytes="the device's state buffer (initial-bytes)",
    dirty_while_initial=True,
    data_size=REMAINING,
    image_cut=CUT_ON_READ,
    stop_copy_save=SAVE_FIRST_READ,
    load=LOAD_FROM_SCENARIO,
    resume=False,
    dirty_tracking=TRACKING_IOMMU,
    cites={"all": "not a real driver; kept for comparison with earlier results"},
)

MLX5 = DriverProfile(
    name="mlx5",
    real=True,
    where="drivers/vfio/pci/mlx5 (mlx5-vfio-pci)",
    pre_copy=True,
    initial_bytes=("a record with the stop-copy size for the destination to pre-allocate "
                   "(mlx5vf_add_stop_copy_header), then the whole device image saved with "
                   "tracking on when PRE_COPY is entered (mlx5vf_pci_save_device_data)"),
    dirty_while_initial=False,
    data_size=WHOLE_STATE,
    image_cut=CUT_ON_PRECOPY_INFO,
    stop_copy_save=SAVE_ASYNC,
    load=LOAD_IMAGE_COMPLETE,
    resume=True,
    dirty_tracking=TRACKING_DEVICE,
    defaults={
        "load-setup-time": Default(1.48, "published: switchover-ack cover letter (2023), the "
                                   "1480 ms between 1900 ms without the ACK and 420 ms with "
                                   "it is resource allocation on the destination"),
        "stop-copy-load-time": Default(0.15, "published: Oracle on qemu-devel (2024), VFIO "
                                       "load 144 ms"),
        "stop-copy-save-time": Default(0.125, "published: Oracle on qemu-devel (2024), per-VF "
                                       "save 125/225 ms (2 VFs, 209 MB)"),
        "load-rate": Default(2e9, "guess: firmware DMA of a host buffer, GB/s order"),
        "resume-time": Default(0.005, "guess: two RESUME_VHCA firmware commands, ms order"),
        "tracker-report-rate": Default(64 * 1024**3, "guess: the tracker's report walks a "
                                       "bitmap of guest RAM; 64 GiB of RAM per second"),
    },
    cites={
        "pre_copy": "mlx5vf_cmd_set_migratable (PRE_COPY when the firmware has "
                    "migration_multi_load and migration_tracking_state)",
        "initial_bytes": "mlx5vf_pci_save_device_data, mlx5vf_add_stop_copy_header, "
                         "mlx5vf_save_callback (pre_copy_initial_bytes)",
        "dirty_while_initial": "mlx5vf_precopy_ioctl: dirty_bytes only once "
                               "pre_copy_initial_bytes are read",
        "data_size": "mlx5vf_pci_get_data_size: mlx5vf_cmd_query_vhca_migration_state "
                     "without MLX5VF_QUERY_INC (chunk mode: remaining_total_size)",
        "image_cut": "mlx5vf_precopy_ioctl: an incremental mlx5vf_cmd_save_vhca_state only "
                     "at the end of the data read and only if the increment is non-zero; "
                     "mlx5vf_save_read returns ENOMSG at a temporary end in PRE_COPY",
        "stop_copy_save": "mlx5vf_pci_step_device_state_locked (PRE_COPY_P2P -> STOP_COPY) "
                          "-> mlx5vf_pci_save_device_inc_data -> mlx5vf_cmd_save_vhca_state "
                          "-> mlx5_cmd_exec_cb; readable from mlx5vf_save_callback",
        "load": "mlx5vf_resume_write -> mlx5vf_resume_read_image -> "
                "MLX5_VF_LOAD_STATE_LOAD_IMAGE -> mlx5vf_cmd_load_vhca_state",
        "resume": "mlx5vf_pci_step_device_state_locked: STOP -> RUNNING_P2P and "
                  "RUNNING_P2P -> RUNNING each call mlx5vf_cmd_resume_vhca",
        "dirty_tracking": "mlx5vf_pci_log_ops (mlx5vf_tracker_read_and_clear) when the "
                          "firmware has adv_virtualization",
    },
)

DRIVERS: dict[str, DriverProfile] = {p.name: p for p in (GENERIC, MLX5)}
DEFAULT_DRIVER = "generic"


def driver_profile(name: str) -> DriverProfile:
    try:
        return DRIVERS[name]
    except KeyError:
        raise ValueError(f"driver = {name!r}: allowed {', '.join(DRIVERS)}") from None


def describe(p: DriverProfile) -> list[str]:
    """Lines for `migbed scenarios`: the profile's semantics and its default inputs."""
    kind = "in-tree driver " + p.where if p.real else "not a real driver: " + p.where
    lines = [f"{p.name}: {kind}",
             f"  pre-copy: {'yes' if p.pre_copy else 'no'}; MIG_DATA_SIZE: {p.data_size}; "
             f"new pre-copy image: {p.image_cut}",
             f"  stop-copy save: {p.stop_copy_save}; destination load: {p.load}; "
             f"resume on vm_start: {'yes' if p.resume else 'no'}; dirty tracking: "
             f"{p.dirty_tracking}"]
    for key, d in sorted(p.defaults.items()):
        lines.append(f"  default {key} = {d.value:g} ({d.source})")
    return lines
