#!/usr/bin/env bash
# Full local demo on loopback: real Synapse, Dovecot and Postfix, the rig's OAuth issuer, the bridge
# on SQLite, the demo mailbox alice@test.local logged in, one message bridged each way, and
# carol@test.local signed in with OAuth (at the rig's issuer) with one mail to her.
#   ./devstack/demo.sh          bring everything up (idempotent) and run the demo conversation
#   ./devstack/demo.sh down     stop the bridge and the servers
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
demo="$repo/demo"
py="$repo/.venv/bin/python"

stop_bridge() {
  if [ -s "$demo/bridge.pid" ] && kill -0 "$(cat "$demo/bridge.pid")" 2>/dev/null; then
    kill "$(cat "$demo/bridge.pid")"
    for _ in $(seq 50); do kill -0 "$(cat "$demo/bridge.pid")" 2>/dev/null || break; sleep 0.1; done
    echo "[demo] bridge stopped"
  fi
  rm -f "$demo/bridge.pid"
}

if [ "${1:-up}" = down ]; then
  stop_bridge
  cd "$repo" && "$py" -m devstack down --root "$demo/stack"
  exit 0
fi

"$repo/devstack/install.sh"
mkdir -p "$demo"
cd "$repo"
stop_bridge
"$py" -m devstack.demo configure --dir "$demo"
"$py" -m devstack up --root "$demo/stack" --registration "$demo/registration.yaml"
# The log may name users and rooms: readable by its owner only, like everything the bridge writes.
(umask 077; touch "$demo/bridge.log"); chmod 600 "$demo/bridge.log"
setsid "$py" -m bridge -c "$demo/config.yaml" >>"$demo/bridge.log" 2>&1 </dev/null &
echo $! >"$demo/bridge.pid"
echo "[demo] bridge started (pid $(cat "$demo/bridge.pid"), log $demo/bridge.log)"
"$py" -m devstack.demo converse --dir "$demo"
