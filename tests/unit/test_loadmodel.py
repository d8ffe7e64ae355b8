"""The destination's load model: which write pays what (image-complete vs per-chunk), and
where an image ends (at the length its chunks carry)."""

import re

import pytest

from migbed.core.loadmodel import DeviceLoadModel, ImageError, Load, LoadCosts

MB = 1_000_000


def costs(**over: object) -> LoadCosts:
    base: dict[str, object] = dict(setup_time=1.5, load_rate=1e9, stop_copy_load_time=0.2,
                                   config_load_time=0.05)
    base.update(over)
    return LoadCosts(**base)  # type: ignore[arg-type]


def seconds(loads: list[Load]) -> float:
    return sum(ld.seconds for ld in loads)


def test_image_complete_buffers_until_the_initial_image_is_whole() -> None:
    m = DeviceLoadModel(costs())
    for _ in range(3):
        assert m.write("initial", MB, 4 * MB) == []  # buffered: the write returns at once
    loads = m.write("initial", MB, 4 * MB)  # the last byte of the image: setup + every byte
    assert [ld.nbytes for ld in loads] == [4 * MB]
    assert seconds(loads) == pytest.approx(1.5 + 4 * MB / 1e9)
    assert m.open_image() == ""


def test_a_middle_image_loads_once_in_the_write_that_completes_it() -> None:
    """Nothing between its chunks ends it (the model sees only this device's writes: RAM,
    pings and other devices in between leave it open); its last chunk loads all of it."""
    m = DeviceLoadModel(costs())
    m.write("initial", MB, MB)
    per_write = [m.write("middle", n, 5 * MB) for n in (MB, 2 * MB, MB)]
    assert per_write == [[], [], []]
    assert m.open_image() == "MIDDLE image (4000000 of 5000000 bytes written)"
    last = m.write("middle", MB, 5 * MB)
    assert [(ld.kind, ld.nbytes) for ld in last] == [("middle", 5 * MB)]
    assert seconds(last) == pytest.approx(5 * MB / 1e9)  # the setup went with the initial
    assert m.open_image() == ""
    # the next image starts afresh, with its own length
    assert m.write("middle", MB, MB)[0].nbytes == MB


def test_per_chunk_pays_every_write_and_the_setup_on_the_first() -> None:
    m = DeviceLoadModel(costs(trigger="per-chunk"))
    first = m.write("initial", MB, 2 * MB)
    assert seconds(first) == pytest.approx(1.5 + MB / 1e9)
    assert seconds(m.write("initial", MB, 2 * MB)) == pytest.approx(MB / 1e9)
    assert seconds(m.write("final", MB, 2 * MB)) == pytest.approx(0.2 + MB / 1e9)  # once
    assert seconds(m.write("final", MB, 2 * MB)) == pytest.approx(MB / 1e9)
    assert seconds(m.finish()) == pytest.approx(0.05)  # config state, once, at the end


def test_same_bytes_same_total_either_trigger_but_not_the_same_moments() -> None:
    totals = {}
    for trigger in ("image-complete", "per-chunk"):
        m = DeviceLoadModel(costs(trigger=trigger))
        per_write = [seconds(m.write("initial", MB, 4 * MB)) for _ in range(4)]
        per_write += [seconds(m.write("middle", MB, 2 * MB)) for _ in range(2)]
        per_write += [seconds(m.write("final", MB, 2 * MB)) for _ in range(2)]
        per_write += [seconds(m.finish())]
        totals[trigger] = (sum(per_write), per_write)
    assert totals["image-complete"][0] == pytest.approx(totals["per-chunk"][0])
    # image-complete: the first three writes return at once, the fourth carries it all
    assert totals["image-complete"][1][:3] == [0, 0, 0]
    assert totals["image-complete"][1][3] == pytest.approx(1.5 + 4 * MB / 1e9)
    assert totals["image-complete"][1][4] == 0  # the middle image's first half
    assert min(totals["per-chunk"][1][:4]) > 0


def test_setup_is_paid_even_when_the_first_image_comes_in_stop_copy() -> None:
    # A source that switched before sending any initial byte: the device is still set up,
    # now inside the downtime, with the first image that completes.
    m = DeviceLoadModel(costs())
    assert seconds(m.write("final", 1000 * MB, 1000 * MB)) == pytest.approx(1.5 + 0.2 + 1.0)
    assert seconds(m.finish()) == pytest.approx(0.05)


@pytest.mark.parametrize("trigger", ["image-complete", "per-chunk"])
def test_config_chunks_cost_the_config_time_once_whatever_their_size(trigger: str) -> None:
    m = DeviceLoadModel(costs(trigger=trigger))
    assert m.write("config", 2 * MB, 3 * MB) == []  # loaded as a whole, by QEMU
    loads = m.write("config", MB, 3 * MB)  # its last chunk
    assert [(ld.kind, ld.seconds) for ld in loads] == [("config", 0.05)]
    assert m.finish() == []  # not twice
    assert seconds(m.write("config", MB, MB)) == 0  # nor for a second config image


def test_a_device_without_costs_loads_in_no_time() -> None:
    m = DeviceLoadModel(LoadCosts(load_rate=1e12))
    assert seconds(m.write("initial", MB, MB)) == pytest.approx(1e-6)
    assert m.finish() == []


@pytest.mark.parametrize("writes,field,words", [
    ([("middle", 1, 0)], "image_bytes", "= 0"),
    ([("middle", 5, 4)], "data", "more than the image's image_bytes = 4"),
    ([("middle", 2, 4), ("final", 2, 4)], "kind", "= FINAL while the device's MIDDLE image "
                                                  "(2 of 4 bytes written) is open"),
    ([("middle", 2, 4), ("middle", 2, 5)], "image_bytes", "= 5: the MIDDLE image"),
    ([("middle", 2, 4), ("middle", 3, 4)], "data", "3 bytes beyond the end of the MIDDLE"),
])
def test_a_chunk_that_does_not_fit_its_image_is_refused(
        writes: list[tuple[str, int, int]], field: str, words: str) -> None:
    m = DeviceLoadModel(costs())
    *good, (kind, n, length) = writes
    for w in good:
        m.write(*w)
    with pytest.raises(ImageError, match=re.escape(words)) as e:
        m.write(kind, n, length)
    assert e.value.field == field and str(e.value).startswith(field)
    assert m.image is None or m.image.written == sum(w[1] for w in good)  # nothing taken


def test_the_stream_cannot_end_inside_an_image() -> None:
    m = DeviceLoadModel(costs())
    m.write("final", MB, 2 * MB)
    with pytest.raises(ValueError, match="inside the FINAL image"):
        m.finish()


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="load_rate"):
        LoadCosts(load_rate=0)
    with pytest.raises(ValueError, match="trigger"):
        LoadCosts(trigger="sometimes")
    with pytest.raises(ValueError, match="kind"):
        DeviceLoadModel(LoadCosts()).write("bogus", 1, 1)
