"""The destination device's state space: buffer | context | config, and its digest."""

import numpy as np
import pytest

from migbed.core.device import DeviceError, TargetDevice, VfioState, device_digest


def resuming(initial: int, stop: int, config: int = 0) -> TargetDevice:
    d = TargetDevice("vf0", initial, stop, config)
    d.fsm.set_state(VfioState.RESUMING)
    return d


def test_a_chunk_across_every_region_lands_in_each() -> None:
    d = resuming(10, 5, 3)
    d.write(8, bytes(range(1, 8)))  # 2 of buffer, 5 of context... then 0 of config
    assert d.buffer[8:].tolist() == [1, 2] and d.context.tolist() == [3, 4, 5, 6, 7]
    d.write(14, b"\x09\x0a\x0b\x0c")  # the context's last byte, then all of config
    assert d.context[-1] == 9 and d.config.tolist() == [10, 11, 12]
    assert d.written_bytes == 11
    with pytest.raises(DeviceError, match="outside"):
        d.write(17, b"\0\0")


def test_the_digest_without_config_is_the_one_before_config_existed() -> None:
    d = resuming(4, 4)
    d.write(0, b"abcdefgh")
    assert d.digest() == device_digest(np.frombuffer(b"abcd", np.uint8), b"efgh")
    c = resuming(4, 4, 2)
    c.write(0, b"abcdefghij")
    assert c.digest() == device_digest(np.frombuffer(b"abcd", np.uint8), b"efgh", b"ij")
    assert c.digest() != d.digest()
