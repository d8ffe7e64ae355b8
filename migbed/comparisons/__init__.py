"""Named comparisons (comparisons.toml beside this file): a base scenario, the policies, the
repeats and `--set` overrides, under one name that `migbed run --comparison NAME` and bench/ use.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from migbed.core.bounded import InputError, clip, loads_toml
from migbed.core.overrides import OverrideError, dump_toml, split_override
from migbed.core.policy import policy_names
from migbed.core.scenario import Scenario, ScenarioError, resolve_scenario

MAX_REPEAT = 100
DEFAULT_COMPARISON = "default"


@dataclass(frozen=True)
class Comparison:
    name: str
    description: str
    scenario: str  # a built-in scenario name (or a file)
    policies: tuple[str, ...]
    repeat: int
    overrides: tuple[str, ...]  # KEY=VALUE, as --set

    def resolve(self, more: Sequence[str] = ()) -> Scenario:
        """The scenario with this comparison's overrides, then `more` (later ones win)."""
        return resolve_scenario(self.scenario, (*self.overrides, *more))


def _override_text(key: str, value: Any) -> str:
    text = f"{key}={dump_toml({'v': value})[4:].strip()}"
    try:
        split_override(text)
    except OverrideError as e:
        raise ScenarioError(f"comparisons.toml: {e}") from None
    return text


def _comparison(name: str, t: Any) -> Comparison:
    where = f"comparisons.toml [{name}]"
    if not isinstance(t, dict):
        raise ScenarioError(f"{where}: expected a table")
    unknown = set(t) - {"description", "scenario", "policies", "repeat", "set"}
    if unknown:
        raise ScenarioError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    policies = t.get("policies", [])
    bad = [p for p in policies if p not in policy_names()]
    if not policies or bad:
        raise ScenarioError(f"{where}.policies = {clip(repr(policies), 80)}: a list of {', '.join(policy_names())}")
    repeat = t.get("repeat", 3)
    if isinstance(repeat, bool) or not isinstance(repeat, int) or not 1 <= repeat <= MAX_REPEAT:
        raise ScenarioError(f"{where}.repeat = {clip(repr(repeat), 40)}: an integer 1..{MAX_REPEAT}")
    overrides = tuple(_override_text(k, v) for k, v in dict(t.get("set", {})).items())
    return Comparison(name, str(t.get("description", "")), str(t["scenario"]), tuple(policies),
                      repeat, overrides)


@functools.cache
def comparisons() -> dict[str, Comparison]:
    """Every named comparison, in file order."""
    text = resources.files(__name__).joinpath("comparisons.toml").read_text(encoding="utf-8")
    try:
        data = loads_toml(text, "comparisons.toml")
    except InputError as e:
        raise ScenarioError(str(e)) from None
    return {name: _comparison(name, t) for name, t in data.items()}


def comparison(name: str) -> Comparison:
    table = comparisons()
    if name not in table:
        raise ScenarioError(f"comparison {clip(repr(name), 80)}: no such comparison "
                            f"(have: {', '.join(table)})")
    return table[name]
