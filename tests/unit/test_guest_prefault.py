"""prefault() makes the target's RAM resident without changing its contents."""

from migbed.core.guest import GuestMemory


def _rss() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_prefault_makes_ram_resident_and_keeps_it_zero() -> None:
    size = 64 << 20
    m = GuestMemory(size, 4096, seed=1, fill=False)
    before = _rss()
    m.prefault(chunk_bytes=8 << 20)
    assert _rss() - before >= size * 0.9
    assert not m.ram.any()
