"""The fields of a Control.Start request, checked with the same bounded parsers as the CLI.

The source service calls parse_start() and turns a StartInputError into INVALID_ARGUMENT: the
field comes first in the text, values are clipped (a gRPC status must fit 16 KiB of metadata).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from migbed.core.address import AddressError, parse_address
from migbed.core.bounded import InputError, clip, parse_labels_json
from migbed.core.policy import policy_names
from migbed.core.scenario import Scenario, ScenarioError, parse_scenario

MAX_STATUS_TEXT = 2000  # characters of an error sent back in a gRPC status
_RUN_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class StartInputError(ValueError):
    """A Start field that is not allowed; str() starts with the field's name."""


@dataclass(frozen=True)
class StartInput:
    scenario: Scenario
    policy: str
    target_address: str  # canonical HOST:PORT
    run_id: str
    labels: dict[str, str]


def status_text(text: str) -> str:
    """An error text short enough for a gRPC status (its metadata is limited to 16 KiB)."""
    return clip(text, MAX_STATUS_TEXT)


def check_run_id(run_id: str) -> str:
    if not _RUN_ID.match(run_id):
        raise StartInputError(f"run_id = {clip(repr(run_id), 80)}: 1 to 128 of letters, digits and . _ : -")
    return run_id


def check_policy(policy: str) -> str:
    if policy not in policy_names():
        raise StartInputError(f"policy = {clip(repr(policy), 80)}: allowed {', '.join(policy_names())}")
    return policy


def check_target_address(address: str) -> str:
    try:
        return parse_address(address, "target_address")
    except AddressError as e:
        raise StartInputError(str(e)) from None


def parse_start(scenario_toml: str, policy: str, target_address: str, run_id: str,
                labels_json: str) -> StartInput:
    """Every field of a Start, cheapest checks first; raises StartInputError."""
    check_run_id(run_id)
    check_policy(policy)
    target = check_target_address(target_address)
    try:
        labels = parse_labels_json(labels_json)
    except InputError as e:
        raise StartInputError(str(e)) from None
    try:
        scenario = parse_scenario(scenario_toml)
    except ScenarioError as e:
        raise StartInputError(f"scenario: {e}") from None
    return StartInput(scenario, policy, target, run_id, labels)
