"""The destination's load model: which write pays what (image-complete vs per-chunk)."""

import pytest

from migbed.core.loadmodel import DeviceLoadModel, Load, LoadCosts

MB = 1_000_000


def costs(**over: object) -> LoadCosts:
    base: dict[str, object] = dict(setup_time=1.5, load_rate=1e9, stop_copy_load_time=0.2,
                                   config_load_time=0.05, initial_bytes=4 * MB)
    base.update(over)
    return LoadCosts(**base)  # type: ignore[arg-type]


def seconds(loads: list[Load]) -> float:
    return sum(ld.seconds for ld in loads)


def test_image_complete_buffers_until_the_initial_image_is_whole() -> None:
    m = DeviceLoadModel(costs())
    for _ in range(3):
        assert m.write("initial", MB) == []  # buffered: the write returns at once
    loads = m.write("initial", MB)  # the last byte of the image: setup + every byte
    assert [ld.nbytes for ld in loads] == [4 * MB]
    assert seconds(loads) == pytest.approx(1.5 + 4 * MB / 1e9)
    assert not m.has_pending


def test_per_chunk_pays_every_write_and_the_setup_on_the_first() -> None:
    m = DeviceLoadModel(costs(trigger="per-chunk"))
    first = m.write("initial", MB)
    assert seconds(first) == pytest.approx(1.5 + MB / 1e9)
    assert seconds(m.write("initial", MB)) == pytest.approx(MB / 1e9)
    assert seconds(m.write("final", MB)) == pytest.approx(0.2 + MB / 1e9)  # stop-copy once
    assert seconds(m.write("final", MB)) == pytest.approx(MB / 1e9)
    assert seconds(m.finish()) == pytest.approx(0.05)  # config state, once, at the end


def test_same_bytes_same_total_either_trigger_but_not_the_same_moments() -> None:
    totals = {}
    for trigger in ("image-complete", "per-chunk"):
        m = DeviceLoadModel(costs(trigger=trigger))
        per_write = [seconds(m.write("initial", MB)) for _ in range(4)]
        per_write += [seconds(m.write("middle", MB)), seconds(m.end_image())]
        per_write += [seconds(m.write("final", MB)) for _ in range(2)] + [seconds(m.finish())]
        totals[trigger] = (sum(per_write), per_write)
    assert totals["image-complete"][0] == pytest.approx(totals["per-chunk"][0])
    # image-complete: the first three writes return at once, the fourth carries it all
    assert totals["image-complete"][1][:3] == [0, 0, 0]
    assert totals["image-complete"][1][3] == pytest.approx(1.5 + 4 * MB / 1e9)
    assert min(totals["per-chunk"][1][:4]) > 0


def test_a_new_kind_ends_the_buffered_image_first() -> None:
    m = DeviceLoadModel(costs(initial_bytes=0))
    m.write("middle", MB)
    m.write("middle", MB)
    loads = m.write("final", MB)  # the middle image loads before the final chunk is taken
    assert [(ld.kind, ld.nbytes) for ld in loads] == [("middle", 2 * MB)]
    end = m.finish()
    assert [(ld.kind, ld.nbytes) for ld in end] == [("final", MB), ("config", 0)]
    assert seconds(end) == pytest.approx(0.2 + MB / 1e9 + 0.05)


def test_setup_is_paid_even_when_the_first_image_comes_in_stop_copy() -> None:
    # A source that switched before sending any initial byte sends it all as final data:
    # the device is still set up, now inside the downtime.
    m = DeviceLoadModel(costs())
    m.write("final", 1000 * MB)
    assert seconds(m.finish()) == pytest.approx(1.5 + 0.2 + 1.0 + 0.05)


def test_config_chunks_cost_the_config_time_once_whatever_their_size() -> None:
    m = DeviceLoadModel(costs(trigger="per-chunk"))
    assert m.write("config", 3 * MB) == []  # loaded as a whole, by QEMU, not per chunk
    loads = m.end_image()
    assert [(ld.kind, ld.seconds) for ld in loads] == [("config", 0.05)]
    assert m.finish() == []  # not twice


def test_a_device_without_costs_loads_in_no_time() -> None:
    m = DeviceLoadModel(LoadCosts(load_rate=1e12, initial_bytes=MB))
    assert seconds(m.write("initial", MB)) == pytest.approx(1e-6)
    assert m.finish() == []


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="load_rate"):
        LoadCosts(load_rate=0)
    with pytest.raises(ValueError, match="trigger"):
        LoadCosts(trigger="sometimes")
    with pytest.raises(ValueError, match="kind"):
        DeviceLoadModel(LoadCosts()).write("bogus", 1)
