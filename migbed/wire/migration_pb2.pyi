from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ProtocolVersion(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROTOCOL_VERSION_UNSPECIFIED: _ClassVar[ProtocolVersion]
    PROTOCOL_VERSION_1: _ClassVar[ProtocolVersion]

class LoadTrigger(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOAD_TRIGGER_UNSPECIFIED: _ClassVar[LoadTrigger]
    LOAD_TRIGGER_IMAGE_COMPLETE: _ClassVar[LoadTrigger]
    LOAD_TRIGGER_PER_CHUNK: _ClassVar[LoadTrigger]
    LOAD_TRIGGER_ON_STOP: _ClassVar[LoadTrigger]

class DeviceStateTransfer(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEVICE_STATE_TRANSFER_UNSPECIFIED: _ClassVar[DeviceStateTransfer]
    DEVICE_STATE_TRANSFER_MAIN: _ClassVar[DeviceStateTransfer]
    DEVICE_STATE_TRANSFER_MULTIFD: _ClassVar[DeviceStateTransfer]

class ImageKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IMAGE_KIND_UNSPECIFIED: _ClassVar[ImageKind]
    IMAGE_KIND_INITIAL: _ClassVar[ImageKind]
    IMAGE_KIND_MIDDLE: _ClassVar[ImageKind]
    IMAGE_KIND_FINAL: _ClassVar[ImageKind]
    IMAGE_KIND_CONFIG: _ClassVar[ImageKind]
PROTOCOL_VERSION_UNSPECIFIED: ProtocolVersion
PROTOCOL_VERSION_1: ProtocolVersion
LOAD_TRIGGER_UNSPECIFIED: LoadTrigger
LOAD_TRIGGER_IMAGE_COMPLETE: LoadTrigger
LOAD_TRIGGER_PER_CHUNK: LoadTrigger
LOAD_TRIGGER_ON_STOP: LoadTrigger
DEVICE_STATE_TRANSFER_UNSPECIFIED: DeviceStateTransfer
DEVICE_STATE_TRANSFER_MAIN: DeviceStateTransfer
DEVICE_STATE_TRANSFER_MULTIFD: DeviceStateTransfer
IMAGE_KIND_UNSPECIFIED: ImageKind
IMAGE_KIND_INITIAL: ImageKind
IMAGE_KIND_MIDDLE: ImageKind
IMAGE_KIND_FINAL: ImageKind
IMAGE_KIND_CONFIG: ImageKind

class GuestShape(_message.Message):
    __slots__ = ("ram_bytes", "page_size")
    RAM_BYTES_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    ram_bytes: int
    page_size: int
    def __init__(self, ram_bytes: _Optional[int] = ..., page_size: _Optional[int] = ...) -> None: ...

class DeviceShape(_message.Message):
    __slots__ = ("name", "initial_bytes", "stop_copy_size", "block_size", "load_setup_time_s", "load_rate_bytes_per_s", "stop_copy_load_time_s", "load_trigger", "config_load_time_s", "device_state_bytes", "no_pre_copy", "resume_time_s")
    NAME_FIELD_NUMBER: _ClassVar[int]
    INITIAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    STOP_COPY_SIZE_FIELD_NUMBER: _ClassVar[int]
    BLOCK_SIZE_FIELD_NUMBER: _ClassVar[int]
    LOAD_SETUP_TIME_S_FIELD_NUMBER: _ClassVar[int]
    LOAD_RATE_BYTES_PER_S_FIELD_NUMBER: _ClassVar[int]
    STOP_COPY_LOAD_TIME_S_FIELD_NUMBER: _ClassVar[int]
    LOAD_TRIGGER_FIELD_NUMBER: _ClassVar[int]
    CONFIG_LOAD_TIME_S_FIELD_NUMBER: _ClassVar[int]
    DEVICE_STATE_BYTES_FIELD_NUMBER: _ClassVar[int]
    NO_PRE_COPY_FIELD_NUMBER: _ClassVar[int]
    RESUME_TIME_S_FIELD_NUMBER: _ClassVar[int]
    name: str
    initial_bytes: int
    stop_copy_size: int
    block_size: int
    load_setup_time_s: float
    load_rate_bytes_per_s: float
    stop_copy_load_time_s: float
    load_trigger: LoadTrigger
    config_load_time_s: float
    device_state_bytes: int
    no_pre_copy: bool
    resume_time_s: float
    def __init__(self, name: _Optional[str] = ..., initial_bytes: _Optional[int] = ..., stop_copy_size: _Optional[int] = ..., block_size: _Optional[int] = ..., load_setup_time_s: _Optional[float] = ..., load_rate_bytes_per_s: _Optional[float] = ..., stop_copy_load_time_s: _Optional[float] = ..., load_trigger: _Optional[_Union[LoadTrigger, str]] = ..., config_load_time_s: _Optional[float] = ..., device_state_bytes: _Optional[int] = ..., no_pre_copy: _Optional[bool] = ..., resume_time_s: _Optional[float] = ...) -> None: ...

class Setup(_message.Message):
    __slots__ = ("protocol_version", "session_id", "guest", "devices", "switchover_ack", "source_boot_id", "guest_seed", "vcpu_tick_s", "dirty_rate_bytes_per_s", "working_set_bytes", "uniform_dirtying", "scenario", "policy", "heartbeat_timeout_s", "return_path", "qemu_version", "multifd_channels", "device_state_transfer", "time_dilation")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    GUEST_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    SWITCHOVER_ACK_FIELD_NUMBER: _ClassVar[int]
    SOURCE_BOOT_ID_FIELD_NUMBER: _ClassVar[int]
    GUEST_SEED_FIELD_NUMBER: _ClassVar[int]
    VCPU_TICK_S_FIELD_NUMBER: _ClassVar[int]
    DIRTY_RATE_BYTES_PER_S_FIELD_NUMBER: _ClassVar[int]
    WORKING_SET_BYTES_FIELD_NUMBER: _ClassVar[int]
    UNIFORM_DIRTYING_FIELD_NUMBER: _ClassVar[int]
    SCENARIO_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    RETURN_PATH_FIELD_NUMBER: _ClassVar[int]
    QEMU_VERSION_FIELD_NUMBER: _ClassVar[int]
    MULTIFD_CHANNELS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_STATE_TRANSFER_FIELD_NUMBER: _ClassVar[int]
    TIME_DILATION_FIELD_NUMBER: _ClassVar[int]
    protocol_version: ProtocolVersion
    session_id: str
    guest: GuestShape
    devices: _containers.RepeatedCompositeFieldContainer[DeviceShape]
    switchover_ack: bool
    source_boot_id: str
    guest_seed: int
    vcpu_tick_s: float
    dirty_rate_bytes_per_s: float
    working_set_bytes: int
    uniform_dirtying: bool
    scenario: str
    policy: str
    heartbeat_timeout_s: float
    return_path: bool
    qemu_version: str
    multifd_channels: int
    device_state_transfer: DeviceStateTransfer
    time_dilation: float
    def __init__(self, protocol_version: _Optional[_Union[ProtocolVersion, str]] = ..., session_id: _Optional[str] = ..., guest: _Optional[_Union[GuestShape, _Mapping]] = ..., devices: _Optional[_Iterable[_Union[DeviceShape, _Mapping]]] = ..., switchover_ack: _Optional[bool] = ..., source_boot_id: _Optional[str] = ..., guest_seed: _Optional[int] = ..., vcpu_tick_s: _Optional[float] = ..., dirty_rate_bytes_per_s: _Optional[float] = ..., working_set_bytes: _Optional[int] = ..., uniform_dirtying: _Optional[bool] = ..., scenario: _Optional[str] = ..., policy: _Optional[str] = ..., heartbeat_timeout_s: _Optional[float] = ..., return_path: _Optional[bool] = ..., qemu_version: _Optional[str] = ..., multifd_channels: _Optional[int] = ..., device_state_transfer: _Optional[_Union[DeviceStateTransfer, str]] = ..., time_dilation: _Optional[float] = ...) -> None: ...

class RamPages(_message.Message):
    __slots__ = ("pages", "data")
    PAGES_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    pages: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, pages: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class DeviceData(_message.Message):
    __slots__ = ("device", "kind", "seq", "offset", "data", "image_bytes")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    IMAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    device: int
    kind: ImageKind
    seq: int
    offset: int
    data: bytes
    image_bytes: int
    def __init__(self, device: _Optional[int] = ..., kind: _Optional[_Union[ImageKind, str]] = ..., seq: _Optional[int] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ..., image_bytes: _Optional[int] = ...) -> None: ...

class InitDataSent(_message.Message):
    __slots__ = ("device", "seq")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    device: int
    seq: int
    def __init__(self, device: _Optional[int] = ..., seq: _Optional[int] = ...) -> None: ...

class Ping(_message.Message):
    __slots__ = ("seq", "source_send_ns")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    SOURCE_SEND_NS_FIELD_NUMBER: _ClassVar[int]
    seq: int
    source_send_ns: int
    def __init__(self, seq: _Optional[int] = ..., source_send_ns: _Optional[int] = ...) -> None: ...

class StopCopy(_message.Message):
    __slots__ = ("source_stop_ns",)
    SOURCE_STOP_NS_FIELD_NUMBER: _ClassVar[int]
    source_stop_ns: int
    def __init__(self, source_stop_ns: _Optional[int] = ...) -> None: ...

class Complete(_message.Message):
    __slots__ = ("source_last_tick_ns", "ram_pages_sent", "device_next_seq")
    SOURCE_LAST_TICK_NS_FIELD_NUMBER: _ClassVar[int]
    RAM_PAGES_SENT_FIELD_NUMBER: _ClassVar[int]
    DEVICE_NEXT_SEQ_FIELD_NUMBER: _ClassVar[int]
    source_last_tick_ns: int
    ram_pages_sent: int
    device_next_seq: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, source_last_tick_ns: _Optional[int] = ..., ram_pages_sent: _Optional[int] = ..., device_next_seq: _Optional[_Iterable[int]] = ...) -> None: ...

class Digests(_message.Message):
    __slots__ = ("ram", "devices")
    RAM_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    ram: bytes
    devices: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, ram: _Optional[bytes] = ..., devices: _Optional[_Iterable[bytes]] = ...) -> None: ...

class Abort(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class MultifdSync(_message.Message):
    __slots__ = ("generation", "pages_sent")
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    PAGES_SENT_FIELD_NUMBER: _ClassVar[int]
    generation: int
    pages_sent: int
    def __init__(self, generation: _Optional[int] = ..., pages_sent: _Optional[int] = ...) -> None: ...

class SourceMessage(_message.Message):
    __slots__ = ("setup", "ram", "device_data", "init_data_sent", "ping", "stop_copy", "complete", "digests", "abort", "multifd_sync")
    SETUP_FIELD_NUMBER: _ClassVar[int]
    RAM_FIELD_NUMBER: _ClassVar[int]
    DEVICE_DATA_FIELD_NUMBER: _ClassVar[int]
    INIT_DATA_SENT_FIELD_NUMBER: _ClassVar[int]
    PING_FIELD_NUMBER: _ClassVar[int]
    STOP_COPY_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    DIGESTS_FIELD_NUMBER: _ClassVar[int]
    ABORT_FIELD_NUMBER: _ClassVar[int]
    MULTIFD_SYNC_FIELD_NUMBER: _ClassVar[int]
    setup: Setup
    ram: RamPages
    device_data: DeviceData
    init_data_sent: InitDataSent
    ping: Ping
    stop_copy: StopCopy
    complete: Complete
    digests: Digests
    abort: Abort
    multifd_sync: MultifdSync
    def __init__(self, setup: _Optional[_Union[Setup, _Mapping]] = ..., ram: _Optional[_Union[RamPages, _Mapping]] = ..., device_data: _Optional[_Union[DeviceData, _Mapping]] = ..., init_data_sent: _Optional[_Union[InitDataSent, _Mapping]] = ..., ping: _Optional[_Union[Ping, _Mapping]] = ..., stop_copy: _Optional[_Union[StopCopy, _Mapping]] = ..., complete: _Optional[_Union[Complete, _Mapping]] = ..., digests: _Optional[_Union[Digests, _Mapping]] = ..., abort: _Optional[_Union[Abort, _Mapping]] = ..., multifd_sync: _Optional[_Union[MultifdSync, _Mapping]] = ...) -> None: ...

class SetupAccepted(_message.Message):
    __slots__ = ("session_id", "target_boot_id", "devices_needing_ack", "multifd_port", "multifd_token")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_BOOT_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICES_NEEDING_ACK_FIELD_NUMBER: _ClassVar[int]
    MULTIFD_PORT_FIELD_NUMBER: _ClassVar[int]
    MULTIFD_TOKEN_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    target_boot_id: str
    devices_needing_ack: int
    multifd_port: int
    multifd_token: bytes
    def __init__(self, session_id: _Optional[str] = ..., target_boot_id: _Optional[str] = ..., devices_needing_ack: _Optional[int] = ..., multifd_port: _Optional[int] = ..., multifd_token: _Optional[bytes] = ...) -> None: ...

class DeviceLoadProgress(_message.Message):
    __slots__ = ("device", "loaded_bytes", "backlog_bytes", "initial_loaded", "initial_loaded_ns", "initial_load_s", "busy_s", "measured_load_rate_bytes_per_s", "loading")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    LOADED_BYTES_FIELD_NUMBER: _ClassVar[int]
    BACKLOG_BYTES_FIELD_NUMBER: _ClassVar[int]
    INITIAL_LOADED_FIELD_NUMBER: _ClassVar[int]
    INITIAL_LOADED_NS_FIELD_NUMBER: _ClassVar[int]
    INITIAL_LOAD_S_FIELD_NUMBER: _ClassVar[int]
    BUSY_S_FIELD_NUMBER: _ClassVar[int]
    MEASURED_LOAD_RATE_BYTES_PER_S_FIELD_NUMBER: _ClassVar[int]
    LOADING_FIELD_NUMBER: _ClassVar[int]
    device: int
    loaded_bytes: int
    backlog_bytes: int
    initial_loaded: bool
    initial_loaded_ns: int
    initial_load_s: float
    busy_s: float
    measured_load_rate_bytes_per_s: float
    loading: bool
    def __init__(self, device: _Optional[int] = ..., loaded_bytes: _Optional[int] = ..., backlog_bytes: _Optional[int] = ..., initial_loaded: _Optional[bool] = ..., initial_loaded_ns: _Optional[int] = ..., initial_load_s: _Optional[float] = ..., busy_s: _Optional[float] = ..., measured_load_rate_bytes_per_s: _Optional[float] = ..., loading: _Optional[bool] = ...) -> None: ...

class Shut(_message.Message):
    __slots__ = ("target_loads_done_ns", "target_devices_running_ns")
    TARGET_LOADS_DONE_NS_FIELD_NUMBER: _ClassVar[int]
    TARGET_DEVICES_RUNNING_NS_FIELD_NUMBER: _ClassVar[int]
    target_loads_done_ns: int
    target_devices_running_ns: int
    def __init__(self, target_loads_done_ns: _Optional[int] = ..., target_devices_running_ns: _Optional[int] = ...) -> None: ...

class SwitchoverAck(_message.Message):
    __slots__ = ("target_ack_ns",)
    TARGET_ACK_NS_FIELD_NUMBER: _ClassVar[int]
    target_ack_ns: int
    def __init__(self, target_ack_ns: _Optional[int] = ...) -> None: ...

class Pong(_message.Message):
    __slots__ = ("seq", "source_send_ns", "target_recv_ns")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    SOURCE_SEND_NS_FIELD_NUMBER: _ClassVar[int]
    TARGET_RECV_NS_FIELD_NUMBER: _ClassVar[int]
    seq: int
    source_send_ns: int
    target_recv_ns: int
    def __init__(self, seq: _Optional[int] = ..., source_send_ns: _Optional[int] = ..., target_recv_ns: _Optional[int] = ...) -> None: ...

class Received(_message.Message):
    __slots__ = ("target_recv_ns",)
    TARGET_RECV_NS_FIELD_NUMBER: _ClassVar[int]
    target_recv_ns: int
    def __init__(self, target_recv_ns: _Optional[int] = ...) -> None: ...

class Resumed(_message.Message):
    __slots__ = ("target_first_tick_ns", "target_loads_done_ns", "device_initial_load_s", "target_devices_running_ns")
    TARGET_FIRST_TICK_NS_FIELD_NUMBER: _ClassVar[int]
    TARGET_LOADS_DONE_NS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_INITIAL_LOAD_S_FIELD_NUMBER: _ClassVar[int]
    TARGET_DEVICES_RUNNING_NS_FIELD_NUMBER: _ClassVar[int]
    target_first_tick_ns: int
    target_loads_done_ns: int
    device_initial_load_s: _containers.RepeatedScalarFieldContainer[float]
    target_devices_running_ns: int
    def __init__(self, target_first_tick_ns: _Optional[int] = ..., target_loads_done_ns: _Optional[int] = ..., device_initial_load_s: _Optional[_Iterable[float]] = ..., target_devices_running_ns: _Optional[int] = ...) -> None: ...

class Verified(_message.Message):
    __slots__ = ("ok", "ram", "devices", "detail")
    OK_FIELD_NUMBER: _ClassVar[int]
    RAM_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    ram: bytes
    devices: _containers.RepeatedScalarFieldContainer[bytes]
    detail: str
    def __init__(self, ok: _Optional[bool] = ..., ram: _Optional[bytes] = ..., devices: _Optional[_Iterable[bytes]] = ..., detail: _Optional[str] = ...) -> None: ...

class TargetMessage(_message.Message):
    __slots__ = ("setup_accepted", "load_progress", "switchover_ack", "pong", "received", "resumed", "verified", "shut")
    SETUP_ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    LOAD_PROGRESS_FIELD_NUMBER: _ClassVar[int]
    SWITCHOVER_ACK_FIELD_NUMBER: _ClassVar[int]
    PONG_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    RESUMED_FIELD_NUMBER: _ClassVar[int]
    VERIFIED_FIELD_NUMBER: _ClassVar[int]
    SHUT_FIELD_NUMBER: _ClassVar[int]
    setup_accepted: SetupAccepted
    load_progress: DeviceLoadProgress
    switchover_ack: SwitchoverAck
    pong: Pong
    received: Received
    resumed: Resumed
    verified: Verified
    shut: Shut
    def __init__(self, setup_accepted: _Optional[_Union[SetupAccepted, _Mapping]] = ..., load_progress: _Optional[_Union[DeviceLoadProgress, _Mapping]] = ..., switchover_ack: _Optional[_Union[SwitchoverAck, _Mapping]] = ..., pong: _Optional[_Union[Pong, _Mapping]] = ..., received: _Optional[_Union[Received, _Mapping]] = ..., resumed: _Optional[_Union[Resumed, _Mapping]] = ..., verified: _Optional[_Union[Verified, _Mapping]] = ..., shut: _Optional[_Union[Shut, _Mapping]] = ...) -> None: ...

class StartRequest(_message.Message):
    __slots__ = ("scenario_toml", "policy", "target_address", "run_id", "labels_json", "watcher_grace_s")
    SCENARIO_TOML_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    TARGET_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_JSON_FIELD_NUMBER: _ClassVar[int]
    WATCHER_GRACE_S_FIELD_NUMBER: _ClassVar[int]
    scenario_toml: str
    policy: str
    target_address: str
    run_id: str
    labels_json: str
    watcher_grace_s: float
    def __init__(self, scenario_toml: _Optional[str] = ..., policy: _Optional[str] = ..., target_address: _Optional[str] = ..., run_id: _Optional[str] = ..., labels_json: _Optional[str] = ..., watcher_grace_s: _Optional[float] = ...) -> None: ...

class StartReply(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class WatchEvent(_message.Message):
    __slots__ = ("progress", "record", "heartbeat")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    progress: ProgressSample
    record: RunRecord
    heartbeat: WatchHeartbeat
    def __init__(self, progress: _Optional[_Union[ProgressSample, _Mapping]] = ..., record: _Optional[_Union[RunRecord, _Mapping]] = ..., heartbeat: _Optional[_Union[WatchHeartbeat, _Mapping]] = ...) -> None: ...

class WatchHeartbeat(_message.Message):
    __slots__ = ("interval_s", "lost_after_s")
    INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    LOST_AFTER_S_FIELD_NUMBER: _ClassVar[int]
    interval_s: float
    lost_after_s: float
    def __init__(self, interval_s: _Optional[float] = ..., lost_after_s: _Optional[float] = ...) -> None: ...

class DeviceSample(_message.Message):
    __slots__ = ("name", "state", "initial_bytes", "dirty_bytes", "target_loaded_bytes", "target_backlog_bytes", "target_initial_loaded", "target_busy_s", "target_loading")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    INITIAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    DIRTY_BYTES_FIELD_NUMBER: _ClassVar[int]
    TARGET_LOADED_BYTES_FIELD_NUMBER: _ClassVar[int]
    TARGET_BACKLOG_BYTES_FIELD_NUMBER: _ClassVar[int]
    TARGET_INITIAL_LOADED_FIELD_NUMBER: _ClassVar[int]
    TARGET_BUSY_S_FIELD_NUMBER: _ClassVar[int]
    TARGET_LOADING_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: str
    initial_bytes: int
    dirty_bytes: int
    target_loaded_bytes: int
    target_backlog_bytes: int
    target_initial_loaded: bool
    target_busy_s: float
    target_loading: bool
    def __init__(self, name: _Optional[str] = ..., state: _Optional[str] = ..., initial_bytes: _Optional[int] = ..., dirty_bytes: _Optional[int] = ..., target_loaded_bytes: _Optional[int] = ..., target_backlog_bytes: _Optional[int] = ..., target_initial_loaded: _Optional[bool] = ..., target_busy_s: _Optional[float] = ..., target_loading: _Optional[bool] = ...) -> None: ...

class ProgressSample(_message.Message):
    __slots__ = ("t_ms", "phase", "ram_remaining_bytes", "ram_transferred_bytes", "device_transferred_bytes", "dirty_sync_count", "bandwidth_bytes_per_s", "threshold_bytes", "expected_downtime_ms", "dirty_pages_rate", "pending_bytes", "ack_received", "devices")
    T_MS_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    RAM_REMAINING_BYTES_FIELD_NUMBER: _ClassVar[int]
    RAM_TRANSFERRED_BYTES_FIELD_NUMBER: _ClassVar[int]
    DEVICE_TRANSFERRED_BYTES_FIELD_NUMBER: _ClassVar[int]
    DIRTY_SYNC_COUNT_FIELD_NUMBER: _ClassVar[int]
    BANDWIDTH_BYTES_PER_S_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_BYTES_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_DOWNTIME_MS_FIELD_NUMBER: _ClassVar[int]
    DIRTY_PAGES_RATE_FIELD_NUMBER: _ClassVar[int]
    PENDING_BYTES_FIELD_NUMBER: _ClassVar[int]
    ACK_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    t_ms: float
    phase: str
    ram_remaining_bytes: int
    ram_transferred_bytes: int
    device_transferred_bytes: int
    dirty_sync_count: int
    bandwidth_bytes_per_s: float
    threshold_bytes: float
    expected_downtime_ms: float
    dirty_pages_rate: float
    pending_bytes: int
    ack_received: bool
    devices: _containers.RepeatedCompositeFieldContainer[DeviceSample]
    def __init__(self, t_ms: _Optional[float] = ..., phase: _Optional[str] = ..., ram_remaining_bytes: _Optional[int] = ..., ram_transferred_bytes: _Optional[int] = ..., device_transferred_bytes: _Optional[int] = ..., dirty_sync_count: _Optional[int] = ..., bandwidth_bytes_per_s: _Optional[float] = ..., threshold_bytes: _Optional[float] = ..., expected_downtime_ms: _Optional[float] = ..., dirty_pages_rate: _Optional[float] = ..., pending_bytes: _Optional[int] = ..., ack_received: _Optional[bool] = ..., devices: _Optional[_Iterable[_Union[DeviceSample, _Mapping]]] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("t_ms", "name", "detail")
    T_MS_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    t_ms: float
    name: str
    detail: str
    def __init__(self, t_ms: _Optional[float] = ..., name: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class RunRecord(_message.Message):
    __slots__ = ("run_id", "scenario", "policy", "repeat", "outcome", "error", "verified", "setup_time_ms", "total_time_ms", "downtime_ms", "expected_downtime_ms", "dirty_sync_count", "precopy_bytes", "downtime_bytes", "ram_transferred_bytes", "device_transferred_bytes", "verification_ms", "qemu_version", "return_path", "downtime_end", "guest_downtime_ms", "guest_downtime_uncertainty_ms", "stop_lag_ms", "stop_copy_ms", "device_save_ms", "delivery_ms", "destination_load_ms", "resume_ms", "stream_rtt_at_stop_ms", "predicted_downtime_ms", "switchover_ack_wait_ms", "device_initial_load_ms", "multifd_channels", "multifd_channel_bytes", "multifd_channel_packets", "device_state_transfer", "decision_reason", "forced_by_cap", "clock_offset_ns", "same_clock", "source_guest_running_after", "source_integrity_ok", "source_address", "target_address", "labels", "timeline", "events", "destination_prepare_ms", "ram_stop_copy_ms", "tracker_report_ms", "device_stop_copy", "device_resume_ms", "device_drivers", "time_dilation", "multifd_channel_device_bytes", "decision_basis")
    class DeviceInitialLoadMsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class DeviceDriversEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    SCENARIO_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    REPEAT_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    VERIFIED_FIELD_NUMBER: _ClassVar[int]
    SETUP_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    DOWNTIME_MS_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_DOWNTIME_MS_FIELD_NUMBER: _ClassVar[int]
    DIRTY_SYNC_COUNT_FIELD_NUMBER: _ClassVar[int]
    PRECOPY_BYTES_FIELD_NUMBER: _ClassVar[int]
    DOWNTIME_BYTES_FIELD_NUMBER: _ClassVar[int]
    RAM_TRANSFERRED_BYTES_FIELD_NUMBER: _ClassVar[int]
    DEVICE_TRANSFERRED_BYTES_FIELD_NUMBER: _ClassVar[int]
    VERIFICATION_MS_FIELD_NUMBER: _ClassVar[int]
    QEMU_VERSION_FIELD_NUMBER: _ClassVar[int]
    RETURN_PATH_FIELD_NUMBER: _ClassVar[int]
    DOWNTIME_END_FIELD_NUMBER: _ClassVar[int]
    GUEST_DOWNTIME_MS_FIELD_NUMBER: _ClassVar[int]
    GUEST_DOWNTIME_UNCERTAINTY_MS_FIELD_NUMBER: _ClassVar[int]
    STOP_LAG_MS_FIELD_NUMBER: _ClassVar[int]
    STOP_COPY_MS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_SAVE_MS_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_MS_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_LOAD_MS_FIELD_NUMBER: _ClassVar[int]
    RESUME_MS_FIELD_NUMBER: _ClassVar[int]
    STREAM_RTT_AT_STOP_MS_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_DOWNTIME_MS_FIELD_NUMBER: _ClassVar[int]
    SWITCHOVER_ACK_WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_INITIAL_LOAD_MS_FIELD_NUMBER: _ClassVar[int]
    MULTIFD_CHANNELS_FIELD_NUMBER: _ClassVar[int]
    MULTIFD_CHANNEL_BYTES_FIELD_NUMBER: _ClassVar[int]
    MULTIFD_CHANNEL_PACKETS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_STATE_TRANSFER_FIELD_NUMBER: _ClassVar[int]
    DECISION_REASON_FIELD_NUMBER: _ClassVar[int]
    FORCED_BY_CAP_FIELD_NUMBER: _ClassVar[int]
    CLOCK_OFFSET_NS_FIELD_NUMBER: _ClassVar[int]
    SAME_CLOCK_FIELD_NUMBER: _ClassVar[int]
    SOURCE_GUEST_RUNNING_AFTER_FIELD_NUMBER: _ClassVar[int]
    SOURCE_INTEGRITY_OK_FIELD_NUMBER: _ClassVar[int]
    SOURCE_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    TARGET_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    TIMELINE_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_PREPARE_MS_FIELD_NUMBER: _ClassVar[int]
    RAM_STOP_COPY_MS_FIELD_NUMBER: _ClassVar[int]
    TRACKER_REPORT_MS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_STOP_COPY_FIELD_NUMBER: _ClassVar[int]
    DEVICE_RESUME_MS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_DRIVERS_FIELD_NUMBER: _ClassVar[int]
    TIME_DILATION_FIELD_NUMBER: _ClassVar[int]
    MULTIFD_CHANNEL_DEVICE_BYTES_FIELD_NUMBER: _ClassVar[int]
    DECISION_BASIS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    scenario: str
    policy: str
    repeat: int
    outcome: str
    error: str
    verified: bool
    setup_time_ms: float
    total_time_ms: float
    downtime_ms: float
    expected_downtime_ms: float
    dirty_sync_count: int
    precopy_bytes: int
    downtime_bytes: int
    ram_transferred_bytes: int
    device_transferred_bytes: int
    verification_ms: float
    qemu_version: str
    return_path: bool
    downtime_end: str
    guest_downtime_ms: float
    guest_downtime_uncertainty_ms: float
    stop_lag_ms: float
    stop_copy_ms: float
    device_save_ms: float
    delivery_ms: float
    destination_load_ms: float
    resume_ms: float
    stream_rtt_at_stop_ms: float
    predicted_downtime_ms: float
    switchover_ack_wait_ms: float
    device_initial_load_ms: _containers.ScalarMap[str, float]
    multifd_channels: int
    multifd_channel_bytes: _containers.RepeatedScalarFieldContainer[int]
    multifd_channel_packets: _containers.RepeatedScalarFieldContainer[int]
    device_state_transfer: str
    decision_reason: str
    forced_by_cap: str
    clock_offset_ns: int
    same_clock: bool
    source_guest_running_after: bool
    source_integrity_ok: bool
    source_address: str
    target_address: str
    labels: _containers.ScalarMap[str, str]
    timeline: _containers.RepeatedCompositeFieldContainer[ProgressSample]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    destination_prepare_ms: float
    ram_stop_copy_ms: float
    tracker_report_ms: float
    device_stop_copy: _containers.RepeatedCompositeFieldContainer[DeviceStopCopy]
    device_resume_ms: float
    device_drivers: _containers.ScalarMap[str, str]
    time_dilation: float
    multifd_channel_device_bytes: _containers.RepeatedScalarFieldContainer[int]
    decision_basis: str
    def __init__(self, run_id: _Optional[str] = ..., scenario: _Optional[str] = ..., policy: _Optional[str] = ..., repeat: _Optional[int] = ..., outcome: _Optional[str] = ..., error: _Optional[str] = ..., verified: _Optional[bool] = ..., setup_time_ms: _Optional[float] = ..., total_time_ms: _Optional[float] = ..., downtime_ms: _Optional[float] = ..., expected_downtime_ms: _Optional[float] = ..., dirty_sync_count: _Optional[int] = ..., precopy_bytes: _Optional[int] = ..., downtime_bytes: _Optional[int] = ..., ram_transferred_bytes: _Optional[int] = ..., device_transferred_bytes: _Optional[int] = ..., verification_ms: _Optional[float] = ..., qemu_version: _Optional[str] = ..., return_path: _Optional[bool] = ..., downtime_end: _Optional[str] = ..., guest_downtime_ms: _Optional[float] = ..., guest_downtime_uncertainty_ms: _Optional[float] = ..., stop_lag_ms: _Optional[float] = ..., stop_copy_ms: _Optional[float] = ..., device_save_ms: _Optional[float] = ..., delivery_ms: _Optional[float] = ..., destination_load_ms: _Optional[float] = ..., resume_ms: _Optional[float] = ..., stream_rtt_at_stop_ms: _Optional[float] = ..., predicted_downtime_ms: _Optional[float] = ..., switchover_ack_wait_ms: _Optional[float] = ..., device_initial_load_ms: _Optional[_Mapping[str, float]] = ..., multifd_channels: _Optional[int] = ..., multifd_channel_bytes: _Optional[_Iterable[int]] = ..., multifd_channel_packets: _Optional[_Iterable[int]] = ..., device_state_transfer: _Optional[str] = ..., decision_reason: _Optional[str] = ..., forced_by_cap: _Optional[str] = ..., clock_offset_ns: _Optional[int] = ..., same_clock: _Optional[bool] = ..., source_guest_running_after: _Optional[bool] = ..., source_integrity_ok: _Optional[bool] = ..., source_address: _Optional[str] = ..., target_address: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., timeline: _Optional[_Iterable[_Union[ProgressSample, _Mapping]]] = ..., events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ..., destination_prepare_ms: _Optional[float] = ..., ram_stop_copy_ms: _Optional[float] = ..., tracker_report_ms: _Optional[float] = ..., device_stop_copy: _Optional[_Iterable[_Union[DeviceStopCopy, _Mapping]]] = ..., device_resume_ms: _Optional[float] = ..., device_drivers: _Optional[_Mapping[str, str]] = ..., time_dilation: _Optional[float] = ..., multifd_channel_device_bytes: _Optional[_Iterable[int]] = ..., decision_basis: _Optional[str] = ...) -> None: ...

class DeviceStopCopy(_message.Message):
    __slots__ = ("name", "save_start_ms", "save_ready_ms", "sent_ms", "save_wait_ms")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SAVE_START_MS_FIELD_NUMBER: _ClassVar[int]
    SAVE_READY_MS_FIELD_NUMBER: _ClassVar[int]
    SENT_MS_FIELD_NUMBER: _ClassVar[int]
    SAVE_WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    name: str
    save_start_ms: float
    save_ready_ms: float
    sent_ms: float
    save_wait_ms: float
    def __init__(self, name: _Optional[str] = ..., save_start_ms: _Optional[float] = ..., save_ready_ms: _Optional[float] = ..., sent_ms: _Optional[float] = ..., save_wait_ms: _Optional[float] = ...) -> None: ...

class CancelRequest(_message.Message):
    __slots__ = ("run_id", "reason")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    reason: str
    def __init__(self, run_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class CancelReply(_message.Message):
    __slots__ = ("cancelled", "state")
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    cancelled: bool
    state: str
    def __init__(self, cancelled: _Optional[bool] = ..., state: _Optional[str] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusReply(_message.Message):
    __slots__ = ("role", "protocol_version", "sessions", "boot_id", "migbed_version")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    BOOT_ID_FIELD_NUMBER: _ClassVar[int]
    MIGBED_VERSION_FIELD_NUMBER: _ClassVar[int]
    role: str
    protocol_version: int
    sessions: _containers.RepeatedScalarFieldContainer[str]
    boot_id: str
    migbed_version: str
    def __init__(self, role: _Optional[str] = ..., protocol_version: _Optional[int] = ..., sessions: _Optional[_Iterable[str]] = ..., boot_id: _Optional[str] = ..., migbed_version: _Optional[str] = ...) -> None: ...
