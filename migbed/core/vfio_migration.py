"""QEMU's side of one VFIO device's migration (hw/vfio/migration.c), over a SourceDevice.

What QEMU asks the device, and when, decides what the switchover rule sees:

- vfio_save_setup: PRE_COPY if the device supports it, then one VFIO_DEVICE_FEATURE_MIG_DATA_SIZE
  and one VFIO_MIG_GET_PRECOPY_INFO (vfio_query_precopy_size), which fill QEMU's cache.
- vfio_state_pending_estimate: the cached initial + dirty bytes, no ioctl (only in PRE_COPY).
- vfio_state_pending_exact: MIG_DATA_SIZE + (in PRE_COPY) a fresh PRECOPY_INFO: initial +
  dirty. The only other place QEMU asks for PRECOPY_INFO. With mlx5 that ioctl is also
  where a new pre-copy image is cut (mlx5vf_precopy_ioctl).
- vfio_save_block / vfio_update_estimated_pending_data: every read counts the cache down
  (initial bytes first, then dirty); a read at a temporary end (ENOMSG, 0 bytes) zeroes it.
- vfio_save_iterate returns whether the cache reached zero; QEMU 8.1 returned 1 always
  ("so following handlers will not be potentially blocked"), 9.0 made it the real answer
  (Avihai Horon, "vfio/migration: Refactor vfio_save_state() return value") once
  qemu_savevm_state_iterate stopped serialising handlers (commit 4e1871c450): in no version
  do devices hold each other back.
- INIT_DATA_SENT goes out after the read that brings the *cached* initial size to 0.

Pure: no I/O, no clock. The engine (services/source/) sends what save_block returns.
"""

from __future__ import annotations

from migbed.core.device import PRE_COPY_STATES, Chunk, SourceDevice, VfioState


class VfioMigration:
    """QEMU's VFIOMigration of one device: its cached pre-copy sizes and last data size."""

    def __init__(self, device: SourceDevice) -> None:
        self.device = device
        self.precopy_init_size = 0  # migration->precopy_init_size
        self.precopy_dirty_size = 0  # migration->precopy_dirty_size
        self.stop_copy_size = 0  # the last MIG_DATA_SIZE QEMU read
        self.initial_image_bytes = 0  # initial_bytes of vfio_save_setup's PRECOPY_INFO
        self.initial_data_sent = False  # INIT_DATA_SENT written
        self.precopy_info_calls = 0  # VFIO_MIG_GET_PRECOPY_INFO ioctls issued

    @property
    def in_precopy(self) -> bool:
        return self.device.state in PRE_COPY_STATES

    def save_setup(self) -> None:
        """vfio_save_setup: data size, then PRE_COPY and precopy info if supported."""
        self.stop_copy_size = self.device.stop_copy_size()
        if self.device.driver.pre_copy:
            self.device.set_state(VfioState.PRE_COPY)
            self._query_precopy()
            self.initial_image_bytes = self.precopy_init_size

    def _query_precopy(self) -> None:
        """vfio_query_precopy_size."""
        self.precopy_info_calls += 1
        self.precopy_init_size, self.precopy_dirty_size = self.device.precopy_info()

    def pending_estimate(self) -> int:
        """vfio_state_pending_estimate: the cache, no ioctl."""
        if not self.in_precopy:
            return 0
        return self.precopy_init_size + self.precopy_dirty_size

    def pending_exact(self) -> int:
        """vfio_state_pending_exact: MIG_DATA_SIZE plus fresh initial + dirty bytes."""
        self.stop_copy_size = self.device.stop_copy_size()
        pending = self.stop_copy_size
        if self.in_precopy:
            self._query_precopy()
            pending += self.precopy_init_size + self.precopy_dirty_size
        return pending

    def save_block(self, max_bytes: int) -> list[Chunk]:
        """vfio_save_block in pre-copy, then vfio_update_estimated_pending_data."""
        chunks = self.device.read(max_bytes)
        self._count_down(sum(len(c.data) for c in chunks))
        return chunks

    def _count_down(self, n: int) -> None:
        if n == 0:  # ENOMSG: pre-copy emptied the device for now
            self.precopy_init_size = self.precopy_dirty_size = 0
            return
        from_init = min(self.precopy_init_size, n)
        self.precopy_init_size -= from_init
        self.precopy_dirty_size -= min(self.precopy_dirty_size, n - from_init)

    def init_data_sent_due(self) -> bool:
        """vfio_save_iterate: INIT_DATA_SENT is written once the cached initial size is 0."""
        if self.initial_data_sent or self.precopy_init_size or not self.device.driver.pre_copy:
            return False
        self.initial_data_sent = True
        return True
