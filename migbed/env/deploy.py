"""``migbed deploy``: install migbed on lab hosts over SSH and run an experiment across them.

The work is done by the Ansible playbooks in ``deploy/`` (install.yml, experiment.yml,
teardown.yml), driven through ``ansible_runner.run``. This module prepares their inputs on the
control machine (the wheelhouse, the tc commands from the scenario, the experiment's name),
shows progress per host and task, and turns failures into one line naming the host, the task
and the reason. Each playbook run keeps its ansible-runner private data dir (inventory path,
extra vars, stdout, job events) under ``OUT/ansible/`` beside the results.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import ipaddress
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from migbed.cli.args import add_dilation_arg, add_out_arg, add_policy_args, add_scenario_args
from migbed.core.policy import DEFAULT_POLICIES

DEFAULT_OUT = "results/deploy"


class DeployError(Exception):
    """A problem found before or while running the playbooks; str() is the message to show."""


# ---------------------------------------------------------------- the repository


def repo_root() -> Path:
    """The folder holding deploy/ (and images/): $MIGBED_ROOT, the checkout, or the wheel's copy
    (migbed/assets.py)."""
    from migbed.assets import WHEEL_COPY, AssetMissing, asset_root, source_tree

    try:
        root = asset_root("deploy/install.yml")
        # An installed wheel: the wheelhouse is built from sources (images/fetch-wheels.sh).
        return source_tree() if root == WHEEL_COPY else root
    except AssetMissing as e:
        raise DeployError(str(e)) from None


# ---------------------------------------------------------------- inventory


@dataclass
class Inventory:
    """The groups of an inventory, each with every host in it (children included)."""

    groups: dict[str, list[str]]
    # Each host's variables as the inventory sets them (templates not rendered).
    hostvars: dict[str, dict[str, Any]] = field(default_factory=dict)

    def hosts(self, group: str) -> list[str]:
        return self.groups.get(group, [])


def _ansible_env(root: Path) -> dict[str, str]:
    return {
        "ANSIBLE_CONFIG": str(root / "deploy" / "ansible.cfg"),
        # ansible-runner turns host key checking off unless told; ansible.cfg decides instead
        # (accept-new: a host seen for the first time is trusted, a changed key fails).
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
    }


def _ansible_on_path() -> None:
    """ansible-runner looks ansible-playbook up on PATH: use the ones beside this Python."""
    bindir = str(Path(sys.executable).parent)
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")


def _inventory_error(path: Path, err: str) -> str:
    """The useful part of ansible-inventory's complaint about a file it could not parse."""
    causes = re.findall(r"Failed to parse inventory with '(\w+)' plugin: (.+)", err)
    origin = re.search(r"Origin: (\S+:\d+:\d+)", err)
    if causes:
        # The yaml/auto plugins say the most about a YAML file, ini about any other.
        wanted = ("yaml", "auto") if path.suffix in (".yml", ".yaml") else ("ini",)
        reason = next((r for plugin, r in causes if plugin in wanted), causes[0][1])
        where = f" (at {origin.group(1)})" if origin else ""
        return f"{reason.strip()}{where}"
    lines = [ln.strip() for ln in err.splitlines() if ln.strip()]
    return lines[-1] if lines else "ansible-inventory failed"


def load_inventory(path: Path, root: Path) -> Inventory:
    """Parse ``path`` with ansible-inventory; DeployError naming the file when it cannot."""
    import ansible_runner  # Ansible: a deploy-time dependency only

    if not path.exists():
        raise DeployError(f"inventory {path}: no such file")
    _ansible_on_path()
    with tempfile.TemporaryDirectory(prefix="migbed-inv-") as tmp:
        out, err = ansible_runner.get_inventory(
            action="list",
            inventories=[str(path)],
            response_format="json",
            quiet=True,
            private_data_dir=tmp,
            envvars=_ansible_env(root),
        )
    if not isinstance(out, dict):
        raise DeployError(f"inventory {path} could not be parsed: {_inventory_error(path, err)}")
    groups: dict[str, list[str]] = {}

    def hosts_of(group: str, seen: frozenset[str] = frozenset()) -> list[str]:
        entry = out.get(group, {})
        found = list(entry.get("hosts", []))
        for child in entry.get("children", []):
            if child not in seen:
                found += [h for h in hosts_of(child, seen | {group}) if h not in found]
        return found

    for group in out:
        if group != "_meta":
            groups[group] = hosts_of(group)
    hostvars = out.get("_meta", {}).get("hostvars", {})
    inv = Inventory(groups, {h: dict(v) for h, v in hostvars.items() if isinstance(v, dict)})
    for need in ("source", "target"):
        if not inv.hosts(need):
            raise DeployError(
                f"inventory {path}: group '{need}' has no hosts "
                "(needs groups source, target and, for experiments, monitor)"
            )
    return inv


# ---------------------------------------------------------------- inputs of the playbooks


def build_wheelhouse(root: Path, dest: Path, out: TextIO) -> None:
    """The pinned runtime wheels for the hosts plus the migbed wheel, by images/fetch-wheels.sh."""
    script = root / "images" / "fetch-wheels.sh"
    if not script.is_file():
        raise DeployError(f"{script} is missing: cannot build the wheelhouse (or pass --wheelhouse)")
    print(f"wheelhouse: {dest}", file=out, flush=True)
    env = dict(os.environ, MIGBED_PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(script), str(dest)], env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise DeployError(f"building the wheelhouse failed (exit {proc.returncode}):\n{tail}")


def wheelhouse_digest(wheelhouse: Path) -> str:
    """A fingerprint of everything the hosts install; the venv is reinstalled when it changes."""
    files = [wheelhouse / "runtime.txt", *sorted(wheelhouse.glob("deps/*.whl"))]
    files += sorted(wheelhouse.glob("project/*.whl"))
    projects = [f for f in files if f.parent.name == "project"]
    if len(projects) != 1 or not (wheelhouse / "runtime.txt").is_file():
        raise DeployError(
            f"wheelhouse {wheelhouse} must hold runtime.txt, deps/*.whl and exactly one "
            f"project/migbed-*.whl (found {len(projects)} project wheels)"
        )
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.relative_to(wheelhouse)}\0".encode())
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()[:32]


def tls_hosts(inv: Inventory, extravars: Mapping[str, Any]) -> list[str]:
    """The names and addresses the services are dialled at: each certificate's SANs.

    For every source and target host its inventory name, ansible_host and migbed_lab_address
    (when the inventory or -e sets it to a plain value, not a template). Names that are not a
    DNS name or an IP address (an inventory name with '_') cannot be dialled and are left out.
    """
    from migbed.env.certs import CertsError, _check_host

    found: list[str] = []
    for host in [*inv.hosts("source"), *inv.hosts("target")]:
        hv = inv.hostvars.get(host, {})
        for value in (host, hv.get("ansible_host"), extravars.get("migbed_lab_address", hv.get("migbed_lab_address"))):
            if not isinstance(value, str) or not value or "{" in value:
                continue
            try:
                name = _check_host(value.strip())
            except CertsError:
                continue
            if name not in found:
                found.append(name)
    return found


def _san_names(cert_path: Path) -> tuple[set[str], float]:
    """The SANs of a certificate (IPs normalised) and the seconds until it expires."""
    import datetime as dt

    from cryptography import x509

    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = {n.lower() for n in san.get_values_for_type(x509.DNSName)}
    names |= {str(a) for a in san.get_values_for_type(x509.IPAddress)}
    left = (cert.not_valid_after_utc - dt.datetime.now(dt.UTC)).total_seconds()
    return names, left


def _normal(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return host.lower()


def lab_certs(folder: Path, hosts: Sequence[str], out: TextIO) -> bool:
    """Make the lab CA and certificates in `folder` unless the ones there still fit; True if made.

    Certificates are reused while every file is there, the source and target certificates
    name every host in `hosts` and they are valid for more than a day; otherwise a new CA
    and new certificates replace them all (the services restart with them).
    """
    from migbed.env.certs import CA_KEY_FILE, CertsError, make_certs
    from migbed.wire.tls import CA_FILE, IDENTITIES, cert_file, key_file

    files = [CA_FILE, CA_KEY_FILE, *(f for i in IDENTITIES for f in (cert_file(i), key_file(i)))]
    why = "none yet"
    if all((folder / f).is_file() for f in files):
        why = ""
        wanted = {_normal(h) for h in hosts}
        for role in ("source", "target"):
            try:
                names, left = _san_names(folder / cert_file(role))
            except (ValueError, OSError) as e:
                why = f"{cert_file(role)} unreadable ({e})"
                break
            if wanted - names:
                why = f"new hosts {', '.join(sorted(wanted - names))}"
                break
            if left < 86400:
                why = f"{cert_file(role)} expires within a day"
                break
        if not why:
            return False
    try:
        make_certs(folder, hosts, force=True)
    except CertsError as e:
        raise DeployError(f"TLS certificates in {folder}: {e}") from None
    print(f"tls: a new lab CA and certificates in {folder} ({why})", file=out, flush=True)
    return True


def tc_commands(scenario: Path) -> list[list[str]]:
    """The tc argv lists for the scenario's [link], with @IFACE@ for the interface ([] = none)."""
    from migbed.core.scenario import ScenarioError
    from migbed.env.shaping import (
        ShapingError,
        link_from_scenario_file,
        shaping_commands,
    )

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


# ---------------------------------------------------------------- progress and failures


@dataclass
class Failure:
    host: str
    task: str
    reason: str
    unreachable: bool = False

    def __str__(self) -> str:
        what = "unreachable" if self.unreachable else "failed"
        return f"host '{self.host}' {what} at task '{self.task}': {self.reason}"


def _reason(res: Mapping[str, Any]) -> str:
    """One readable line (or a few) out of a task result."""
    if not res.get("msg") and res.get("results"):  # a loop: the first failed item
        for item in res["results"]:
            if isinstance(item, Mapping) and (item.get("failed") or item.get("unreachable")):
                return _reason(item)
    parts: list[str] = []
    msg = str(res.get("msg") or "").strip().removeprefix("Task failed: ")
    if msg and msg != "non-zero return code":
        parts.append(msg)
    if "rc" in res and res.get("rc") not in (0, None):
        parts.append(f"exit {res['rc']}")
    # A command's own words: the end of its stderr, else of its stdout.
    for key in ("stderr", "module_stderr", "stdout"):
        text = res.get(key)
        if isinstance(text, str) and text.strip():
            parts.append(" | ".join(ln.strip() for ln in text.strip().splitlines()[-5:]))
            break
    return ("; ".join(parts) or "no reason given")[:2000]


def _diff_lines(diff: Any) -> list[str]:
    """Ansible's --diff result of a task (a dict or a list of them) as unified-diff lines."""
    import difflib

    found: list[str] = []
    for d in diff if isinstance(diff, list) else [diff] if isinstance(diff, dict) else []:
        if not isinstance(d, dict):
            continue
        if isinstance(d.get("prepared"), str):
            found += d["prepared"].splitlines()
            continue
        before, after = d.get("before", ""), d.get("after", "")
        if isinstance(before, str) and isinstance(after, str) and before != after:
            found += difflib.unified_diff(
                before.splitlines(),
                after.splitlines(),
                str(d.get("before_header", "before")),
                str(d.get("after_header", "after")),
                lineterm="",
            )
        elif before != after:
            found.append(f"{before!r} -> {after!r}")
    return found


@dataclass
class Progress:
    """ansible-runner event handler: prints one line per host and task, collects failures."""

    out: TextIO
    verbose: bool = False
    diff: bool = False  # --diff: print each changed task's diff under its line
    failures: list[Failure] = field(default_factory=list)
    stats: dict[str, dict[str, int]] = field(default_factory=dict)
    _task: str = ""

    def __call__(self, event: dict[str, Any]) -> bool:
        kind = event.get("event", "")
        data = event.get("event_data", {})
        host = data.get("host", "")
        res = data.get("res", {}) if isinstance(data.get("res"), dict) else {}
        task = data.get("task", "") or self._task
        role = data.get("role", "")
        label = f"{role} : {task}" if role and not task.startswith(role) else task
        if kind == "playbook_on_play_start":
            self._line(f"PLAY {data.get('play', '')}")
        elif kind == "playbook_on_task_start":
            self._task = data.get("task", "")
        elif kind == "runner_on_ok":
            self._line(f"  {host:<16} {'changed' if res.get('changed') else 'ok':<11} {label}")
            if self.diff and res.get("changed"):
                for text in _diff_lines(res.get("diff")):
                    self._line(f"  {'':<16} {'':<11} {text}")
        elif kind == "runner_on_skipped" and self.verbose:
            self._line(f"  {host:<16} {'skipped':<11} {label}")
        elif kind == "runner_retry":
            left = res.get("retries", 0) - res.get("attempts", 0)
            self._line(f"  {host:<16} {'waiting':<11} {label} ({left} tries left)")
        elif kind in ("runner_on_failed", "runner_on_unreachable"):
            unreachable = kind == "runner_on_unreachable"
            if data.get("ignore_errors"):
                self._line(f"  {host:<16} {'ignored':<11} {label}")
                return True
            f = Failure(host, label, _reason(res), unreachable)
            self.failures.append(f)
            self._line(f"  {host:<16} {'UNREACHABLE' if unreachable else 'FAILED':<11} {label}")
            self._line(f"  {'':<16} {'':<11} {f.reason}")
        elif kind == "playbook_on_stats":
            for key in ("ok", "changed", "failures", "dark", "skipped", "rescued", "ignored"):
                for h, n in (data.get(key) or {}).items():
                    self.stats.setdefault(h, {})[key] = n
        return True

    def _line(self, text: str) -> None:
        print(text, file=self.out, flush=True)


@dataclass
class PlaybookRun:
    name: str
    status: str
    rc: int
    private_data_dir: str
    stats: dict[str, dict[str, int]]
    failures: list[Failure]
    stdout_tail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "successful" and self.rc == 0

    def changed(self) -> int:
        return sum(s.get("changed", 0) for s in self.stats.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "playbook": f"{self.name}.yml",
            "status": self.status,
            "rc": self.rc,
            "private_data_dir": self.private_data_dir,
            "stats": self.stats,
            "failures": [f.__dict__ for f in self.failures],
        }


def run_playbook(
    name: str,
    *,
    root: Path,
    inventory: Path,
    extravars: dict[str, Any],
    out_dir: Path,
    cmdline: Sequence[str],
    out: TextIO,
    verbose: bool = False,
    diff: bool = False,
) -> PlaybookRun:
    """Run deploy/NAME.yml through ansible-runner; its private data dir stays under OUT/ansible."""
    import ansible_runner

    pdd = _private_data_dir(out_dir, name)
    _ansible_on_path()
    progress = Progress(out, verbose, diff)
    print(f"== {name}.yml", file=out, flush=True)
    # SSH control sockets need a short path (108 bytes); the data dir may be deep.
    with tempfile.TemporaryDirectory(prefix="migbed-cp-") as cp_dir:
        envvars = _ansible_env(root) | {"ANSIBLE_SSH_CONTROL_PATH_DIR": cp_dir}
        r = ansible_runner.run(
            private_data_dir=str(pdd),
            project_dir=str(root / "deploy"),
            playbook=f"{name}.yml",
            inventory=str(inventory.resolve()),
            extravars=extravars,
            envvars=envvars,
            cmdline=shlex.join(cmdline) if cmdline else None,
            event_handler=progress,
            quiet=True,
            ident="run",
        )
        _close_ssh_masters(Path(cp_dir))
    run = PlaybookRun(name, r.status, int(r.rc or 0), str(pdd), progress.stats, progress.failures,
                      _stdout_tail(r))
    _print_stats(run, out)
    return run


def _private_data_dir(out_dir: Path, name: str) -> Path:
    """A new OUT/ansible/<UTC stamp>-NAME[-n] folder for one playbook run."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    pdd = out_dir / "ansible" / f"{stamp}-{name}"
    n = 1
    while pdd.exists():
        n += 1
        pdd = out_dir / "ansible" / f"{stamp}-{name}-{n}"
    pdd.mkdir(parents=True)
    return pdd


def _close_ssh_masters(cp_dir: Path) -> None:
    """The SSH connections Ansible kept open for this run end with it."""
    for sock in cp_dir.iterdir():
        subprocess.run(
            ["ssh", "-S", str(sock), "-O", "exit", "migbed-deploy"],
            capture_output=True,
            check=False,
            timeout=10,
        )


def _stdout_tail(runner: Any) -> str:
    """The last 20 lines ansible-playbook printed ("" when the runner kept none)."""
    with contextlib.suppress(OSError, AttributeError):
        return "\n".join(runner.stdout.read().strip().splitlines()[-20:])
    return ""


def _print_stats(run: PlaybookRun, out: TextIO) -> None:
    for host, s in sorted(run.stats.items()):
        print(
            f"   {host:<16} ok={s.get('ok', 0)} changed={s.get('changed', 0)} "
            f"unreachable={s.get('dark', 0)} failed={s.get('failures', 0)} "
            f"skipped={s.get('skipped', 0)}",
            file=out,
            flush=True,
        )


# ---------------------------------------------------------------- the command


def _parse_extra(items: Sequence[str]) -> dict[str, Any]:
    import yaml  # comes with Ansible

    extra: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise DeployError(f"-e {item!r}: expected NAME=VALUE")
        extra[key.strip()] = yaml.safe_load(value) if value else ""
    return extra


def _experiment(args: argparse.Namespace, out_dir: Path) -> tuple[Path | None, list[str], int]:
    """(scenario file for the hosts, policies, repeat) from the shared flags, or no experiment.
    A built-in name, a comparison or --set is written out as OUT/scenario.toml."""
    from migbed.cli.args import UsageError, resolve_experiment
    from migbed.core.scenario import is_scenario_file

    if not (args.scenario or getattr(args, "comparison", None)):
        return None, [], args.repeat or 3
    try:
        exp = resolve_experiment(args)
    except UsageError as e:
        raise DeployError(str(e)) from None
    if is_scenario_file(exp.scenario_arg) and not exp.overrides:
        return Path(exp.scenario_arg).resolve(), list(exp.policies), exp.repeat
    path = out_dir / "scenario.toml"
    path.write_text(exp.scenario.source_text)
    return path.resolve(), list(exp.policies), exp.repeat


@dataclass
class _DeployJob:
    """What one `migbed deploy` does, checked before anything is built or runs on the hosts."""

    root: Path
    inventory: Path  # the file, as given
    inv: Inventory
    out_dir: Path
    scenario: Path | None  # the scenario file the hosts run; None: install/teardown only
    policies: list[str]
    evacuate: bool
    fleet_plan: FleetPlan | None
    todo: list[str]  # the playbooks, in order


def deploy(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """The command: check the inputs, run the playbooks (and an evacuation), write OUT/deploy.json."""
    job = _prepare(args)
    summary: dict[str, Any] = {"inventory": str(job.inventory.resolve()), "playbooks": []}
    extravars = _extravars(job, args, summary, out)
    cmdline = _ansible_cmdline(args, summary)
    runs, first_failure, fleet_rc = _run_playbooks(job, args, extravars, cmdline, summary, out)
    rc = _exit_code(job, args, first_failure, fleet_rc, summary, out)
    _write_summary(job.out_dir, args.check, runs, rc, summary, out)
    return rc


def _prepare(args: argparse.Namespace) -> _DeployJob:
    """The inputs read and checked (bad input: DeployError); OUT made, scenario.toml written."""
    from migbed.cli.args import UsageError, writable_folder

    root = repo_root()
    inventory = Path(args.inventory)
    inv = load_inventory(inventory, root)
    try:
        out_dir = writable_folder(Path(args.out or DEFAULT_OUT))
    except UsageError as e:
        raise DeployError(str(e)) from None
    evacuate = bool(getattr(args, "evacuate", False))
    try:
        scenario, policies, repeat = _experiment(args, out_dir)
    except DeployError as e:
        raise DeployError(f"--evacuate: {e}" if evacuate else str(e)) from None
    args.repeat = repeat
    _check_experiment(scenario, evacuate, inv, inventory)
    # An evacuation's plan is checked before anything is built or installed.
    fleet_plan = _fleet_plan(args, inv, scenario, policies) if evacuate and scenario else None
    return _DeployJob(root, inventory, inv, out_dir, scenario, policies, evacuate, fleet_plan,
                      _playbooks(args.teardown, scenario, evacuate))


def _check_experiment(scenario: Path | None, evacuate: bool, inv: Inventory, inventory: Path) -> None:
    if evacuate and not scenario:
        raise DeployError("--evacuate needs --scenario FILE or NAME (every guest runs it)")
    if scenario and not evacuate and not inv.hosts("monitor"):
        raise DeployError(f"inventory {inventory}: group 'monitor' has no hosts; the experiment runs there")
    if scenario and not scenario.is_file():
        raise DeployError(f"scenario {scenario}: no such file")


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


def _extravars(job: _DeployJob, args: argparse.Namespace, summary: dict[str, Any], out: TextIO) -> dict[str, Any]:
    """The playbooks' variables; -e overrides what this machine worked out."""
    extravars: dict[str, Any] = {}
    if "install" in job.todo:
        extravars |= _wheelhouse_vars(job.root, args.wheelhouse, out)
    if job.evacuate and job.scenario:
        extravars["migbed_tc_commands"] = tc_commands(job.scenario)
    elif job.scenario:
        digest = extravars.get("migbed_wheelhouse_digest", "")
        extravars |= _experiment_vars(job, job.scenario, args, digest, summary)
    extravars["migbed_tls"] = not args.no_tls
    extravars |= _parse_extra(args.extra_vars or [])
    if "install" in job.todo and _truthy(extravars.get("migbed_tls")):
        # The CA's key stays here, on the control machine; the hosts get ca.pem and pairs.
        tls_dir = job.out_dir / "tls"
        lab_certs(tls_dir, tls_hosts(job.inv, extravars), out)
        extravars["migbed_tls_dir"] = str(tls_dir.resolve())
    return extravars


def _wheelhouse_vars(root: Path, given: str | None, out: TextIO) -> dict[str, Any]:
    """The wheelhouse to install from: --wheelhouse as it is, else one built under .cache."""
    wheelhouse = Path(given) if given else root / ".cache" / "deploy-wheelhouse"
    if not given:
        build_wheelhouse(root, wheelhouse, out)
    return {
        "migbed_wheelhouse": str(wheelhouse.resolve()),
        "migbed_wheelhouse_digest": wheelhouse_digest(wheelhouse),
    }


def _experiment_vars(job: _DeployJob, scenario: Path, args: argparse.Namespace, wheelhouse_digest: str,
                     summary: dict[str, Any]) -> dict[str, Any]:
    """The one-pair experiment's variables: first source host to first target host."""
    exp = experiment_id(
        scenario,
        job.policies,
        args.repeat,
        job.out_dir,
        [job.inv.hosts("source")[0], job.inv.hosts("target")[0]],
        wheelhouse_digest,
    )
    summary["experiment_id"] = exp
    return {
        "migbed_scenario_file": str(scenario),
        "migbed_policies": job.policies,
        "migbed_repeat": args.repeat,
        "migbed_experiment_id": exp,
        "migbed_rerun": bool(args.rerun),
        "migbed_results_dir": str(job.out_dir.resolve()),
        "migbed_tc_commands": tc_commands(scenario),
    }


def _ansible_cmdline(args: argparse.Namespace, summary: dict[str, Any]) -> list[str]:
    """ansible-playbook's own flags from ours."""
    cmdline: list[str] = []
    if args.private_key:
        cmdline += ["--private-key", str(Path(args.private_key).expanduser())]
    if args.user:
        cmdline += ["--user", args.user]
    if args.limit:
        cmdline += ["--limit", args.limit]
    # Ansible's own check mode: every task reports what it would change, nothing changes on
    # the hosts (read-only probes still run: check_mode: false in the roles).
    if args.check:
        cmdline.append("--check")
        summary["check"] = True
    if args.diff:
        cmdline.append("--diff")
    return cmdline


def _run_playbooks(job: _DeployJob, args: argparse.Namespace, extravars: dict[str, Any], cmdline: list[str],
                   summary: dict[str, Any], out: TextIO) -> tuple[list[PlaybookRun], PlaybookRun | None, int]:
    """Every playbook in order; after a failure only the teardown still runs. Returns the runs,
    the first that failed and the evacuation's exit code (0 without one)."""
    runs: list[PlaybookRun] = []
    first_failure: PlaybookRun | None = None
    fleet_rc = 0
    for name in job.todo:
        if first_failure and name != "teardown":
            continue
        run = run_playbook(
            name,
            root=job.root,
            inventory=job.inventory,
            extravars=extravars,
            out_dir=job.out_dir,
            cmdline=cmdline,
            out=out,
            verbose=args.verbose,
            diff=args.diff,
        )
        runs.append(run)
        summary["playbooks"].append(run.to_dict())
        if not run.ok and first_failure is None:
            first_failure = run
        if name == "shape" and run.ok and job.fleet_plan is not None and not args.check:
            # Between the shaping and a teardown: the services must still be there.
            fleet_rc = _run_fleet(job.fleet_plan, extravars, job.out_dir, summary, not args.no_progress)
    return runs, first_failure, fleet_rc


def _exit_code(job: _DeployJob, args: argparse.Namespace, first_failure: PlaybookRun | None, fleet_rc: int,
               summary: dict[str, Any], out: TextIO) -> int:
    """1 when a playbook failed (said on stderr), else the evacuation's or the results' verdict."""
    if first_failure is not None:
        _print_failure(first_failure)
        return 1
    if job.fleet_plan is not None:
        return fleet_rc
    if job.scenario and not args.check:
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


@dataclass
class FleetPlan:
    """An evacuation checked before anything is installed (bad input: exit 2, nothing done)."""

    endpoints: Any  # migbed.fleet.evacuation.Endpoints
    guests: list[Any]  # migbed.fleet.planner.FleetGuest
    scenario: tuple[str, str]  # name, TOML
    policies: list[str]
    limits: Any  # migbed.fleet.planner.Limits
    order: str
    stop_on_target_loss: bool


def _fleet_plan(args: argparse.Namespace, inv: Inventory, scenario: Path, policies: list[str]) -> FleetPlan:
    """Guests dealt over every source host, placed on every target host by the planner."""
    from migbed.core.scenario import ScenarioError
    from migbed.fleet.lab import lab_endpoints, spread_guests
    from migbed.fleet.planner import EvacuationPlan, Limits, PlanError

    extra = _parse_extra(args.extra_vars or [])
    port = int(extra.get("migbed_service_port", 50051))
    lab_address = extra.get("migbed_lab_address")
    toml = scenario.read_text()
    try:
        endpoints = lab_endpoints(inv.hosts("source"), inv.hosts("target"), inv.hostvars, port,
                                  str(lab_address) if lab_address else None)
        guests = spread_guests(scenario.stem, toml, args.guests, inv.hosts("source"))
        limits = Limits(args.per_source, args.per_cluster, args.per_target)
        EvacuationPlan(guests, list(endpoints.targets), limits, args.order)  # checks it all
    except (PlanError, ScenarioError) as e:
        raise DeployError(f"--evacuate: {e}") from None
    return FleetPlan(endpoints, guests, (scenario.stem, toml), policies or list(DEFAULT_POLICIES),
                     limits, args.order, args.stop_on_target_loss)


def _run_fleet(plan: FleetPlan, extravars: Mapping[str, Any], out_dir: Path, summary: dict[str, Any],
               progress: bool) -> int:
    """The evacuation from this machine against the hosts' Control APIs, mTLS with the lab CA."""
    from migbed.fleet.lab import evacuate_lab

    tls = None
    if _truthy(extravars.get("migbed_tls")):
        tls = Path(extravars.get("migbed_tls_dir") or out_dir / "tls")
    rc = evacuate_lab(plan.endpoints, plan.guests, plan.scenario, plan.policies, plan.limits,
                      plan.order, plan.stop_on_target_loss, out_dir, tls, progress)
    summary["evacuation"] = {"fleet": str(out_dir / "fleet.json"), "ok": rc == 0,
                             "sources": dict(plan.endpoints.sources),
                             "targets": dict(plan.endpoints.targets)}
    return rc


def _truthy(value: Any) -> bool:
    """A variable as Ansible's `| bool` reads it."""
    if isinstance(value, str):
        return value.strip().lower() in ("yes", "on", "1", "true", "y", "t")
    return bool(value)


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


def _main(args: argparse.Namespace) -> int:
    try:
        return deploy(args)
    except DeployError as e:
        print(f"migbed deploy: {e}", file=sys.stderr)
        return 2


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``migbed deploy`` on the CLI's subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "deploy",
        help="install migbed on lab hosts over SSH (Ansible) and run an experiment across them",
        description=(
            "Install migbed into a venv on the hosts of an Ansible inventory (groups source, "
            "target, monitor), start the services, and with --scenario run a migration from "
            "the first source host to the first target host and fetch the results. "
            "See deploy/README.md."
        ),
    )
    # The order of the calls is the order of `migbed deploy --help`.
    _add_experiment_args(p)
    _add_evacuation_args(p)
    _add_ansible_args(p)
    p.set_defaults(func=_main)
    return p


def _add_experiment_args(p: argparse.ArgumentParser) -> None:
    """The inventory, the experiment, where results go, and what to install or remove."""
    p.add_argument("-i", "--inventory", required=True, help="Ansible inventory of the lab hosts")
    # The flags run, up and deploy share (migbed/cli/args.py), checked by the same code;
    # a scenario (or a comparison) runs an experiment after installing.
    add_scenario_args(p)
    add_dilation_arg(p)
    add_policy_args(p)
    add_out_arg(p, f"{DEFAULT_OUT}: results and Ansible artifacts on this machine")
    p.add_argument(
        "--teardown",
        action="store_true",
        help="stop everything and remove migbed from the hosts (after the experiment, if any)",
    )
    p.add_argument(
        "--no-tls",
        action="store_true",
        help="plaintext gRPC between the hosts (default: mutual TLS with a lab CA kept in OUT/tls)",
    )
    p.add_argument("--rerun", action="store_true", help="run the experiment even if its results exist")


def _add_evacuation_args(p: argparse.ArgumentParser) -> None:
    from migbed.fleet.cli import add_plan_args

    fleet = p.add_argument_group(
        "evacuation (--evacuate)",
        "with --scenario: drain every source host of its guests onto the target hosts, run from "
        "this machine against every host's service (the results in --out: fleet.json, fleet.csv, "
        "results.json, gantt.png); the same plan as `migbed evacuate`",
    )
    fleet.add_argument("--evacuate", action="store_true",
                       help="run an evacuation instead of the one-pair experiment")
    add_plan_args(fleet)
    p.add_argument("--no-progress", action="store_true", help="no progress bar for the evacuation")


def _add_ansible_args(p: argparse.ArgumentParser) -> None:
    """How Ansible reaches the hosts and what it shows."""
    p.add_argument(
        "--check",
        action="store_true",
        help="Ansible check mode: report what would change on the hosts, change nothing",
    )
    p.add_argument("--diff", action="store_true", help="show the changes to files (with --check: would make)")
    p.add_argument("--private-key", help="SSH private key (else the inventory's or ssh's)")
    p.add_argument("--user", help="SSH user (else the inventory's)")
    p.add_argument("--limit", help="Ansible --limit: only these hosts")
    p.add_argument(
        "--wheelhouse",
        help="use this wheelhouse (deps/, project/, runtime.txt) instead of building one",
    )
    p.add_argument(
        "-e",
        "--extra-var",
        dest="extra_vars",
        action="append",
        metavar="NAME=VALUE",
        help="set a playbook variable (deploy/roles/migbed/defaults/main.yml); YAML value",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="also show skipped tasks")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="migbed")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(["deploy", *(argv if argv is not None else sys.argv[1:])])
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
