"""Where compose.yaml, deploy/, images/, prometheus/ and grafana/ are.

In order: $MIGBED_ROOT (a checkout named explicitly); the checkout this package runs from (an
editable install or bin/migbed); the copy the wheel carries in migbed/_assets/ (setup.py maps
the folders there at build time). When none has what is asked, AssetMissing says where it
looked and how to get it, instead of failing later on a path under site-packages.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
CHECKOUT = PACKAGE_DIR.parent  # the repository root when running from a checkout
WHEEL_COPY = PACKAGE_DIR / "_assets"


class AssetMissing(FileNotFoundError):
    """A file the command needs is in no place migbed looks; str() lists them."""


def candidates() -> list[Path]:
    env = os.environ.get("MIGBED_ROOT")
    return [Path(env)] if env else [CHECKOUT, WHEEL_COPY]


def asset_root(needs: str = "compose.yaml") -> Path:
    """The first candidate folder holding `needs` (a path relative to the repository root)."""
    for root in candidates():
        if (root / needs).exists():
            return root
    looked = ", ".join(str(r / needs) for r in candidates())
    raise AssetMissing(
        f"{needs} not found (looked at {looked}): run from a checkout of migbed, set "
        "MIGBED_ROOT to one, or install the wheel built from it (pip install 'migbed[all]')")


def asset(relative: str) -> Path:
    """The path of one asset, e.g. asset('deploy/install.yml')."""
    return asset_root(relative) / relative


def is_checkout(root: Path) -> bool:
    """True when `root` holds the sources too (images need them to build the migbed wheel)."""
    return (root / "pyproject.toml").is_file() and (root / "migbed" / "__init__.py").is_file()
