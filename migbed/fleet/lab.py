"""Evacuations across lab hosts: where the runner reaches each host (which guest starts where:
planner.spread_guests).

`migbed deploy --evacuate` installs the services on every host of the inventory, then runs the
evacuation from the control machine with the same runner as the local `migbed evacuate`: it
dials each source host's Control API at the address SSH uses (``ansible_host``), tells the
sources to migrate to each target at its lab address (``migbed_lab_address``, else
``ansible_host``), and probes a target it suspects lost at the address SSH uses.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from migbed.core.policy import DEFAULT_POLICIES
from migbed.fleet.evacuation import Endpoints
from migbed.fleet.planner import EvacuationPlan, FleetGuest, Limits, PlanError, spread_guests
from migbed.fleet.run import finish, run_policies
from migbed.wire.tls import ENV_TLS_DIR


def _plain(host: str, hostvars: Mapping[str, Any], name: str) -> str | None:
    """A variable the inventory sets to a plain value; a template cannot be resolved here."""
    value = hostvars.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or "{" in value:
        raise PlanError(f"inventory host {host!r}: {name} = {value!r}: the evacuation runs on the "
                        "control machine and needs a plain address here, not a template")
    return value.strip()


def lab_endpoints(sources: Sequence[str], targets: Sequence[str],
                  hostvars: Mapping[str, Mapping[str, Any]], port: int,
                  lab_address: str | None = None) -> Endpoints:
    """The runner's view of the lab: source Control APIs and target probes where SSH reaches
    them, targets as the sources dial them (`lab_address` is an `-e migbed_lab_address`)."""
    def control(host: str) -> str:
        return f"{_plain(host, hostvars.get(host, {}), 'ansible_host') or host}:{port}"

    def lab(host: str) -> str:
        hv = hostvars.get(host, {})
        address = lab_address or _plain(host, hv, "migbed_lab_address")
        return f"{address or _plain(host, hv, 'ansible_host') or host}:{port}"

    return Endpoints({h: control(h) for h in sources}, {h: lab(h) for h in targets},
                     {h: control(h) for h in targets})


@contextlib.contextmanager
def _tls_dir(folder: Path | None) -> Iterator[None]:
    """The runner dials with the operator's credentials from $MIGBED_TLS_DIR: the lab CA's."""
    old = os.environ.get(ENV_TLS_DIR)
    if folder is not None:
        os.environ[ENV_TLS_DIR] = str(folder.resolve())
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(ENV_TLS_DIR, None)
        else:
            os.environ[ENV_TLS_DIR] = old


@dataclass(frozen=True)
class LabEvacuation:
    """An evacuation across lab hosts, checked before anything is installed on them."""

    endpoints: Endpoints
    guests: list[FleetGuest]
    scenario: tuple[str, str]  # name, TOML
    policies: list[str]
    limits: Limits
    order: str
    stop_on_target_loss: bool


def plan_lab_evacuation(sources: Sequence[str], targets: Sequence[str],
                        hostvars: Mapping[str, Mapping[str, Any]], scenario: Path, guests: int,
                        limits: Limits, order: str, stop_on_target_loss: bool,
                        policies: Sequence[str], port: int = 50051,
                        lab_address: str | None = None) -> LabEvacuation:
    """Guests dealt over every source host, placed on every target host by the planner;
    PlanError or ScenarioError when the plan cannot be made."""
    toml = scenario.read_text()
    endpoints = lab_endpoints(sources, targets, hostvars, port, lab_address)
    fleet = spread_guests(scenario.stem, toml, guests, sources)
    EvacuationPlan(fleet, list(endpoints.targets), limits, order)  # checks it all
    return LabEvacuation(endpoints, fleet, (scenario.stem, toml), list(policies or DEFAULT_POLICIES),
                         limits, order, stop_on_target_loss)


def evacuate_lab(plan: LabEvacuation, out: Path, tls_dir: Path | None, progress: bool = True) -> int:
    """Run the evacuation per policy from this machine against the lab hosts' services and
    write every view into `out`; 0 when every guest completed verified."""
    name, toml = plan.scenario
    limits, endpoints = plan.limits, plan.endpoints
    print(f"migbed: evacuating {len(plan.guests)} x {name} off {len(endpoints.sources)} source "
          f"host(s) to {len(endpoints.targets)} target host(s), at most {limits.per_source} in "
          f"flight per source, {limits.per_cluster} in all; results in {out}", flush=True)
    with _tls_dir(tls_dir):
        results = run_policies(endpoints, plan.guests, {name: toml}, plan.policies, limits,
                               plan.order, plan.stop_on_target_loss, progress)
    return finish(results, out)
