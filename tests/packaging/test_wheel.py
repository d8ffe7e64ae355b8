"""Issue 15: the built wheel, installed with its extras into a clean venv OUTSIDE the checkout,
gives every subcommand: each --help, `scenarios`, `run` (two local service processes, a tiny
comparison) and `certs` work from an unrelated directory; the wheel carries compose.yaml,
deploy/, images/, prometheus/ and grafana/, and no test or benchmark code.

Issue 22: the services' home is services/ (no symlink in the tree); they import under one
name, migbed.services, from an installed wheel and from the editable install bin/ makes,
and never as a top-level `services`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from migbed.cli.main import _EXTENSIONS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
ROOT = Path(__file__).resolve().parents[2]
CORE_COMMANDS = ["run", "serve", "status", "health", "cancel", "scenarios"]


def sh(argv: list[str], cwd: Path, timeout: float = 300, env: dict[str, str] | None = None
       ) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=env, check=False)
    assert proc.returncode == 0, f"{' '.join(argv)} -> {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # From a copy: an in-tree build would reuse (and leave) ROOT/build/, whose stale files
    # could end up in the wheel.
    src = out / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "results", ".cache", "__pycache__", "*.egg-info", ".*_cache"))
    shutil.rmtree(src / "images" / "build", ignore_errors=True)
    sh([sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "--no-deps",
        "--no-build-isolation", "-w", str(out), str(src)], cwd=out)
    (whl,) = out.glob("migbed-*.whl")
    return whl


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """A clean venv with 'migbed[all]' from the wheel, and an environment that knows nothing of
    the checkout (no PYTHONPATH, no MIGBED_ROOT, cwd elsewhere)."""
    home = tmp_path_factory.mktemp("elsewhere")
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "MIGBED_ROOT", "VIRTUAL_ENV", "MIGBED_TLS_DIR")}
    sh([sys.executable, "-m", "venv", str(home / "venv")], cwd=home)
    bindir = home / "venv" / "bin"
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    # The wheel's own requirements, resolved by pip; constrained to the lock's versions so the
    # result is the tested set (and pip's cache, filled by bin/_bootstrap.sh, serves it).
    pins = re.findall(r"^([A-Za-z0-9_.-]+==[^\s\\;]+)", (ROOT / "requirements" / "dev.txt").read_text(), re.M)
    (home / "constraints.txt").write_text("\n".join(pins) + "\n")
    sh([str(bindir / "pip"), "install", "-q", "--disable-pip-version-check", "-c", "constraints.txt",
        f"{wheel}[all]"], cwd=home, env=env, timeout=500)
    yield home, env


def test_wheel_contents(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    for needed in ("migbed/_assets/compose.yaml", "migbed/_assets/deploy/install.yml",
                   "migbed/_assets/images/runtime/Dockerfile", "migbed/_assets/prometheus/prometheus.yml",
                   "migbed/comparisons/comparisons.toml", "migbed/scenarios/mlx5-like.toml",
                   "migbed/py.typed", "migbed/services/main.py", "migbed/services/source/engine.py",
                   "migbed/services/target/session.py", "migbed/services/source/Dockerfile"):
        assert needed in names, needed
    for banned in ("testkit/", "tests/", "bench/", "services/", "migbed/_assets/services/",
                   "migbed/_assets/images/build/", "migbed/_assets/.venv"):
        assert not any(n.startswith(banned) for n in names), banned
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(meta).decode()
    assert "Requires-Dist: protobuf<8,>=7.35.1" in text
    for extra in ("stack", "deploy", "report", "qemu", "all"):
        assert f"Provides-Extra: {extra}" in text


def test_every_subcommand_from_a_clean_venv(venv: tuple[Path, dict[str, str]]) -> None:
    home, env = venv
    import migbed

    assert sh(["migbed", "--version"], home, env=env).stdout.strip() == f"migbed {migbed.__version__}"
    assert sh(["python", "-m", "migbed", "--version"], home, env=env).stdout.strip().startswith("migbed ")
    for command in [*CORE_COMMANDS, *_EXTENSIONS]:
        out = sh(["migbed", command, "--help"], home, env=env).stdout
        assert "unavailable" not in out and "usage: migbed" in out, (command, out[:500])
    listing = sh(["migbed", "scenarios"], home, env=env).stdout
    assert "mlx5-like" in listing and "smoke" in listing
    where = sh(["python", "-c", "from migbed.assets import asset; print(asset('deploy/install.yml'))"],
               home, env=env).stdout.strip()
    assert "site-packages/migbed/_assets/deploy/install.yml" in where
    # What `migbed images`/`up`/`deploy` build from: the sources, rebuilt from the installed wheel.
    tree = Path(sh(["python", "-c", "from migbed.assets import source_tree; print(source_tree())"],
                   home, env={**env, "XDG_CACHE_HOME": str(home / "cache")}).stdout.strip())
    assert tree.is_relative_to(home / "cache")
    for part in ("pyproject.toml", "setup.py", "README.md", "compose.yaml", "migbed/cli/main.py",
                 "services/source/Dockerfile", "images/fetch-wheels.sh", "deploy/install.yml"):
        assert (tree / part).is_file(), part
    assert not (tree / "migbed" / "_assets").exists()
    rebuilt = home / "rebuilt"  # the tree builds a wheel again (what images/fetch-wheels.sh does)
    sh([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
        str(rebuilt), str(tree)], home)
    assert len(list(rebuilt.glob("migbed-*.whl"))) == 1


def test_run_and_certs_from_a_clean_venv(venv: tuple[Path, dict[str, str]]) -> None:
    home, env = venv
    proc = sh(["migbed", "run", "--comparison", "smoke", "--policy", "legacy", "--no-report",
               "--out", "out"], home, env=env, timeout=300)
    assert "migbed: run tiny-legacy-0-" in proc.stdout
    assert (home / "out" / "results.jsonl").read_text().count("\n") == 1
    assert (home / "out" / "results.json").is_file()
    sh(["migbed", "certs", "tls"], home, env=env)
    for name in ("ca.pem", "source.pem", "target.pem", "client.pem"):
        assert (home / "tls" / name).is_file(), name


IMPORT_CHECK = """
import importlib.util, migbed.services.source.engine as e, migbed.services.target.session as s
print(e.__file__); print(s.__file__)
print(importlib.util.find_spec("services"))
"""


def test_services_import_under_one_name_from_the_wheel(venv: tuple[Path, dict[str, str]]) -> None:
    home, env = venv
    engine, session, top = sh(["python", "-c", IMPORT_CHECK], home, env=env).stdout.split()
    assert engine.endswith("site-packages/migbed/services/source/engine.py")
    assert session.endswith("site-packages/migbed/services/target/session.py")
    assert top == "None"  # no top-level `services` package installed


def test_services_import_under_one_name_from_the_editable_install(tmp_path: Path) -> None:
    # This interpreter's migbed is bin/_bootstrap.sh's editable install of the checkout: from
    # an unrelated folder with no PYTHONPATH only that install can find the checkout, and the
    # modules it finds are the checkout's own files under services/, named migbed.services.*.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MIGBED_ROOT")}
    engine, session, top = sh([sys.executable, "-c", IMPORT_CHECK], tmp_path, env=env).stdout.split()
    assert Path(engine) == ROOT / "services" / "source" / "engine.py"
    assert Path(session) == ROOT / "services" / "target" / "session.py"
    assert top == "None"


def test_no_symlink_in_the_tree() -> None:
    proc = sh(["git", "ls-files", "-s"], ROOT)
    links = [line.split("\t", 1)[1] for line in proc.stdout.splitlines() if line.startswith("120000")]
    assert not links, f"symlinks in the tree: {links}"
