#!/usr/bin/env bash
# Build the lab-host image used by tests/deploy: a Debian bookworm "machine" with sshd, sudo,
# python3-venv, iproute2 and Debian's prometheus, FROM the project's base image.
#
# Nothing runs with network inside the build. The .deb files are chosen and fetched on the host:
#   1. a throw-away container of the base image, with no network and the host's apt package
#      lists mounted read-only, runs `apt-get install -s` to list exactly the packages (and
#      versions) the base image lacks;
#   2. the host's own apt fetches those files with `apt-get download NAME=VERSION`;
#   3. the classic builder installs them with `dpkg -i` (no index, no network).
# Usage: deploy/labhost/build.sh [TAG]   (default migbed/labhost:bookworm; a no-op when an image
# with the same inputs exists; MIGBED_REBUILD_LABHOST=1 forces a rebuild)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
tag="${1:-migbed/labhost:bookworm}"
base="${MIGBED_BASE_IMAGE:-migbed/base:bookworm}"
packages=(openssh-server sudo python3-venv iproute2 prometheus)
# MIGBED_LABHOST_SYSTEMD=1: also systemd, for a lab host whose PID 1 is systemd (run with
# /lib/systemd/systemd as its command; tests/deploy tests the systemd units on it).
if [ "${MIGBED_LABHOST_SYSTEMD:-0}" = 1 ]; then packages+=(systemd dbus); fi
cache="${MIGBED_LABHOST_CACHE:-$root/.cache/labhost}"

# The base image belongs to images/: build it with its own script (a no-op when it exists).
if ! docker image inspect "$base" >/dev/null 2>&1; then
  echo "labhost: base image $base missing: building it with images/build-base.sh" >&2
  "$root/images/build-base.sh" "$base"
fi
base_id="$(docker image inspect -f '{{.Id}}' "$base")"
inputs="$( (echo "$base_id ${packages[*]}"; cat "$here/Dockerfile" "$here/entrypoint.sh" "$here/sshd_config") \
  | sha256sum | cut -c1-16)"
if [ "${MIGBED_REBUILD_LABHOST:-0}" != 1 ] \
  && [ "$(docker image inspect -f '{{index .Config.Labels "migbed.labhost.inputs"}}' "$tag" 2>/dev/null)" = "$inputs" ]; then
  echo "labhost: $tag is up to date" >&2
  exit 0
fi

simulate() {
  docker run --rm --network none -v /var/lib/apt/lists:/var/lib/apt/lists:ro "$base" \
    apt-get install -s -qq --no-install-recommends "${packages[@]}"
}
# The host's package lists answer for the base image's sources (both are bookworm from the
# same mirror). Without lists, or when they are too old to download from, refresh them once.
if ! plan="$(simulate 2>&1)" || ! grep -q '^Inst ' <<<"$plan"; then
  apt-get update -qq
  plan="$(simulate)"
fi
mapfile -t wanted < <(sed -n 's/^Inst \([^ ]*\) (\([^ ]*\) .*/\1=\2/p' <<<"$plan")
[ "${#wanted[@]}" -gt 0 ] || { echo "labhost: nothing to install? apt said:" >&2; echo "$plan" >&2; exit 1; }

ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$cache/debs" "$ctx/debs"
missing=()
for nv in "${wanted[@]}"; do
  name="${nv%%=*}" ver="${nv#*=}"
  # apt-get download names files NAME_VERSION_ARCH.deb with ':' in the version as %3a.
  f="$(ls "$cache/debs/${name}_${ver//:/%3a}_"*.deb 2>/dev/null | head -n1 || true)"
  if [ -n "$f" ]; then cp "$f" "$ctx/debs/"; else missing+=("$nv"); fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "labhost: downloading ${#missing[@]} packages on the host" >&2
  if ! (cd "$cache/debs" && apt-get download -qq -o APT::Sandbox::User=root "${missing[@]}"); then
    apt-get update -qq
    (cd "$cache/debs" && apt-get download -qq -o APT::Sandbox::User=root "${missing[@]}")
  fi
  for nv in "${missing[@]}"; do
    name="${nv%%=*}" ver="${nv#*=}"
    cp "$cache/debs/${name}_${ver//:/%3a}_"*.deb "$ctx/debs/"
  done
fi
cp "$here/Dockerfile" "$here/entrypoint.sh" "$here/sshd_config" "$ctx/"
# The classic builder can build FROM a local image (no registry); its deprecation notice is noise.
if ! log="$(DOCKER_BUILDKIT=0 docker build --force-rm --build-arg "BASE_IMAGE=$base" \
  --label "migbed.labhost.inputs=$inputs" -t "$tag" "$ctx" 2>&1)"; then
  echo "$log" >&2
  exit 1
fi
echo "labhost: built $tag (${#wanted[@]} packages added to $base)" >&2
