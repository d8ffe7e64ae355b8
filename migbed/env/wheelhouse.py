"""The wheelhouse the lab hosts install from: the pinned runtime wheels and the migbed wheel
(images/fetch-wheels.sh), and its fingerprint (the hosts reinstall when it changes)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import TextIO

from migbed.env.ansible import DeployError


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
