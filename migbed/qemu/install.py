"""Find and check what a real-QEMU comparison needs: QEMU >= 9.0, a kernel, our guest /init.

`python -m migbed.qemu.install --setup` (run by bin/test) installs what is missing: QEMU
from bookworm-backports (Debian bookworm's own 7.2 corrupts TCG guests that dirty memory
during migration), a Debian kernel extracted into the cache (nothing installed on the
host), and the guest program compiled static. Everything else only *checks* and raises
QemuSetupError with what is missing and the command that fixes it.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

MIN_VERSION = (9, 0)
TOO_OLD_BUG = ("under TCG it loses pages dirtied during migration and corrupts the guest "
               "(upstream commit 03bfc2188f, \"physmem: Fix migration dirty bitmap coherency "
               "with TCG memory access\", first in QEMU 9.0)")
BACKPORTS_LIST = Path("/etc/apt/sources.list.d/migbed-bookworm-backports.list")
BACKPORTS_LINE = "deb http://deb.debian.org/debian bookworm-backports main\n"
KERNEL_META_PACKAGE = "linux-image-amd64"
SETUP_HINT = "run `.venv/bin/python -m migbed.qemu.install --setup` (bin/test does it)"


class QemuSetupError(RuntimeError):
    """Something the comparison needs is missing or unusable; str() says what and how to fix."""


@dataclass(frozen=True)
class QemuBinary:
    path: str
    version: tuple[int, int, int]
    version_text: str


@dataclass(frozen=True)
class GuestFiles:
    qemu: QemuBinary
    kernel: Path
    init: Path  # the static guest program


def cache_dir() -> Path:
    base = os.environ.get("MIGBED_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "migbed")
    return Path(base) / "qemu"


def parse_version(text: str) -> tuple[int, int, int]:
    """'QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-...)' -> (10, 0, 2)."""
    m = re.search(r"version (\d+)\.(\d+)(?:\.(\d+))?", text)
    if not m:
        raise QemuSetupError(f"cannot read a QEMU version from {text.strip()[:120]!r}")
    return int(m[1]), int(m[2]), int(m[3] or 0)


def check_version(version: tuple[int, int, int], path: str = "qemu-system-x86_64") -> None:
    if version[:2] < MIN_VERSION:
        shown = ".".join(map(str, version))
        raise QemuSetupError(
            f"{path} is QEMU {shown}, older than {MIN_VERSION[0]}.{MIN_VERSION[1]}: {TOO_OLD_BUG}. "
            f"Install QEMU >= 9.0 (Debian: qemu-system-x86 from bookworm-backports); {SETUP_HINT}")


def find_qemu() -> QemuBinary:
    path = os.environ.get("MIGBED_QEMU") or shutil.which("qemu-system-x86_64")
    if not path:
        raise QemuSetupError(f"qemu-system-x86_64 not found (QEMU >= 9.0 is needed); {SETUP_HINT}")
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise QemuSetupError(f"cannot run {path} --version: {e}") from None
    version = parse_version(out.stdout)
    check_version(version, path)
    return QemuBinary(path, version, out.stdout.splitlines()[0] if out.stdout else "")


def guest_source() -> bytes:
    return resources.files("migbed.qemu").joinpath("guest/init.c").read_bytes()


def init_path() -> Path:
    """The compiled guest program, named by the hash of its source: an edit rebuilds it."""
    digest = hashlib.sha256(guest_source()).hexdigest()[:12]
    return cache_dir() / f"init-{digest}"


def kernel_path() -> Path:
    return cache_dir() / "vmlinuz"


def find_guest_files() -> GuestFiles:
    qemu = find_qemu()
    kernel, init = kernel_path(), init_path()
    if not kernel.is_file():
        raise QemuSetupError(f"no guest kernel at {kernel}; {SETUP_HINT}")
    if not init.is_file():
        raise QemuSetupError(f"the guest program is not built ({init} missing); {SETUP_HINT}")
    return GuestFiles(qemu, kernel, init)


# ---------------------------------------------------------------- set-up (bin/test)


def build_init() -> Path:
    out = init_path()
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "init.c"
        src.write_bytes(guest_source())
        cmd = ["gcc", "-static", "-O2", "-Wall", "-o", str(Path(tmp) / "init"), str(src)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise QemuSetupError(f"cannot compile the guest program: {' '.join(cmd)}\n{done.stderr}")
        shutil.move(str(Path(tmp) / "init"), out)
    return out


def _run(cmd: list[str], cwd: str | None = None) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if done.returncode != 0:
        raise QemuSetupError(f"`{' '.join(cmd)}` failed:\n{done.stderr[-2000:]}")
    return done.stdout


def fetch_kernel() -> Path:
    """Debian's kernel image, downloaded and unpacked into the cache (not installed)."""
    out = kernel_path()
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    m = re.search(r"Depends: (linux-image-\S+)", _apt_depends(KERNEL_META_PACKAGE))
    if not m:  # a fresh machine may have no package lists yet
        _apt("update", "-qq")
        m = re.search(r"Depends: (linux-image-\S+)", _apt_depends(KERNEL_META_PACKAGE))
    if not m:
        raise QemuSetupError(f"apt-cache depends {KERNEL_META_PACKAGE}: no kernel package named")
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)  # apt's sandbox user must be able to write the download here
        _run(["apt-get", "download", "-q", m[1]], cwd=tmp)
        deb = next(Path(tmp).glob("*.deb"))
        _run(["dpkg-deb", "-x", str(deb), tmp])
        images = sorted(Path(tmp, "boot").glob("vmlinuz-*"))
        if not images:
            raise QemuSetupError(f"{deb.name} holds no boot/vmlinuz-*")
        shutil.copyfile(images[0], out)
    return out


def _apt_depends(package: str) -> str:
    done = subprocess.run(["apt-cache", "depends", package], capture_output=True, text=True)
    return done.stdout if done.returncode == 0 else ""


def ensure_compiler() -> None:
    """gcc and a static C library (libc6-dev) to build the guest program."""
    if shutil.which("gcc") and Path("/usr/lib/x86_64-linux-gnu/libc.a").exists():
        return
    print("migbed.qemu: installing gcc libc6-dev (to build the guest program)", file=sys.stderr)
    _apt("update", "-qq")
    _apt("install", "-y", "-qq", "--no-install-recommends", "gcc", "libc6-dev")


def _apt(*args: str) -> None:
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    _run([*sudo, "apt-get", *args])


def install_qemu() -> QemuBinary:
    """qemu-system-x86 from bookworm-backports, only when missing or older than 9.0."""
    try:
        return find_qemu()
    except QemuSetupError as e:
        print(f"migbed.qemu: {e}\nmigbed.qemu: installing qemu-system-x86 from bookworm-backports",
              file=sys.stderr)
    if not BACKPORTS_LIST.exists():
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        subprocess.run([*sudo, "tee", str(BACKPORTS_LIST)], input=BACKPORTS_LINE, text=True,
                       check=True, stdout=subprocess.DEVNULL)
    _apt("update", "-qq")
    _apt("install", "-y", "-qq", "--no-install-recommends", "-t", "bookworm-backports",
         "qemu-system-x86")
    return find_qemu()


def setup() -> GuestFiles:
    qemu = install_qemu()
    kernel = fetch_kernel()
    ensure_compiler()
    init = build_init()
    return GuestFiles(qemu, kernel, init)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m migbed.qemu.install", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--setup", action="store_true", help="install what is missing (apt, kernel, gcc)")
    args = p.parse_args(argv)
    try:
        files = setup() if args.setup else find_guest_files()
    except QemuSetupError as e:
        print(f"migbed.qemu: error: {e}", file=sys.stderr)
        return 2
    print(f"{files.qemu.version_text} ({files.qemu.path})\nkernel {files.kernel}\nguest  {files.init}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
