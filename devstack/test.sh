#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine: installs what is missing, then runs pytest.
# The tests start (and stop) their own Synapse, Dovecot, Postfix and, if needed, PostgreSQL.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
"$repo/devstack/install.sh"
cd "$repo"
exec "$repo/.venv/bin/python" -m pytest "$@"
