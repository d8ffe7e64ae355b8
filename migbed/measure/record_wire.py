"""The run record on the wire: RunRecord, ProgressSample, DeviceSample and Event <-> protobuf.

Control.Watch carries them as typed messages (proto/migbed/v1/migration.proto). The
messages have the dataclasses' field names, so one generic conversion serves all four; a
dataclass field without a proto field is an error here (and in tests/unit), never a
silently dropped figure.
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from typing import Any, TypeVar

from google.protobuf.message import Message

from migbed.measure.record import DeviceSample, DeviceStopCopy, Event, ProgressSample, RunRecord
from migbed.wire import migration_pb2 as pb

T = TypeVar("T")
# The element types of the repeated message fields.
_NESTED: dict[str, type] = {"devices": DeviceSample, "timeline": ProgressSample,
                            "events": Event, "device_stop_copy": DeviceStopCopy}


def to_pb(obj: Any, message: Message) -> Message:
    """Fill `message` from the dataclass `obj` (same field names); returns it."""
    known = set(message.DESCRIPTOR.fields_by_name)
    for f in fields(obj):
        if f.name not in known:
            raise KeyError(f"{type(message).__name__} has no field {f.name!r} "
                           f"(add it to proto/migbed/v1/migration.proto)")
        value = getattr(obj, f.name)
        target = getattr(message, f.name)
        if isinstance(value, dict):
            target.update(value)
        elif isinstance(value, list):
            for v in value:
                if is_dataclass(v):
                    to_pb(v, target.add())
                else:
                    target.append(v)
        else:
            setattr(message, f.name, value)
    return message


def from_pb(message: Message, cls: type[T]) -> T:
    """The dataclass `cls` from a message filled by to_pb."""
    kwargs: dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        value = getattr(message, f.name)
        if f.name in _NESTED:
            kwargs[f.name] = [from_pb(v, _NESTED[f.name]) for v in value]
        elif str(f.type).startswith("list"):
            kwargs[f.name] = list(value)
        elif str(f.type).startswith("dict"):
            kwargs[f.name] = dict(value)
        else:
            kwargs[f.name] = value
    return cls(**kwargs)


def record_to_pb(record: RunRecord) -> pb.RunRecord:
    msg = to_pb(record, pb.RunRecord())
    assert isinstance(msg, pb.RunRecord)
    return msg


def record_from_pb(message: pb.RunRecord) -> RunRecord:
    return from_pb(message, RunRecord)


def sample_to_pb(sample: ProgressSample) -> pb.ProgressSample:
    msg = to_pb(sample, pb.ProgressSample())
    assert isinstance(msg, pb.ProgressSample)
    return msg


def sample_from_pb(message: pb.ProgressSample) -> ProgressSample:
    return from_pb(message, ProgressSample)
