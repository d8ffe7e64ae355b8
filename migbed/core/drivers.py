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
FIXED = "fixed"  # a constant of the driver's (data_size_bytes), whatever the state's size
DATA_SIZES = (WHOLE_STATE, REMAINING, FIXED)

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
    # False: every image after the initial one is the device's whole state again, and the
    # increment PRECOPY_INFO adds is the whole state's size (virtio: no incremental read).
    incremental: bool = True
    # PRECOPY_INFO asks the device for its increment at most this often (virtio: 1/s via
    # __ratelimit); between asks it reports none and cuts nothing. 0: on every call.
    precopy_query_interval_s: float = 0.0
    data_size_bytes: int = 0  # MIG_DATA_SIZE when data_size is "fixed"
    # True only in debug builds of the driver version read (xe); said by `migbed scenarios`.
    experimental: bool = False
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
        if (self.data_size == FIXED) != (self.data_size_bytes > 0):
            raise ValueError(f"driver {self.name}: data_size_bytes goes with data_size fixed")

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
        "suspend-time": Default(0.005, "guess: two SUSPEND_VHCA firmware commands, ms order"),
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
        "incremental": "mlx5vf_precopy_ioctl and mlx5vf_pci_save_device_inc_data save with "
                       "the incremental flag: only what changed",
    },
)

def _guess(value: float, why: str) -> Default:
    return Default(value, f"guess: {why}; no published figure (docs/drivers.md)")


HISI_ACC = DriverProfile(
    name="hisi_acc",
    real=True,
    where="drivers/vfio/pci/hisilicon (hisi-acc-vfio-pci: HiSilicon SEC/HPRE/ZIP VFs)",
    pre_copy=True,
    initial_bytes="the 40-byte match data (QM_MATCH_SIZE) for the destination's compatibility "
                  "check; the queues themselves live in guest memory",
    dirty_while_initial=False,
    data_size=WHOLE_STATE,
    image_cut=CUT_NEVER,
    stop_copy_save=SAVE_SYNC,
    load=LOAD_ON_STOP,
    resume=True,
    dirty_tracking=TRACKING_IOMMU,
    defaults={
        "suspend-time": _guess(0.002, "PAUSE_QM mailbox and status polls of up to 100 x 100 us"),
        "stop-copy-save-time": _guess(0.001, "register and mailbox reads of a 176-byte struct"),
        "load-setup-time": _guess(0.001, "register writes and two mailbox commands"),
        "resume-time": _guess(0.0005, "one doorbell per queue pair"),
    },
    cites={
        "pre_copy": "hisi_acc_vfio_pci_migrn_init_dev (STOP_COPY | PRE_COPY, no P2P)",
        "initial_bytes": "hisi_acc_vf_pre_copy -> vf_qm_get_match_data",
        "dirty_while_initial": "hisi_acc_vf_precopy_ioctl: dirty_bytes = 0 always",
        "data_size": "hisi_acc_vfio_pci_get_data_size: sizeof(struct acc_vf_data), constant",
        "image_cut": "hisi_acc_vf_pre_copy: the match data once, at PRE_COPY entry",
        "stop_copy_save": "hisi_acc_vf_set_device_state -> hisi_acc_vf_stop_copy -> "
                          "vf_qm_state_save, inside the state-change ioctl",
        "load": "hisi_acc_vf_set_device_state: RESUMING -> STOP -> hisi_acc_vf_load_state",
        "resume": "hisi_acc_vf_start_device on STOP -> RUNNING",
        "dirty_tracking": "no vfio_log_ops: IOMMU dirty tracking",
    },
)

PDS = DriverProfile(
    name="pds",
    real=True,
    where="drivers/vfio/pci/pds (pds-vfio-pci: AMD/Pensando DSC VFs)",
    pre_copy=False,
    initial_bytes="none (no PRE_COPY)",
    dirty_while_initial=False,
    data_size=FIXED,
    data_size_bytes=65536,
    image_cut=CUT_NEVER,
    stop_copy_save=SAVE_SYNC,
    load=LOAD_ON_STOP,
    resume=True,
    dirty_tracking=TRACKING_DEVICE,
    defaults={
        "suspend-time": _guess(0.002, "SUSPEND admin commands, status polled every 1 ms"),
        "stop-copy-save-time": _guess(0.002, "STATE_SIZE and SAVE admin commands"),
        "load-setup-time": _guess(0.002, "RESTORE admin command"),
        "resume-time": _guess(0.001, "RESUME(P2P) and RESUME(FULL) admin commands"),
        "tracker-report-rate": _guess(64 * 1024**3, "READ_SEQ and WRITE_ACK plus a CPU "
                                      "pass over bitmaps of the tracked range"),
    },
    cites={
        "pre_copy": "pds_vfio_init_device: STOP_COPY | P2P",
        "data_size": "pds_vfio_get_device_state_size: PDS_LM_DEVICE_STATE_LENGTH (64 KiB)",
        "image_cut": "no PRE_COPY: no pre-copy images",
        "stop_copy_save": "pds_vfio_step_device_state_locked: STOP -> STOP_COPY -> "
                          "pds_vfio_get_lm_state_cmd (in QEMU's vfio_save_complete_precopy)",
        "load": "pds_vfio_step_device_state_locked: RESUMING -> STOP -> "
                "pds_vfio_set_lm_state_cmd",
        "resume": "pds_vfio_resume_device_cmd on STOP -> RUNNING_P2P and RUNNING_P2P -> RUNNING",
        "dirty_tracking": "pds_vfio_log_ops: pds_vfio_dma_logging_report -> pds_vfio_dirty_sync",
    },
)

QAT = DriverProfile(
    name="qat",
    real=True,
    where="drivers/vfio/pci/qat (qat-vf-vfio-pci: Intel QAT 4xxx VFs)",
    pre_copy=True,
    initial_bytes="the setup part of the 4 KiB state block (VF attributes for a compatibility "
                  "check)",
    dirty_while_initial=False,
    data_size=WHOLE_STATE,
    image_cut=CUT_NEVER,
    stop_copy_save=SAVE_SYNC,
    load=LOAD_ON_STOP,
    resume=True,
    dirty_tracking=TRACKING_IOMMU,
    defaults={
        "suspend-time": _guess(0.002, "drain of every ring bank with poll timeouts"),
        "stop-copy-save-time": _guess(0.001, "bank registers and PF shadow state into 4 KiB"),
        "load-setup-time": _guess(0.001, "bank registers and CSRs"),
        "resume-time": _guess(0.0005, "ends the drain per bank"),
    },
    cites={
        "pre_copy": "qat_vf_pci_init_dev: STOP_COPY | P2P | PRE_COPY",
        "initial_bytes": "qat_vf_precopy_ioctl: initial_bytes = setup_size - pos",
        "dirty_while_initial": "qat_vf_precopy_ioctl: dirty_bytes = 0 always",
        "data_size": "qat_vf_pci_get_data_size: state_size, the whole 4096-byte block",
        "image_cut": "qat_vf_save_device_data(.., true) once at PRE_COPY entry",
        "stop_copy_save": "qat_vf_pci_step_device_state: PRE_COPY_P2P -> STOP_COPY -> "
                          "qat_vf_save_state, inside the state-change ioctl",
        "load": "qat_vf_pci_step_device_state: RESUMING -> STOP -> qat_vf_load_device_data",
        "resume": "RUNNING_P2P -> RUNNING: adf_gen4_vfmig_resume_device",
        "dirty_tracking": "no log_ops: IOMMU dirty tracking",
    },
)

VIRTIO = DriverProfile(
    name="virtio",
    real=True,
    where="drivers/vfio/pci/virtio (virtio-vfio-pci: virtio-net VFs with admin device parts)",
    pre_copy=True,
    initial_bytes="the first full device context (and its record header)",
    dirty_while_initial=False,
    data_size=WHOLE_STATE,
    image_cut=CUT_ON_PRECOPY_INFO,
    stop_copy_save=SAVE_SYNC,
    load=LOAD_IMAGE_COMPLETE,
    resume=True,
    dirty_tracking=TRACKING_IOMMU,
    incremental=False,
    precopy_query_interval_s=1.0,
    defaults={
        "suspend-time": _guess(0.001, "one admin command: device mode STOPPED"),
        "stop-copy-save-time": _guess(0.005, "two admin commands reading the full context"),
        "load-setup-time": _guess(0.001, "one admin command per record"),
        "resume-time": _guess(0.001, "one admin command clearing the STOPPED mode"),
    },
    cites={
        "pre_copy": "virtiovf_set_migratable: STOP_COPY | P2P | PRE_COPY when the device has "
                    "admin device parts",
        "initial_bytes": "virtiovf_pci_save_device_data(.., true): a full context at PRE_COPY",
        "dirty_while_initial": "virtiovf_precopy_ioctl: dirty_bytes once initial is read",
        "data_size": "virtiovf_pci_get_data_size: the full context size (admin command)",
        "image_cut": "virtiovf_precopy_ioctl: a full context, only at the end of the data "
                     "read and when the size query (at most 1/s, __ratelimit) ran; "
                     "virtiovf_save_read returns ENOMSG at a temporary end",
        "incremental": "virtiovf_read_device_context_chunk: every image is a full context",
        "stop_copy_save": "virtiovf_pci_step_device_state_locked: PRE_COPY_P2P -> STOP_COPY "
                          "-> virtiovf_pci_save_device_final_data, inside the ioctl",
        "load": "virtiovf_resume_write: VIRTIOVF_LOAD_STATE_LOAD_CHUNK -> "
                "virtio_pci_admin_dev_parts_set in the write completing a record",
        "resume": "RUNNING_P2P -> RUNNING clears the STOPPED mode (one admin command)",
        "dirty_tracking": "no log_ops: iommufd dirty tracking",
    },
)

XE = DriverProfile(
    name="xe",
    real=True,
    where="drivers/vfio/pci/xe (xe-vfio-pci: Intel Xe SR-IOV VFs)",
    pre_copy=False,
    initial_bytes="none (no PRE_COPY)",
    dirty_while_initial=False,
    data_size=WHOLE_STATE,
    image_cut=CUT_NEVER,
    stop_copy_save=SAVE_ASYNC,
    load=LOAD_ON_STOP,
    resume=True,
    dirty_tracking=TRACKING_IOMMU,
    experimental=True,
    defaults={
        "suspend-time": _guess(0.002, "the VF paused on every GT"),
        "resume-time": _guess(0.002, "the VF resumed on every GT"),
    },
    cites={
        "pre_copy": "xe_vfio_pci_migration_init: STOP_COPY | P2P; pf_check_migration_support "
                    "is on only with CONFIG_DRM_XE_DEBUG in the version read",
        "data_size": "xe_vfio_pci_get_data_size -> xe_sriov_vfio_stop_copy_size (the PF's "
                     "xe_sriov_pf_migration_size, not read: taken as the whole state)",
        "image_cut": "no PRE_COPY: no pre-copy images",
        "stop_copy_save": "xe_vfio_set_state: STOP -> STOP_COPY triggers the PF worker's save "
                          "(control_trigger_save_vf); read blocks until data is ready",
        "load": "xe_sriov_pf_migration_write feeds the PF worker, RESUMING -> STOP waits for "
                "the restore (pf_wait_vf_restore_done); migbed pays it all on that arc",
        "resume": "RUNNING_P2P -> RUNNING resumes the VF on every GT",
        "dirty_tracking": "no log_ops: IOMMU dirty tracking",
    },
)

DRIVERS: dict[str, DriverProfile] = {
    p.name: p for p in (GENERIC, MLX5, HISI_ACC, PDS, QAT, VIRTIO, XE)}
DEFAULT_DRIVER = "generic"


def driver_profile(name: str) -> DriverProfile:
    try:
        return DRIVERS[name]
    except KeyError:
        raise ValueError(f"driver = {name!r}: allowed {', '.join(DRIVERS)}") from None


def describe(p: DriverProfile) -> list[str]:
    """Lines for `migbed scenarios`: the profile's semantics and its default inputs."""
    kind = "in-tree driver " + p.where if p.real else "not a real driver: " + p.where
    if p.experimental:
        kind += " [migration enabled only in debug builds of the version read]"
    size = f"fixed {p.data_size_bytes} B" if p.data_size == FIXED else p.data_size
    lines = [f"{p.name}: {kind}",
             f"  pre-copy: {'yes' if p.pre_copy else 'no'}; MIG_DATA_SIZE: {size}; "
             f"new pre-copy image: {p.image_cut}"
             + ("" if p.incremental else " (each a full state)"),
             f"  stop-copy save: {p.stop_copy_save}; destination load: {p.load}; "
             f"resume on vm_start: {'yes' if p.resume else 'no'}; dirty tracking: "
             f"{p.dirty_tracking}"]
    for key, d in sorted(p.defaults.items()):
        lines.append(f"  default {key} = {d.value:g} ({d.source})")
    return lines
