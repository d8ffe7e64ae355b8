"""docs/cli.md's CLI reference is what the parsers print (python -m migbed.cli.reference --write)."""

from __future__ import annotations

from pathlib import Path

from migbed.cli.reference import BEGIN, END, PAGE, reference

ROOT = Path(__file__).resolve().parents[2]


def test_cli_reference_is_current() -> None:
    assert PAGE == ROOT / "docs" / "cli.md"
    text = PAGE.read_text(encoding="utf-8")
    assert BEGIN in text and END in text, "docs/cli.md lost its CLI reference markers"
    block = text[text.index(BEGIN): text.index(END) + len(END)] + "\n"
    assert block == reference(), (
        "docs/cli.md's CLI reference is stale: run `python -m migbed.cli.reference --write`")


def test_reference_covers_every_subcommand() -> None:
    from migbed.cli.main import _EXTENSIONS

    ref = reference()
    for command in ["run", "serve", "status", "health", "cancel", "scenarios", *_EXTENSIONS]:
        assert f"### `migbed {command}`" in ref
        assert "(unavailable here" not in ref, "an extension could not be imported"
