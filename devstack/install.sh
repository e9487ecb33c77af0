#!/usr/bin/env bash
# Install everything the test suite and the demo stack need (Debian 12, run as root).
# Idempotent and fast when already installed:
#   - Debian packages: dovecot-imapd dovecot-lmtpd postfix libmagic1 openssl ca-certificates
#     (+ postgresql when no server answers on 127.0.0.1:5432 and no initdb is installed)
#   - $REPO/.venv with the project installed editable, test extras included
#   - $REPO/.cache/synapse-venv with matrix-synapse
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$REPO/.venv
SYNAPSE_VENV=$REPO/.cache/synapse-venv
SYNAPSE_SPEC=${SYNAPSE_SPEC:-matrix-synapse==1.163.2}
LOG_DIR=$REPO/.cache/install-logs
PYTHON=${PYTHON:-python3}

say() { printf '[install] %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"
mkdir -p "$LOG_DIR"

# ---------------------------------------------------------------- apt
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
pg_answers() { (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }
have_initdb() { compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; }

need=()
for p in dovecot-imapd dovecot-lmtpd postfix libmagic1 openssl ca-certificates; do
  installed "$p" || need+=("$p")
done
if ! pg_answers && ! have_initdb; then need+=(postgresql); fi

if [ ${#need[@]} -gt 0 ]; then
  say "apt: installing ${need[*]}"
  # "No configuration": Postfix writes no /etc/postfix/main.cf; devstack runs its own instance
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  echo "postfix postfix/mailname string test.local" | debconf-set-selections
  apt-get update -qq >"$LOG_DIR/apt.log" 2>&1 || { tail -20 "$LOG_DIR/apt.log"; die "apt-get update failed"; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" \
    >>"$LOG_DIR/apt.log" 2>&1 || { tail -20 "$LOG_DIR/apt.log"; die "apt-get install failed"; }
else
  say "apt: packages present"
fi

# ---------------------------------------------------------------- project venv
make_venv() {
  local dir=$1
  "$PYTHON" -m venv "$dir" 2>>"$LOG_DIR/venv.log" && return 0
  # Debian's own python3 needs python3-venv for ensurepip
  rm -rf "$dir"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >>"$LOG_DIR/apt.log" 2>&1 \
    || die "cannot install python3-venv"
  /usr/bin/python3 -m venv "$dir" || die "cannot create venv $dir"
}

if [ ! -x "$VENV/bin/python" ]; then
  say "venv: creating $VENV"
  make_venv "$VENV"
fi
stamp=$VENV/.letterbox-pyproject.sha256
want=$(sha256sum "$REPO/pyproject.toml" | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "venv: pip install -e .[test] (log: $LOG_DIR/pip-project.log)"
  "$VENV/bin/python" -m pip install -e "$REPO[test]" >"$LOG_DIR/pip-project.log" 2>&1 \
    || { tail -20 "$LOG_DIR/pip-project.log"; die "pip install of the project failed"; }
  echo "$want" >"$stamp"
else
  say "venv: up to date"
fi

# ---------------------------------------------------------------- synapse venv
if ! "$SYNAPSE_VENV/bin/python" -c 'import synapse' 2>/dev/null; then
  say "synapse: installing $SYNAPSE_SPEC into $SYNAPSE_VENV (log: $LOG_DIR/pip-synapse.log)"
  [ -x "$SYNAPSE_VENV/bin/python" ] || make_venv "$SYNAPSE_VENV"
  "$SYNAPSE_VENV/bin/python" -m pip install "$SYNAPSE_SPEC" >"$LOG_DIR/pip-synapse.log" 2>&1 \
    || { tail -20 "$LOG_DIR/pip-synapse.log"; die "pip install $SYNAPSE_SPEC failed"; }
else
  say "synapse: present"
fi

say "done"
