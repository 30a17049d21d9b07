#!/usr/bin/env bash
# The test command: set up, start a throwaway PostgreSQL on 127.0.0.1, run lint, types
# and the whole test suite on SQLite and PostgreSQL, stop PostgreSQL (also on failure).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test

export RAY_USAGE_STATS_ENABLED=0
export RAY_AUTH_MODE=disabled   # throwaway local clusters in tests: no token auth

# shellcheck source=scripts/pg.sh
source scripts/pg.sh
pg_start
trap pg_stop EXIT

echo "== ruff"; .venv/bin/ruff check . && .venv/bin/ruff format --check . >/dev/null
echo "== mypy"; .venv/bin/mypy
echo "== pytest"
.venv/bin/python -m pytest -q --hypothesis-profile=ci "$@"
