#!/usr/bin/env bash
# Regenerate requirements.txt, the lock file of the runtime dependencies, with their hashes:
# what deploy/install.sh, the Dockerfile and `pip install -r requirements.txt` install. Run it
# after changing `dependencies` in pyproject.toml, and commit the result.
# pip-tools runs from a throwaway virtualenv, so it never joins the project's own.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# Resolve with the oldest interpreter the VMs run (Debian 12's 3.11.2 by default): a dependency
# needed only below some version (redis wants async-timeout before 3.11.3) is then in the lock,
# and newer interpreters install it harmlessly. pip-compile resolves for one interpreter only.
PYTHON="${PYTHON:-$(command -v /usr/bin/python3 || command -v python3)}"
TOOLS="$(mktemp -d)"
trap 'rm -rf "$TOOLS"' EXIT
"$PYTHON" -m venv "$TOOLS"
"$TOOLS/bin/python" -m pip install --quiet --disable-pip-version-check "pip-tools>=7.4"
cd "$ROOT"
CUSTOM_COMPILE_COMMAND="scripts/lock.sh" "$TOOLS/bin/pip-compile" --quiet --generate-hashes --strip-extras --allow-unsafe \
    --no-emit-index-url --no-emit-find-links --no-emit-trusted-host \
    --output-file requirements.txt pyproject.toml
echo "requirements.txt: $(grep -c '^[a-z]' requirements.txt) pinned packages"
