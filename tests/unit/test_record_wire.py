"""The run record crosses Control.Watch as typed protobuf, field for field."""

from __future__ import annotations

import dataclasses

from migbed.measure.record import DeviceSample, DeviceStopCopy, Event, ProgressSample, RunRecord
from migbed.measure.record_wire import (
    record_from_pb,
    record_to_pb,
    sample_from_pb,
    sample_to_pb,
)
from migbed.wire import migration_pb2 as pb


def _filled(cls: type, i: int = 1) -> object:
    """An instance with a distinct, non-default value in every field."""
    kw: dict[str, object] = {}
    for n, f in enumerate(dataclasses.fields(cls), start=i):
        t = str(f.type)
        if f.name == "devices":
            kw[f.name] = [_filled(DeviceSample, n), _filled(DeviceSample, n + 50)]
        elif f.name == "timeline":
            kw[f.name] = [_filled(ProgressSample, n)]
        elif f.name == "events":
            kw[f.name] = [Event(1.5, "stop", "x"), Event(2.5, "completed")]
        elif f.name == "device_stop_copy":
            kw[f.name] = [_filled(DeviceStopCopy, n), _filled(DeviceStopCopy, n + 9)]
        elif t.startswith("dict[str, str]"):
            kw[f.name] = {"a": "b", "c": str(n)}
        elif t.startswith("dict"):
            kw[f.name] = {"vf0": n + 0.25}
        elif t.startswith("list"):
            kw[f.name] = [n, n + 1]
        elif t == "bool":
            kw[f.name] = n % 2 == 0
        elif t == "int":
            kw[f.name] = n * 1000
        elif t == "float":
            kw[f.name] = n + 0.5
        else:
            kw[f.name] = f"{f.name}-{n}"
    return cls(**kw)


def test_record_round_trips_every_field() -> None:
    rec = _filled(RunRecord)
    assert isinstance(rec, RunRecord)
    rec.clock_offset_ns = -123456789  # an offset may be negative
    msg = record_to_pb(rec)
    back = record_from_pb(pb.RunRecord.FromString(msg.SerializeToString()))
    assert back == rec


def test_the_decision_basis_crosses_the_wire_beside_the_reason() -> None:
    rec = RunRecord("r", "s", "time-aware", 0, "completed", decision_reason="predicted downtime 80 ms fits 300 ms",
                    decision_basis="prediction")
    back = record_from_pb(pb.RunRecord.FromString(record_to_pb(rec).SerializeToString()))
    assert (back.decision_reason, back.decision_basis) == (rec.decision_reason, "prediction")
    forced = RunRecord("r", "s", "legacy", 0, "completed", forced_by_cap="max-iterations", decision_basis="cap")
    assert record_from_pb(record_to_pb(forced)).decision_basis == "cap"


def test_a_record_from_before_the_decision_basis_still_loads() -> None:
    old = RunRecord("r", "s", "legacy", 0, "completed", decision_reason="pending 1 B < threshold 2 B").to_dict()
    del old["decision_basis"]  # results.json written before the field existed
    assert RunRecord.from_dict(old).decision_basis == ""


def test_sample_round_trips() -> None:
    s = _filled(ProgressSample)
    assert isinstance(s, ProgressSample)
    assert sample_from_pb(sample_to_pb(s)) == s


def test_every_dataclass_field_is_in_the_proto() -> None:
    for cls, msg in ((RunRecord, pb.RunRecord), (ProgressSample, pb.ProgressSample),
                     (DeviceSample, pb.DeviceSample), (Event, pb.Event),
                     (DeviceStopCopy, pb.DeviceStopCopy)):
        names = {f.name for f in dataclasses.fields(cls)}
        assert names == set(msg.DESCRIPTOR.fields_by_name), cls.__name__
