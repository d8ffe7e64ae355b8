"""The committed stubs are what proto/ generates: one .proto is the truth of the wire."""

from pathlib import Path

from migbed.wire.generate import generate

HERE = Path(__file__).resolve().parents[2] / "migbed" / "wire"


def test_committed_stubs_are_current(tmp_path: Path) -> None:
    for fresh in generate(tmp_path):
        committed = HERE / fresh.name
        assert committed.read_text() == fresh.read_text(), (
            f"{committed} is stale: run python -m migbed.wire.generate"
        )
