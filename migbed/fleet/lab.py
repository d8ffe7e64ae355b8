"""Evacuations across lab hosts: where the runner reaches each host, and which guest starts where.

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
from pathlib import Path
from typing import Any

from migbed.core.scenario import parse_scenario
from migbed.fleet.evacuation import Endpoints
from migbed.fleet.planner import FleetGuest, Limits, PlanError
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


def spread_guests(name: str, toml: str, count: int, source_hosts: Sequence[str]) -> list[FleetGuest]:
    """`count` guests of one scenario, dealt over the source hosts in turn (guest-0 on the
    first, guest-1 on the second, ...): each source host holds count/len(sources) of them."""
    if not source_hosts:
        raise PlanError("sources: at least one source host")
    sc = parse_scenario(toml, name)
    device = sum(d.initial_bytes + d.stop_copy_size + d.device_state_size for d in sc.devices)
    return [FleetGuest(f"guest-{i}", source_hosts[i % len(source_hosts)], name, sc.guest.ram_size, device)
            for i in range(count)]


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


def evacuate_lab(endpoints: Endpoints, fleet: list[FleetGuest], scenario: tuple[str, str],
                 policies: Sequence[str], limits: Limits, order: str, stop_on_target_loss: bool,
                 out: Path, tls_dir: Path | None, progress: bool = True) -> int:
    """Run the evacuation per policy from this machine against the lab hosts' services and
    write every view into `out`; 0 when every guest completed verified."""
    from migbed.fleet.cli import finish, run_policies

    name, toml = scenario
    print(f"migbed: evacuating {len(fleet)} x {name} off {len(endpoints.sources)} source host(s) "
          f"to {len(endpoints.targets)} target host(s), at most {limits.per_source} in flight per "
          f"source, {limits.per_cluster} in all; results in {out}", flush=True)
    with _tls_dir(tls_dir):
        results = run_policies(endpoints, fleet, {name: toml}, policies, limits, order,
                               stop_on_target_loss, progress)
    return finish(results, out)
