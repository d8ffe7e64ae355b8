"""The playbooks and roles pass ansible-lint's production profile (deploy/.ansible-lint:
no rules skipped), offline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from deploylab import ROOT


def test_ansible_lint_production_profile() -> None:
    lint = Path(sys.executable).parent / "ansible-lint"
    assert lint.is_file(), f"{lint} missing: ansible-lint is pinned in requirements/dev.txt"
    env = os.environ | {"PATH": f"{lint.parent}{os.pathsep}{os.environ.get('PATH', '')}", "NO_COLOR": "1"}
    proc = subprocess.run(
        [str(lint), "--offline", "--profile", "production", "-f", "pep8"],
        cwd=ROOT / "deploy",
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "production" in proc.stdout + proc.stderr  # the profile it passed
