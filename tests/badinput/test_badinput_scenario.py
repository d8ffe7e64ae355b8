"""Bad scenario files: every field, wrong in every way that matters, is refused before
anything starts, with a message that names the field (and, through the CLI and the source's
Control.Start, the same message)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from faultlab import Lab, control_stub, scenario_toml, stop_cleanly

from migbed.core.scenario import ScenarioError, parse_scenario
from migbed.wire import migration_pb2 as pb

# Every field with a valid value: each case below replaces one of them.
FIELDS: dict[str, dict[str, str]] = {
    "guest": {"ram-size": '"16MiB"', "page-size": '"4KiB"', "dirty-rate": '"4MiB/s"',
              "working-set": '"4MiB"', "dirty-pattern": '"uniform"', "vcpu-tick": '"1ms"',
              "seed": "1"},
    "device": {"name": '"vf0"', "initial-bytes": '"4MB"', "stop-copy-size": '"1MB"',
               "dirty-rate": '"1MiB/s"', "block-size": '"64KiB"', "load-setup-time": '"200ms"',
               "load-rate": '"1GB/s"', "stop-copy-load-time": '"10ms"', "driver": '"generic"',
               "resume-time": '"5ms"', "suspend-time": '"5ms"',
               "tracker-report-rate": '"64GiB/s"'},
    "migration": {"downtime-limit": '"300ms"', "max-bandwidth": '"128MiB/s"',
                  "avail-switchover-bandwidth": '"64MiB/s"', "max-iterations": "10",
                  "max-time": '"30s"', "cap-action": '"switchover"',
                  "switchover-ack-timeout": '"1s"', "ack-timeout-action": '"cancel"',
                  "warmup": '"100ms"', "heartbeat-timeout": '"3s"'},
    "link": {"rate": '"1Gbit"', "burst": '"1MB"', "latency": '"50ms"'},
}


def build(section: str = "", key: str = "", value: str | None = None,
          name: str = '"bad-input"') -> str:
    out = [f"name = {name}"]
    for sec, kv in FIELDS.items():
        out.append("[[device]]" if sec == "device" else f"[{sec}]")
        for k, v in kv.items():
            if sec == section and k == key:
                if value is None:
                    continue
                v = value
            out.append(f"{k} = {v}")
    return "\n".join(out) + "\n"


def where(section: str, key: str) -> str:
    return f"{'device[0]' if section == 'device' else section}.{key}"


# Values wrong for a field of each kind (a size, a rate, a duration, an integer, a choice).
WRONG_TYPE = ["true", "[1]", "{ a = 1 }"]
BAD: dict[str, list[str]] = {
    "guest.ram-size": ['"-1MiB"', "-5", '"16 parsecs"', '"512KiB"', '"65GiB"', '"1000001B"',
                       "1.5", '""'],
    "guest.page-size": ['"8KiB"', '"1MiB"', "0"],
    "guest.dirty-rate": ['"4MiB"', '"4MiB/min"', '"65GiB/s"', "7"],
    "guest.working-set": ['"32MiB"', '"1KiB"', '"lots"'],
    "guest.dirty-pattern": ['"random"', '""', "1"],
    "guest.vcpu-tick": ['"10ms"', '"10us"', '"1"', "0.001", '"nan s"'],
    "guest.seed": ["-1", '"1"', "1.0"],
    "device.name": ['""', '"a b"', '"' + "v" * 33 + '"', "7", '"vf/0"'],
    "device.initial-bytes": ['"17GiB"', '"-1"', '"1KiB"'],
    "device.stop-copy-size": ['"17GiB"', '"x"'],
    "device.dirty-rate": ['"65GiB/s"', '"1MiB"'],
    "device.block-size": ['"3KiB"', '"2KiB"', '"2MiB"', "0"],
    "device.load-setup-time": ['"601s"', '"-1s"', '"1 fortnight"', "5"],
    "device.load-rate": ['"1KiB/s"', '"2000GiB/s"', '"0B/s"'],
    "device.stop-copy-load-time": ['"601s"', '"1h"'],
    "device.driver": ['"bogus"', '""', '"MLX5"', "1"],
    "device.resume-time": ['"601s"', '"-1ms"', '"quick"'],
    "device.suspend-time": ['"601s"', '"-1ms"'],
    "device.tracker-report-rate": ['"1KiB/s"', '"2PiB/s"', '"64GiB"'],
    "migration.downtime-limit": ['"0ms"', '"2001s"', '"soon"'],
    "migration.max-bandwidth": ['"512KiB/s"', '"101GiB/s"', '"1Gbit"'],
    "migration.avail-switchover-bandwidth": ['"101GiB/s"', '"fast"'],
    "migration.max-iterations": ["-1", "100001", '"10"'],
    "migration.max-time": ['"25h"', '"-1s"'],
    "migration.cap-action": ['"pause"', '""'],
    "migration.switchover-ack-timeout": ['"2h"', '"never"'],
    "migration.ack-timeout-action": ['"wait"', '"legacy "'],
    "migration.warmup": ['"61s"', '"-1s"'],
    "migration.heartbeat-timeout": ['"100ms"', '"61s"', '"0s"'],
    "link.rate": ['"100kbit"', '"401Gbit"', '"1GiB/s"', '"fast"'],
    "link.burst": ['"2GiB"', '"100B"', '"huge"'],
    "link.latency": ['"0ms"', '"11s"'],
}
CASES = [(f, v) for f, vals in BAD.items() for v in [*vals, *WRONG_TYPE]]


def test_every_field_has_bad_cases() -> None:
    """Whoever adds a field to FIELDS (and so to the parser) adds its bad values too."""
    assert {f"{s}.{k}" for s, kv in FIELDS.items() for k in kv} == set(BAD)
    parse_scenario(build())  # the baseline is valid


@pytest.mark.parametrize(("field", "value"), CASES, ids=[f"{f}={v}" for f, v in CASES])
def test_bad_value_names_the_field(field: str, value: str) -> None:
    section, key = field.split(".")
    with pytest.raises(ScenarioError) as e:
        parse_scenario(build(section, key, value))
    assert where(section, key) in str(e.value), str(e.value)


@pytest.mark.parametrize(("section", "key"), [("guest", "ram-size"), ("device", "name"),
                                              ("device", "initial-bytes")])
def test_missing_required_field(section: str, key: str) -> None:
    with pytest.raises(ScenarioError, match=re.escape(f"{where(section, key)} is required")):
        parse_scenario(build(section, key, None))


@pytest.mark.parametrize(("text", "expect"), [
    ("name = 'x'\n[guest\n", "not valid TOML"),
    ("name = 'x'\n", "guest is required"),
    ("guest = 5\n", "guest: expected a table"),
    (build() + "[extra]\nfoo = 1\n", "unknown key(s) extra"),
    (build().replace("[guest]", "[guest]\nram = 5"), "guest: unknown key(s) ram"),
    (build().replace("[link]", "[link]\ndelay = '10ms'"), "link.delay"),
    (build().replace("[link]", "[link]\nloss = '1%'"), "link.loss"),
    (build().replace("[[device]]", "device = 5\n[x]"), "device"),
    (build() + "[[device]]\nname = 'vf0'\ninitial-bytes = '4MB'\n", "must be unique"),
    (build().replace('initial-bytes = "4MB"', 'initial-bytes = "0B"')
     .replace('stop-copy-size = "1MB"', 'stop-copy-size = "0B"'), "device[0]: initial-bytes"),
    (build().replace('initial-bytes = "4MB"', 'initial-bytes = "0B"'), "device[0].dirty-rate"),
    (build().replace('"16MiB"', '"16388KiB"').replace('"4KiB"', '"64KiB"'),
     "not a multiple of page-size"),
    ("name = 'x'\n[guest]\nram-size = '16MiB'\n"
     + "".join(f"[[device]]\nname = 'd{i}'\ninitial-bytes = '1MiB'\n" for i in range(17)),
     "at most 16"),
])
def test_structure_and_cross_field_checks(text: str, expect: str) -> None:
    with pytest.raises(ScenarioError) as e:
        parse_scenario(text)
    assert expect in str(e.value), str(e.value)


@pytest.mark.parametrize("name", ['"a b"', '"a/b"', '"' + "n" * 65 + '"', '"-x"', '"a\\nb"',
                                  '""', "5"])
def test_bad_scenario_name(name: str) -> None:
    with pytest.raises(ScenarioError, match=r"scenario\.name"):
        parse_scenario(build(name=name))


def test_cli_refuses_a_bad_file(tmp_path: Path) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(build("migration", "max-bandwidth", '"1Gbit"'))
    out = subprocess.run([sys.executable, "-m", "migbed.cli.main", "scenarios", str(f)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "migration.max-bandwidth" in out.stderr and "Traceback" not in out.stderr


def test_cli_set_refuses_a_bogus_driver(tmp_path: Path) -> None:
    f = tmp_path / "ok.toml"
    f.write_text(build())
    out = subprocess.run([sys.executable, "-m", "migbed.cli.main", "scenarios", str(f),
                          "--set", "device.vf0.driver=bogus"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "device[0].driver = 'bogus'" in out.stderr and "mlx5" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_source_control_refuses_a_bad_scenario(lab: Lab) -> None:
    """Control.Start validates the scenario again: INVALID_ARGUMENT naming the field."""
    source = lab.start("source")
    ch, stub = control_stub(source.address)
    with ch:
        for section, key, value in [("guest", "ram-size", '"1KiB"'),
                                    ("device", "block-size", '"3KiB"'),
                                    ("device", "driver", '"bogus"'),
                                    ("migration", "cap-action", '"pause"')]:
            with pytest.raises(grpc.RpcError) as e:
                stub.Start(pb.StartRequest(scenario_toml=build(section, key, value),
                                           policy="legacy", target_address="127.0.0.1:1",
                                           run_id="r1"), timeout=10)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert e.value.details().startswith("scenario: ")
            assert where(section, key) in e.value.details(), e.value.details()
        assert list(stub.Status(pb.StatusRequest(), timeout=5).sessions) == []
    assert scenario_toml("x")  # the helper's own scenarios are valid ones
    stop_cleanly(source)
