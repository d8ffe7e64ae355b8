#!/usr/bin/env bash
# Download Debian's prometheus package and exactly the dependencies the base image lacks
# (resolved against the base image's own dpkg status), into OUT/debs, on the host.
# Usage: images/prometheus/fetch-debs.sh BASE_IMAGE OUT
set -euo pipefail
base="${1:?usage: fetch-debs.sh BASE_IMAGE OUT}"
out="${2:?usage: fetch-debs.sh BASE_IMAGE OUT}"
mkdir -p "$out/debs/partial"
if ls "$out/debs/"prometheus_*.deb >/dev/null 2>&1; then
  echo "prometheus debs already in $out/debs" >&2
  exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
docker run --rm --network none --entrypoint cat "$base" /var/lib/dpkg/status > "$tmp/status"
# The host's apt lists must be bookworm's, like the base: refresh them once if they are empty.
if ! apt-cache show prometheus >/dev/null 2>&1; then apt-get update -qq; fi
apt-get -q -y -o Dir::State::status="$tmp/status" -o Dir::Cache::archives="$out/debs" \
  -o Debug::NoLocking=1 -o APT::Sandbox::User=root \
  install --download-only --no-install-recommends prometheus >&2
rm -rf "$out/debs/partial" "$out/debs/lock"
