#!/usr/bin/env bash
# Set everything up and run the worker end to end on the embedded in-memory broker.
set -euo pipefail
source "$(dirname "$0")/venv.sh"
cd "$ROOT"
exec python-worker demo "$@"
