#!/usr/bin/env bash
# Set everything up (venv, dev tools, RabbitMQ, Redis and promtool for the integration tests) and
# run every check: ruff, import-linter, mypy on src/, pytest. Extra arguments go to pytest.
set -euo pipefail
source "$(dirname "$0")/venv.sh" dev
cd "$ROOT"
if [ -z "${RABBITMQ_URL:-}" ]; then
    bash scripts/ensure-rabbitmq.sh
fi
bash scripts/ensure-redis.sh  # redis-server: the Redis tests start private instances of it
bash scripts/ensure-prometheus.sh  # promtool, for the alert rules' tests
echo "==> ruff"
ruff check src devtools tests bench scripts worker.py
ruff format --check src devtools tests bench scripts worker.py
echo "==> import-linter"
lint-imports
echo "==> mypy (strict) on src/"
mypy
echo "==> pytest"
exec pytest "$@"
