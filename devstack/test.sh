#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine: installs what is missing, runs the static
# checks (ruff, mypy --strict on bridge/), then pytest.
# The tests start (and stop) their own Synapse, Dovecot, Postfix and, if needed, PostgreSQL.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
"$repo/devstack/install.sh"
cd "$repo"
# Static checks first (configured in pyproject.toml): lint everything, type-check bridge/ strictly.
"$repo/.venv/bin/python" -m ruff check --quiet .
"$repo/.venv/bin/python" -m mypy
# Two pytest workers, each with its own Synapse, Dovecot, Postfix (the servers spend much of a
# test waiting): the long tests are collected first and work is stolen between the workers.
exec "$repo/.venv/bin/python" -m pytest -n 2 --dist worksteal "$@"
