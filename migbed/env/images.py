"""Build or find every image the compose stack needs, with or without a container registry.

Order: base -> runtime (shared stage: venv + wheels) -> source, target; and Prometheus.
- base: ``MIGBED_BASE_IMAGE`` if set; else the local ``migbed/base:bookworm`` if it exists;
  else ``python:3.11-slim-bookworm`` if it can be pulled; else built with mmdebstrap
  (images/build-base.sh), which needs only Debian's package mirror on the host.
- Python dependencies come from wheels fetched on the host (images/fetch-wheels.sh): no build
  ever needs network when the base already has python3 and iproute2.
- Prometheus: the official image where it can be pulled, else Debian's package on the base.
- Grafana: only where it can be pulled (no build exists for these machines).

The base and the Prometheus fallback are built once and then reused (slow to make, never
change); runtime/source/target are rebuilt every time, which costs seconds thanks to the
layer cache, so a changed checkout is never run from a stale image.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors

from migbed.assets import CHECKOUT, AssetMissing, is_checkout, source_tree

# The sources the images are built from: a checkout, or one assembled from the installed wheel.
try:
    ROOT = source_tree()
except AssetMissing:
    ROOT = CHECKOUT  # ensure_images says what is missing
IMAGES_DIR = ROOT / "images"
BUILD_DIR = IMAGES_DIR / "build"  # generated contexts (images/.gitignore)
# The image names of the last build, beside compose.yaml: plain `docker compose up` reads it
# (git-ignored; a user's own lines in it are kept).
COMPOSE_ENV_FILE = ROOT / ".env"
ENV_MARK = "# migbed images: the images compose.yaml runs (never pulled); rewritten by `migbed images`"

LOCAL_BASE = "migbed/base:bookworm"
PULLABLE_BASE = "python:3.11-slim-bookworm"
RUNTIME = "migbed/runtime:latest"
SOURCE = "migbed/source:latest"
TARGET = "migbed/target:latest"
PROMETHEUS_OFFICIAL = "prom/prometheus:v2.53.4"
PROMETHEUS_LOCAL = "migbed/prometheus:2.42-bookworm"
GRAFANA = "grafana/grafana-oss:11.6.1"
PULL_TIMEOUT_S = 600

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class ImageSet:
    """What compose.yaml gets through its MIGBED_*_IMAGE variables."""

    base: str
    runtime: str
    source: str
    target: str
    prometheus: str
    grafana: str | None  # None: cannot be had here, dashboards are skipped

    def compose_env(self) -> dict[str, str]:
        env = {
            "MIGBED_RUNTIME_IMAGE": self.runtime,
            "MIGBED_SOURCE_IMAGE": self.source,
            "MIGBED_TARGET_IMAGE": self.target,
            "MIGBED_PROMETHEUS_IMAGE": self.prometheus,
        }
        if self.grafana:
            env["MIGBED_GRAFANA_IMAGE"] = self.grafana
        if self.base:
            env["MIGBED_BASE_IMAGE"] = self.base  # the build: sections' base
        return env

    def write_env_file(self, path: Path = COMPOSE_ENV_FILE) -> Path:
        """The image names into the .env compose reads beside compose.yaml, so plain
        `docker compose up` finds them; other lines of the file stay as they were."""
        keep = _foreign_lines(path)
        ours = [ENV_MARK, *(f"{k}={v}" for k, v in self.compose_env().items())]
        path.write_text("\n".join([*keep, *ours]) + "\n")
        return path


def _foreign_lines(path: Path) -> list[str]:
    """The lines of an env file that migbed did not write (a user's own settings)."""
    if not path.is_file():
        return []
    return [line for line in path.read_text().splitlines()
            if line != ENV_MARK and line.partition("=")[0].strip() not in IMAGE_VARS]


def clear_env_file(path: Path = COMPOSE_ENV_FILE) -> None:
    """The image names out of the .env (removed when nothing else is in it)."""
    keep = _foreign_lines(path)
    if keep:
        path.write_text("\n".join(keep) + "\n")
    else:
        path.unlink(missing_ok=True)


IMAGE_VARS = ("MIGBED_RUNTIME_IMAGE", "MIGBED_SOURCE_IMAGE", "MIGBED_TARGET_IMAGE",
              "MIGBED_PROMETHEUS_IMAGE", "MIGBED_GRAFANA_IMAGE", "MIGBED_BASE_IMAGE")


def compose_env_defaults() -> dict[str, str]:
    """The image variables compose.yaml needs, as the last `migbed images` wrote them, else
    the names it builds by default (enough for `config` and `down`, which run nothing)."""
    env = {
        "MIGBED_RUNTIME_IMAGE": RUNTIME,
        "MIGBED_SOURCE_IMAGE": SOURCE,
        "MIGBED_TARGET_IMAGE": TARGET,
        "MIGBED_PROMETHEUS_IMAGE": PROMETHEUS_LOCAL,
    }
    if COMPOSE_ENV_FILE.is_file():
        for line in COMPOSE_ENV_FILE.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() in IMAGE_VARS:
                env[key.strip()] = value.strip()
    return env


def client() -> docker.DockerClient:
    try:
        c = docker.from_env(version="auto")
        c.ping()
    except docker.errors.DockerException as e:
        raise RuntimeError(f"cannot reach the Docker engine: {e}") from None
    return c


def image_exists(c: docker.DockerClient, name: str) -> bool:
    try:
        c.images.get(name)
    except docker.errors.ImageNotFound:
        return False
    return True


def try_pull(name: str, log: Log = _stderr) -> bool:
    """Pull ``name``; False when no registry answers (air-gapped machines say so at once)."""
    # The CLI rather than the SDK: it honours the user's registry mirrors and credentials.
    log(f"pulling {name} ...")
    try:
        res = subprocess.run(
            ["docker", "pull", "-q", name],
            capture_output=True,
            text=True,
            timeout=PULL_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        log(f"pull {name}: no answer in {PULL_TIMEOUT_S} s")
        return False
    if res.returncode != 0:
        reason = (res.stderr.strip().splitlines() or ["?"])[-1]
        log(f"pull {name}: not available ({reason[:160]})")
        return False
    return True


def have_or_pull(c: docker.DockerClient, name: str, log: Log = _stderr) -> bool:
    return image_exists(c, name) or try_pull(name, log)


def build(
    c: docker.DockerClient,
    tag: str,
    context: Path,
    dockerfile: Path,
    buildargs: dict[str, str] | None = None,
    log: Log = _stderr,
) -> None:
    """``docker build`` through the SDK (classic builder: FROM a local image works)."""
    log(f"building {tag} ({dockerfile.relative_to(ROOT)})")
    stream: Any = c.api.build(
        path=str(context),
        dockerfile=str(dockerfile),
        tag=tag,
        buildargs=buildargs or {},
        rm=True,
        forcerm=True,
        pull=False,
        decode=True,
    )
    tail: list[str] = []
    for chunk in stream:
        if "error" in chunk:
            detail = "".join(tail[-20:])
            raise RuntimeError(f"building {tag} failed: {chunk['error'].strip()}\n{detail}")
        text = chunk.get("stream", "")
        if text:
            tail.append(text)
            if os.environ.get("MIGBED_BUILD_VERBOSE"):
                log(text.rstrip())


def _run_script(argv: list[str]) -> None:
    res = subprocess.run(argv, cwd=ROOT, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed (exit {res.returncode})")


def ensure_base(c: docker.DockerClient, log: Log = _stderr) -> str:
    wanted = os.environ.get("MIGBED_BASE_IMAGE")
    if wanted:
        if not have_or_pull(c, wanted, log):
            raise RuntimeError(f"MIGBED_BASE_IMAGE={wanted} is neither local nor pullable")
        return wanted
    if image_exists(c, LOCAL_BASE):
        return LOCAL_BASE
    if try_pull(PULLABLE_BASE, log):
        return PULLABLE_BASE
    log(f"no registry: building {LOCAL_BASE} from Debian packages (mmdebstrap, ~1 min)")
    _run_script([str(IMAGES_DIR / "build-base.sh"), LOCAL_BASE])
    return LOCAL_BASE


def ensure_prometheus(c: docker.DockerClient, base: str, log: Log = _stderr) -> str:
    if image_exists(c, PROMETHEUS_LOCAL):
        return PROMETHEUS_LOCAL
    if have_or_pull(c, PROMETHEUS_OFFICIAL, log):
        return PROMETHEUS_OFFICIAL
    log(f"building {PROMETHEUS_LOCAL} from Debian's prometheus package")
    ctx = prometheus_context(base)
    build(c, PROMETHEUS_LOCAL, ctx, IMAGES_DIR / "prometheus" / "Dockerfile", {"BASE_IMAGE": base})
    return PROMETHEUS_LOCAL


def prometheus_context(base: str) -> Path:
    """The Prometheus image's build context (Debian's packages fetched on the host), made if
    missing: compose.yaml's `build:` section uses the same folder."""
    ctx = BUILD_DIR / "prometheus"
    _run_script([str(IMAGES_DIR / "prometheus" / "fetch-debs.sh"), base, str(ctx)])
    return ctx


def ensure_images(*, grafana: bool = True, log: Log = _stderr) -> ImageSet:
    """Make every image exist; returns the names to run."""
    if not is_checkout(ROOT):
        raise RuntimeError(f"building the images needs the migbed sources (pyproject.toml, migbed/, "
                           f"services/, images/); {ROOT} has none: run from a checkout or set "
                           "MIGBED_ROOT to one")
    c = client()
    base = ensure_base(c, log)
    ctx = BUILD_DIR / "runtime"
    _run_script([str(IMAGES_DIR / "fetch-wheels.sh"), str(ctx)])
    build(c, RUNTIME, ctx, IMAGES_DIR / "runtime" / "Dockerfile", {"BASE_IMAGE": base})
    for tag, role in ((SOURCE, "source"), (TARGET, "target")):
        folder = ROOT / "services" / role
        # The role Dockerfiles only add metadata: an empty-ish context is enough.
        build(c, tag, folder, folder / "Dockerfile", {"RUNTIME_IMAGE": RUNTIME})
    prometheus = ensure_prometheus(c, base, log)
    graf: str | None = None
    if grafana and have_or_pull(c, GRAFANA, log):
        graf = GRAFANA
    imgs = ImageSet(base, RUNTIME, SOURCE, TARGET, prometheus, graf)
    log(f"image names for plain `docker compose`: {imgs.write_env_file()}")
    return imgs


def remove_images(*, include_base: bool = False, log: Log = _stderr) -> None:
    """Remove the images migbed built (not pulled ones); the base only when asked."""
    c = client()
    names = [SOURCE, TARGET, RUNTIME, PROMETHEUS_LOCAL]
    if include_base:
        names.append(LOCAL_BASE)
    for name in names:
        try:
            c.images.remove(name)
            log(f"removed {name}")
        except docker.errors.ImageNotFound:
            pass
    clear_env_file()  # plain compose now says what to run instead of failing on a missing image
