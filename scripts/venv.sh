# Sourced by the other scripts: make (or reuse) .venv with the project and its dev tools.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "python-worker needs Python 3.11 or newer (set PYTHON=/path/to/python3.11)" >&2
    exit 1
fi
if [ ! -x "$ROOT/.venv/bin/python" ]; then
    echo "==> creating $ROOT/.venv"
    "$PYTHON" -m venv "$ROOT/.venv"
fi
VENV="$ROOT/.venv"
# Reinstall only when the project's metadata changed since the last install.
STAMP="$VENV/.installed-$(cat "$ROOT/pyproject.toml" "$ROOT/requirements.txt" | sha1sum | cut -c1-12)-${1:-base}"
if [ ! -f "$STAMP" ]; then
    echo "==> installing python-worker${1:+ with $1 extras} into .venv"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null
    # The locked runtime versions (requirements.txt, checked by hash), as on the VMs; then the
    # project, editable, with its dev tools.
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$ROOT/requirements.txt"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$ROOT${1:+[$1]}"
    rm -f "$VENV"/.installed-*
    touch "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
