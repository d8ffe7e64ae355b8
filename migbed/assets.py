"""Where compose.yaml, deploy/, images/, prometheus/ and grafana/ are.

In order: $MIGBED_ROOT (a checkout named explicitly); the checkout this package runs from (an
editable install or bin/migbed); the copy the wheel carries in migbed/_assets/ (setup.py maps
the folders there at build time). When none has what is asked, AssetMissing says where it
looked and how to get it, instead of failing later on a path under site-packages.

Building the images (and the lab hosts' wheelhouse) needs the sources as well: source_tree()
is the checkout, or, for an installed wheel, a source tree assembled once from the installed
packages and the wheel's copy of the top-level folders (under ~/.cache/migbed/).
"""

from __future__ import annotations

import hashlib
import os
import shutil
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


def _installed_fingerprint() -> str:
    """Changes whenever the installed package does (its version and its files' list)."""
    from importlib import metadata

    from migbed import __version__

    h = hashlib.sha256(__version__.encode())
    try:
        files = metadata.files("migbed") or []
        for f in sorted(str(x) for x in files):
            h.update(f.encode())
        h.update(str(metadata.distribution("migbed")._path).encode())  # type: ignore[attr-defined]
    except metadata.PackageNotFoundError:
        h.update(str(PACKAGE_DIR).encode())
    return h.hexdigest()[:12]


def source_tree() -> Path:
    """A folder with pyproject.toml, setup.py, migbed/, services/ and the top-level folders."""
    for root in candidates():
        if is_checkout(root):
            return root
    if not (WHEEL_COPY / "pyproject.toml").is_file():
        raise AssetMissing(f"no migbed sources: {', '.join(map(str, candidates()))} hold none; run "
                           "from a checkout of migbed or set MIGBED_ROOT to one")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "migbed"
    dest = cache / f"source-{_installed_fingerprint()}"
    if not (dest / ".complete").is_file():
        _assemble(dest)
    return dest


def _assemble(dest: Path) -> None:
    import migbed.services  # services/ (setup.py maps it to this name): in a wheel, migbed/services/

    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "_assets", "services")
    shutil.copytree(WHEEL_COPY, tmp, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copytree(PACKAGE_DIR, tmp / "migbed", ignore=skip)
    # The checkout's shape: services/ at the top (setup.py maps it to migbed.services).
    shutil.copytree(Path(migbed.services.__file__).resolve().parent, tmp / "services",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (tmp / ".complete").write_text("assembled from the installed migbed package\n")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
