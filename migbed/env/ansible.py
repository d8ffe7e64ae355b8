"""Ansible on the control machine: where deploy/ is, the environment ansible-runner gets, and
the lab's inventory (groups and host variables) as ansible-inventory reads it."""

from __future__ import annotations

import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class DeployError(Exception):
    """A problem found before or while running the playbooks; str() is the message to show."""





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





@dataclass
class Inventory:
    """The groups of an inventory, each with every host in it (children included)."""

    groups: dict[str, list[str]]
    # Each host's variables as the inventory sets them (templates not rendered).
    hostvars: dict[str, dict[str, Any]] = field(default_factory=dict)

    def hosts(self, group: str) -> list[str]:
        return self.groups.get(group, [])


def ansible_env(root: Path) -> dict[str, str]:
    return {
        "ANSIBLE_CONFIG": str(root / "deploy" / "ansible.cfg"),
        # ansible-runner turns host key checking off unless told; ansible.cfg decides instead
        # (accept-new: a host seen for the first time is trusted, a changed key fails).
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
    }


def ansible_on_path() -> None:
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
    ansible_on_path()
    with tempfile.TemporaryDirectory(prefix="migbed-inv-") as tmp:
        out, err = ansible_runner.get_inventory(
            action="list",
            inventories=[str(path)],
            response_format="json",
            quiet=True,
            private_data_dir=tmp,
            envvars=ansible_env(root),
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
