#!/usr/bin/env bash
# Fill a build context with every wheel the images install, fetched on the host, so that
# `pip install --no-index` inside the build needs no network.
#   OUT/deps/    the pinned runtime wheels (requirements/runtime.txt, or the file named by
#                MIGBED_REQUIREMENTS) for CPython 3.11 x86_64
#   OUT/project/ the migbed wheel built from this checkout
# Usage: images/fetch-wheels.sh OUT   (deps are re-downloaded only when runtime.txt changes)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:?usage: fetch-wheels.sh OUT_DIR}"
py="${MIGBED_PYTHON:-$root/.venv/bin/python}"
[ -x "$py" ] || py=python3
mkdir -p "$out/deps" "$out/project"
reqs="${MIGBED_REQUIREMENTS:-$root/requirements/runtime.txt}"
cp "$reqs" "$out/runtime.txt"

want="$(sha256sum "$reqs" | cut -c1-16)"
if [ "$(cat "$out/deps/.stamp" 2>/dev/null)" != "$want" ]; then
  rm -f "$out/deps/"*.whl
  # The image's python is Debian bookworm's 3.11 (glibc 2.36): any manylinux tag up to 2_36 fits.
  "$py" -m pip download -q --disable-pip-version-check -d "$out/deps" \
    -r "$reqs" \
    --only-binary=:all: --implementation cp --python-version 3.11 --abi cp311 --abi abi3 --abi none \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_34_x86_64 --platform any
  echo "$want" > "$out/deps/.stamp"
fi

# Build the project wheel: with the host venv's setuptools when it can (no index needed),
# else in pip's isolated build env (fetches setuptools from the index on the host).
rm -f "$out/project/"*.whl
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cp -r "$root/pyproject.toml" "$root/setup.py" "$root/migbed" "$root/services" "$tmp/"
[ -f "$root/README.md" ] && cp "$root/README.md" "$tmp/"
find "$tmp" -name __pycache__ -prune -exec rm -rf {} +
# A fixed timestamp keeps the wheel byte-identical when the code is unchanged (cached layer).
export SOURCE_DATE_EPOCH=315532800
"$py" -m pip wheel -q --disable-pip-version-check --no-deps --no-build-isolation \
    -w "$out/project" "$tmp" >/dev/null 2>&1 \
  || "$py" -m pip wheel -q --disable-pip-version-check --no-deps -w "$out/project" "$tmp" >/dev/null
echo "wheels in $out: $(ls "$out/deps" | grep -c whl) dependencies + $(ls "$out/project")" >&2
