"""The references in docs/ are what the code has: every field of the run record in
docs/results.md, every scenario key the validator accepts in docs/scenarios.md (and no other)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from migbed.core.scenario import ScenarioError, parse_scenario
from migbed.measure.record import RunRecord

DOCS = Path(__file__).resolve().parents[2] / "docs"
SECTIONS = ("guest", "device", "migration", "link")


def first_column_names(page: Path, pattern: str) -> set[str]:
    """The backticked names in the first column of the page's tables."""
    names: set[str] = set()
    for line in page.read_text().splitlines():
        if line.startswith("| `"):
            names |= set(re.findall(pattern, line.split("|")[1]))
    return names


def test_every_record_field_is_documented() -> None:
    documented = first_column_names(DOCS / "results.md", r"`([a-z_]+)`")
    fields = {f.name for f in dataclasses.fields(RunRecord)}
    assert fields - documented == set(), f"add to docs/results.md: {sorted(fields - documented)}"
    assert documented - fields == set(), f"not fields of RunRecord: {sorted(documented - fields)}"


def allowed_keys(section: str) -> set[str]:
    """The keys the validator accepts in a section, from its own refusal of an unknown one."""
    tables = {
        "": 'name = "x"\nbogus-key = 1\n[guest]\nram-size = "16MiB"\n',
        "guest": '[guest]\nram-size = "16MiB"\nbogus-key = 1\n',
        "device": '[guest]\nram-size = "16MiB"\n[[device]]\nname = "a"\ninitial-bytes = "1MiB"\nbogus-key = 1\n',
        "migration": '[guest]\nram-size = "16MiB"\n[migration]\nbogus-key = 1\n',
        "link": '[guest]\nram-size = "16MiB"\n[link]\nbogus-key = 1\n',
    }
    with pytest.raises(ScenarioError) as e:
        parse_scenario(tables[section])
    m = re.search(r"unknown key\(s\) bogus-key \(allowed: ([^)]*)\)", str(e.value))
    assert m, str(e.value)
    keys = {k.strip() for k in m.group(1).split(",")}
    return keys - set(SECTIONS) if not section else {f"{section}.{k}" for k in keys}


def test_every_scenario_key_is_documented() -> None:
    documented = first_column_names(DOCS / "scenarios.md", r"`([a-z-]+(?:\.[a-z-]+)?)`")
    accepted = set().union(*(allowed_keys(s) for s in ("", *SECTIONS)))
    assert accepted - documented == set(), f"add to docs/scenarios.md's table: {sorted(accepted - documented)}"
    assert documented - accepted == set(), f"the validator refuses: {sorted(documented - accepted)}"


ROOT = DOCS.parent


def test_readme_is_short_and_maps_every_document() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250, "README.md: at most 250 lines (the rest goes to docs/)"
    missing = [p.name for p in sorted(DOCS.glob("*.md")) if f"(docs/{p.name})" not in readme]
    assert not missing, f"README.md's map of docs/ lacks {missing}"


def test_every_image_is_shown_somewhere() -> None:
    pages = [ROOT / "README.md", *DOCS.glob("*.md")]
    text = "\n".join(p.read_text() for p in pages)
    orphans = [p.name for p in sorted((DOCS / "img").glob("*")) if f"img/{p.name}" not in text]
    assert not orphans, f"docs/img/ holds images no page shows (regenerate or remove): {orphans}"
