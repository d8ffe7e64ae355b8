"""The shared limits: one table for the scenario validator and the target."""

import pytest

from migbed.core import limits as lim
from migbed.core.scenario import ScenarioError, parse_scenario
from migbed.services.target.validate import validate_setup
from migbed.wire import migration_pb2 as pb
from migbed.wire.errors import ProtocolError


def test_clip_keeps_short_texts_and_marks_cut_ones() -> None:
    assert lim.clip("setup.x: bad") == "setup.x: bad"
    long = "setup.session_id = " + "x" * 20000
    cut = lim.clip(long)
    assert len(cut) == lim.MAX_ERROR_CHARS and cut.startswith("setup.session_id")
    assert cut.endswith("[truncated]")


def test_session_bytes_counts_ram_and_every_device_buffer() -> None:
    assert lim.session_bytes(64 << 20, [4 << 20, 1 << 20]) == 69 << 20


def _scenario(ram: str) -> str:
    return f'name = "x"\n[guest]\nram-size = "{ram}"\n'


def test_the_validator_and_the_target_refuse_the_same_guest_size() -> None:
    too_big = lim.MAX_RAM_BYTES + lim.PAGE_SIZES[0]
    with pytest.raises(ScenarioError, match=r"guest\.ram-size"):
        parse_scenario(_scenario(f"{too_big}B"), "x")
    s = pb.Setup(protocol_version=pb.PROTOCOL_VERSION_1, session_id="s", vcpu_tick_s=1e-3,
                 guest=pb.GuestShape(ram_bytes=too_big, page_size=lim.PAGE_SIZES[0]))
    with pytest.raises(ProtocolError, match=r"setup\.guest\.ram_bytes"):
        validate_setup(s)
    s.guest.ram_bytes = lim.MAX_RAM_BYTES
    validate_setup(s)
    parse_scenario(_scenario(f"{lim.MAX_RAM_BYTES}B"), "x")
