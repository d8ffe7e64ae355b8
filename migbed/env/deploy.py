"""What `migbed deploy` does: install migbed on lab hosts over SSH and run an experiment across them.

The work is done by the Ansible playbooks in ``deploy/`` (install.yml, experiment.yml,
shape.yml, teardown.yml). This module checks a request (migbed/cli/deploy.py turns the flags
into one), prepares the playbooks' inputs on the control machine (the wheelhouse:
wheelhouse.py; the lab CA: labcerts.py; the tc commands from the scenario; the experiment's
name), runs them in order (playbook.py; after a failure only the teardown), runs an
evacuation from here between the shaping and a teardown (migbed/fleet/lab.py), and writes
OUT/deploy.json.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from migbed.env.ansible import DeployError, Inventory, load_inventory, repo_root
from migbed.env.labcerts import lab_certs, tls_hosts
from migbed.env.playbook import AnsibleOptions, PlaybookRun, run_playbook
from migbed.env.wheelhouse import build_wheelhouse, wheelhouse_digest
from migbed.fleet.lab import LabEvacuation, evacuate_lab, plan_lab_evacuation
from migbed.fleet.planner import Limits

DEFAULT_OUT = "results/deploy"


@dataclass(frozen=True)
class EvacuationRequest:
    """--evacuate: drain every source host onto the target hosts, run from this machine."""

    guests: int
    limits: Limits
    order: str
    stop_on_target_loss: bool


@dataclass(frozen=True)
class DeployRequest:
    """One `migbed deploy`, its flags read and checked by migbed/cli/deploy.py."""

    inventory: Path
    out_dir: Path  # exists and is writable
    # The experiment: a scenario file the hosts run as it is, or a scenario's text to write
    # as OUT/scenario.toml (a built-in name, a comparison, --set); neither: install only.
    scenario_file: Path | None = None
    scenario_text: str | None = None
    policies: list[str] = field(default_factory=list)
    repeat: int = 3
    evacuation: EvacuationRequest | None = None
    teardown: bool = False
    tls: bool = True
    rerun: bool = False
    wheelhouse: Path | None = None  # use this one instead of building one
    extra_vars: dict[str, Any] = field(default_factory=dict)  # -e: override ours
    ansible: AnsibleOptions = field(default_factory=AnsibleOptions)
    progress: bool = True  # the evacuation's progress bar


@dataclass
class _DeployJob:
    """What one `migbed deploy` does, checked before anything is built or runs on the hosts."""

    request: DeployRequest
    root: Path
    inv: Inventory
    scenario: Path | None  # the scenario file the hosts run; None: install/teardown only
    evacuation: LabEvacuation | None
    todo: list[str]  # the playbooks, in order

    @property
    def out_dir(self) -> Path:
        return self.request.out_dir


def deploy(request: DeployRequest, out: TextIO = sys.stdout) -> int:
    """Check the inputs, run the playbooks (and an evacuation), write OUT/deploy.json.
    Bad input: DeployError, before anything is built or runs on the hosts."""
    job = _prepare(request)
    summary: dict[str, Any] = {"inventory": str(request.inventory.resolve()), "playbooks": []}
    extravars = _extravars(job, summary, out)
    cmdline = request.ansible.cmdline()
    if request.ansible.check:
        summary["check"] = True
    runs, first_failure, fleet_rc = _run_playbooks(job, extravars, cmdline, summary, out)
    rc = _exit_code(job, first_failure, fleet_rc, summary, out)
    _write_summary(job.out_dir, request.ansible.check, runs, rc, summary, out)
    return rc


def _prepare(request: DeployRequest) -> _DeployJob:
    """The inputs read and checked (bad input: DeployError); scenario.toml written."""
    root = repo_root()
    inv = load_inventory(request.inventory, root)
    scenario = request.scenario_file
    if scenario is None and request.scenario_text is not None:
        scenario = (request.out_dir / "scenario.toml").resolve()
        scenario.write_text(request.scenario_text)
    evacuate = request.evacuation is not None
    _check_experiment(scenario, evacuate, inv, request.inventory)
    # An evacuation's plan is checked before anything is built or installed.
    plan = _lab_evacuation(request, inv, scenario) if scenario is not None else None
    return _DeployJob(request, root, inv, scenario, plan, _playbooks(request.teardown, scenario, evacuate))


def _check_experiment(scenario: Path | None, evacuate: bool, inv: Inventory, inventory: Path) -> None:
    if evacuate and not scenario:
        raise DeployError("--evacuate needs --scenario FILE or NAME (every guest runs it)")
    if scenario and not evacuate and not inv.hosts("monitor"):
        raise DeployError(f"inventory {inventory}: group 'monitor' has no hosts; the experiment runs there")
    if scenario and not scenario.is_file():
        raise DeployError(f"scenario {scenario}: no such file")


def _lab_evacuation(request: DeployRequest, inv: Inventory, scenario: Path) -> LabEvacuation | None:
    from migbed.core.scenario import ScenarioError
    from migbed.fleet.planner import PlanError

    ev = request.evacuation
    if ev is None:
        return None
    lab_address = request.extra_vars.get("migbed_lab_address")
    try:
        return plan_lab_evacuation(
            inv.hosts("source"), inv.hosts("target"), inv.hostvars, scenario, ev.guests, ev.limits,
            ev.order, ev.stop_on_target_loss, request.policies,
            int(request.extra_vars.get("migbed_service_port", 50051)),
            str(lab_address) if lab_address else None)
    except (PlanError, ScenarioError) as e:
        raise DeployError(f"--evacuate: {e}") from None


def _playbooks(teardown: bool, scenario: Path | None, evacuate: bool) -> list[str]:
    todo: list[str] = []
    if not (teardown and not scenario):
        todo.append("install")
    if scenario:
        # An evacuation runs from this machine: the hosts only get their link shaped.
        todo.append("shape" if evacuate else "experiment")
    if teardown:
        todo.append("teardown")
    return todo


# ---------------------------------------------------------------- the playbooks' variables


def tc_commands(scenario: Path) -> list[list[str]]:
    """The tc argv lists for the scenario's [link], with @IFACE@ for the interface ([] = none)."""
    from migbed.core.scenario import ScenarioError
    from migbed.env.shaping import ShapingError, link_from_scenario_file, shaping_commands

    try:
        shape = link_from_scenario_file(str(scenario))
        if shape is None:
            return []
        return shaping_commands("@IFACE@", shape, netem_available=False)
    except (ScenarioError, ShapingError) as e:
        raise DeployError(f"scenario {scenario}: {e}") from None


def experiment_id(
    scenario: Path, policies: Sequence[str], repeat: int, out: Path, hosts: Sequence[str], wh: str
) -> str:
    """Names an experiment by its inputs: the same inputs are not run twice."""
    h = hashlib.sha256(scenario.read_bytes())
    for part in (*policies, str(repeat), str(out.resolve()), *hosts, wh):
        h.update(b"\0" + part.encode())
    return f"{scenario.stem}-{h.hexdigest()[:12]}"


def _extravars(job: _DeployJob, summary: dict[str, Any], out: TextIO) -> dict[str, Any]:
    """The playbooks' variables; -e overrides what this machine worked out."""
    request = job.request
    extravars: dict[str, Any] = {}
    if "install" in job.todo:
        extravars |= _wheelhouse_vars(job.root, request.wheelhouse, out)
    if job.evacuation is not None and job.scenario:
        extravars["migbed_tc_commands"] = tc_commands(job.scenario)
    elif job.scenario:
        digest = extravars.get("migbed_wheelhouse_digest", "")
        extravars |= _experiment_vars(job, job.scenario, digest, summary)
    extravars["migbed_tls"] = request.tls
    extravars |= request.extra_vars
    if "install" in job.todo and truthy(extravars.get("migbed_tls")):
        # The CA's key stays here, on the control machine; the hosts get ca.pem and pairs.
        tls_dir = job.out_dir / "tls"
        lab_certs(tls_dir, tls_hosts(job.inv, extravars), out)
        extravars["migbed_tls_dir"] = str(tls_dir.resolve())
    return extravars


def _wheelhouse_vars(root: Path, given: Path | None, out: TextIO) -> dict[str, Any]:
    """The wheelhouse to install from: --wheelhouse as it is, else one built under .cache."""
    wheelhouse = given if given else root / ".cache" / "deploy-wheelhouse"
    if not given:
        build_wheelhouse(root, wheelhouse, out)
    return {
        "migbed_wheelhouse": str(wheelhouse.resolve()),
        "migbed_wheelhouse_digest": wheelhouse_digest(wheelhouse),
    }


def _experiment_vars(job: _DeployJob, scenario: Path, wheelhouse_digest: str,
                     summary: dict[str, Any]) -> dict[str, Any]:
    """The one-pair experiment's variables: first source host to first target host."""
    request = job.request
    exp = experiment_id(scenario, request.policies, request.repeat, job.out_dir,
                        [job.inv.hosts("source")[0], job.inv.hosts("target")[0]], wheelhouse_digest)
    summary["experiment_id"] = exp
    return {
        "migbed_scenario_file": str(scenario),
        "migbed_policies": request.policies,
        "migbed_repeat": request.repeat,
        "migbed_experiment_id": exp,
        "migbed_rerun": request.rerun,
        "migbed_results_dir": str(job.out_dir.resolve()),
        "migbed_tc_commands": tc_commands(scenario),
    }


def truthy(value: Any) -> bool:
    """A variable as Ansible's `| bool` reads it."""
    if isinstance(value, str):
        return value.strip().lower() in ("yes", "on", "1", "true", "y", "t")
    return bool(value)


# ---------------------------------------------------------------- running and reporting


def _run_playbooks(job: _DeployJob, extravars: dict[str, Any], cmdline: list[str],
                   summary: dict[str, Any], out: TextIO) -> tuple[list[PlaybookRun], PlaybookRun | None, int]:
    """Every playbook in order; after a failure only the teardown still runs. Returns the runs,
    the first that failed and the evacuation's exit code (0 without one)."""
    runs: list[PlaybookRun] = []
    first_failure: PlaybookRun | None = None
    fleet_rc = 0
    ansible = job.request.ansible
    for name in job.todo:
        if first_failure and name != "teardown":
            continue
        run = run_playbook(name, root=job.root, inventory=job.request.inventory, extravars=extravars,
                           out_dir=job.out_dir, cmdline=cmdline, out=out, verbose=ansible.verbose,
                           diff=ansible.diff)
        runs.append(run)
        summary["playbooks"].append(run.to_dict())
        if not run.ok and first_failure is None:
            first_failure = run
        if name == "shape" and run.ok and job.evacuation is not None and not ansible.check:
            # Between the shaping and a teardown: the services must still be there.
            fleet_rc = _run_evacuation(job, job.evacuation, extravars, summary)
    return runs, first_failure, fleet_rc


def _run_evacuation(job: _DeployJob, plan: LabEvacuation, extravars: dict[str, Any],
                    summary: dict[str, Any]) -> int:
    """The evacuation from this machine against the hosts' Control APIs, mTLS with the lab CA."""
    tls = None
    if truthy(extravars.get("migbed_tls")):
        tls = Path(extravars.get("migbed_tls_dir") or job.out_dir / "tls")
    rc = evacuate_lab(plan, job.out_dir, tls, job.request.progress)
    summary["evacuation"] = {"fleet": str(job.out_dir / "fleet.json"), "ok": rc == 0,
                             "sources": dict(plan.endpoints.sources),
                             "targets": dict(plan.endpoints.targets)}
    return rc


def _exit_code(job: _DeployJob, first_failure: PlaybookRun | None, fleet_rc: int,
               summary: dict[str, Any], out: TextIO) -> int:
    """1 when a playbook failed (said on stderr), else the evacuation's or the results' verdict."""
    if first_failure is not None:
        _print_failure(first_failure)
        return 1
    if job.evacuation is not None:
        return fleet_rc
    if job.scenario and not job.request.ansible.check:
        return _report_results(job.out_dir, summary, out)
    return 0


def _print_failure(f: PlaybookRun) -> None:
    if f.failures:
        for failure in f.failures:
            print(f"migbed deploy: {f.name}.yml: {failure}", file=sys.stderr)
    else:
        print(
            f"migbed deploy: {f.name}.yml failed ({f.status}, rc {f.rc}) before any host "
            f"ran a task:\n{f.stdout_tail}",
            file=sys.stderr,
        )
    print(f"migbed deploy: artifacts in {f.private_data_dir}", file=sys.stderr)


def _write_summary(out_dir: Path, check: bool, runs: list[PlaybookRun], rc: int, summary: dict[str, Any],
                   out: TextIO) -> None:
    """OUT/deploy.json, and on success one line saying what changed."""
    summary["changed"] = sum(r.changed() for r in runs)
    summary["ok"] = rc == 0
    (out_dir / "deploy.json").write_text(json.dumps(summary, indent=1) + "\n")
    if rc == 0:
        print(
            f"migbed deploy: {'check done (nothing changed), would make' if check else 'done,'} "
            f"{summary['changed']} changes "
            f"({', '.join(f'{r.name}.yml' for r in runs)}); summary in {out_dir / 'deploy.json'}",
            file=out,
            flush=True,
        )


def _report_results(out_dir: Path, summary: dict[str, Any], out: TextIO) -> int:
    from migbed.measure.record import load_results

    path = out_dir / "results.json"
    if not path.is_file():
        print(f"migbed deploy: the experiment left no {path}", file=sys.stderr)
        return 1
    records = load_results(str(path))
    verified = sum(1 for r in records if r.verified)
    summary["results"] = {"path": str(path), "records": len(records), "verified": verified}
    print(f"results: {len(records)} runs, {verified} verified -> {path}", file=out, flush=True)
    for r in records:
        print(
            f"   {r.policy:<22} {r.outcome:<10} downtime {r.downtime_ms:8.1f} ms  "
            f"guest-visible {r.guest_downtime_ms:8.1f} ± {r.guest_downtime_uncertainty_ms:.1f} ms"
            f"  verified={str(r.verified).lower()}",
            file=out,
            flush=True,
        )
    return 0
