#!/usr/bin/env bash
# Build the local base image (Debian bookworm + python3, venv, iproute2, CA certs) when no
# registry can be reached: mmdebstrap fetches the packages on the host and the rootfs is
# loaded with `docker import`, so nothing is pulled and nothing runs with network inside a build.
# Usage: images/build-base.sh [TAG]   (default migbed/base:bookworm; no-op if TAG exists)
set -euo pipefail
tag="${1:-migbed/base:bookworm}"
mirror="${MIGBED_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
security="${MIGBED_DEBIAN_SECURITY:-http://deb.debian.org/debian-security}"

if docker image inspect "$tag" >/dev/null 2>&1 && [ "${MIGBED_REBUILD_BASE:-0}" != 1 ]; then
  echo "base image $tag exists; skipping (MIGBED_REBUILD_BASE=1 forces a rebuild)" >&2
  exit 0
fi
if ! command -v mmdebstrap >/dev/null; then
  echo "mmdebstrap not found: installing it from Debian's packages" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null
fi

# Docs, man pages and locales are dead weight in a service image.
mmdebstrap --variant=minbase \
  --include=python3,python3-venv,iproute2,ca-certificates \
  --aptopt='Acquire::Languages "none"' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --customize-hook='rm -rf "$1"/var/cache/apt/*.bin "$1"/var/lib/apt/lists/*' \
  --format=tar \
  bookworm - \
  "deb $mirror bookworm main" \
  "deb $mirror bookworm-updates main" \
  "deb $security bookworm-security main" \
  | docker import \
      --change 'ENV LANG=C.UTF-8' \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'CMD ["/bin/bash"]' \
      --message "migbed base: mmdebstrap bookworm minbase" \
      - "$tag"
echo "built $tag" >&2
