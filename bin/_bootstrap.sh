# Sourced by bin/migbed and bin/test: make .venv with the locked dependencies, once.
# requirements/dev.txt is a generated, hashed lock (bin/lock); pip checks every hash.
# Re-runs pip only when requirements or pyproject change (a stamp holds their hash).
set -euo pipefail
MIGBED_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MIGBED_VENV:-$MIGBED_ROOT/.venv}"
stamp="$VENV/.migbed-deps"
want="$(cat "$MIGBED_ROOT/requirements/"*.txt "$MIGBED_ROOT/pyproject.toml" "$MIGBED_ROOT/setup.py" | sha256sum | cut -c1-16)"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "migbed: setting up $VENV (pinned dependencies, first run only)" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check --require-hashes \
    -r "$MIGBED_ROOT/requirements/dev.txt"
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps -e "$MIGBED_ROOT"
  echo "$want" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"
