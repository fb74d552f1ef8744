#!/usr/bin/env bash
# `make demo`: the main job on the embedded default. Starts a private Postgres, a Temporal dev
# server and the Microsoft/CIPP simulator (a generated MSP), then the API and a worker, and
# drives the wizard through the API: connect via CIPP, discover, preview, confirm, initial
# sync, summary. Everything keeps running afterwards; `make stop` stops it.
source "$(dirname "$0")/lib.sh"
RUN="$ROOT/.run/demo"
SEED="${DEMO_SEED:-42}"; TENANTS="${DEMO_TENANTS:-20}"; USERS="${DEMO_USERS:-5000}"

phase tools ensure_tools
cd "$ROOT"
phase build cargo build --bins
BIN="$ROOT/target/debug"

bash "$ROOT/deploy/scripts/stop.sh" >/dev/null 2>&1 || true
rm -rf "$RUN" && mkdir -p "$RUN"

start_services() {
  DATABASE_URL=$(pg_start "$RUN/postgres")
  TEMPORAL_ADDRESS=$(temporal_start "$RUN/temporal")
  export DATABASE_URL TEMPORAL_ADDRESS
}
phase services start_services

ENTRA_SYNC_MASTER_KEY=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')
ENTRA_SYNC_ENCRYPTION_KEY=$(python3 -c 'import base64, os; print(base64.b64encode(os.urandom(32)).decode())')
SIM_PORT=$(free_port); API_PORT=$(free_port)
export ENTRA_SYNC_MASTER_KEY ENTRA_SYNC_ENCRYPTION_KEY
# The simulated CIPP listens on 127.0.0.1, which the outbound policy refuses by default.
export ENTRA_SYNC_ALLOW_PRIVATE_ENDPOINTS=true
export ENTRA_SYNC_LISTEN="127.0.0.1:$API_PORT"
export MICROSOFT_LOGIN_BASE_URL="http://127.0.0.1:$SIM_PORT/login"
export MICROSOFT_GRAPH_BASE_URL="http://127.0.0.1:$SIM_PORT/graph"
export RUST_LOG="${RUST_LOG:-warn,entra_sync=info}"
{
  echo "export DATABASE_URL='$DATABASE_URL' TEMPORAL_ADDRESS='$TEMPORAL_ADDRESS'"
  echo "export ENTRA_SYNC_LISTEN='$ENTRA_SYNC_LISTEN' ENTRA_SYNC_MASTER_KEY='$ENTRA_SYNC_MASTER_KEY'"
  echo "export ENTRA_SYNC_ENCRYPTION_KEY='$ENTRA_SYNC_ENCRYPTION_KEY' ENTRA_SYNC_ALLOW_PRIVATE_ENDPOINTS=true"
  echo "export MICROSOFT_LOGIN_BASE_URL='$MICROSOFT_LOGIN_BASE_URL' MICROSOFT_GRAPH_BASE_URL='$MICROSOFT_GRAPH_BASE_URL'"
} >"$RUN/env"
chmod 600 "$RUN/env"

# background NAME CMD...: starts CMD with its log in the run directory and a pid file.
background() {
  local name=$1; shift
  nohup "$@" >"$RUN/$name.log" 2>&1 &
  echo $! >"$RUN/$name.pid"
}

wait_http() {
  local url=$1 what=$2 deadline=$(( $(now_s) + 60 ))
  until curl -fsS -o /dev/null "$url" 2>/dev/null; do
    if [ "$(now_s)" -gt "$deadline" ]; then say "$what did not come up; see $RUN/*.log"; exit 1; fi
    sleep 0.3
  done
}

start_apps() {
  say "starting the simulator ($TENANTS tenants, $USERS users, seed $SEED) on 127.0.0.1:$SIM_PORT"
  background simulator "$BIN/entra-sync-simulator" --seed "$SEED" --tenants "$TENANTS" --users "$USERS" --listen "127.0.0.1:$SIM_PORT"
  wait_http "http://127.0.0.1:$SIM_PORT/_admin/state" "the simulator"
  say "applying migrations"
  "$BIN/entra-sync" migrate
  say "starting the API on $ENTRA_SYNC_LISTEN and a worker"
  background api "$BIN/entra-sync" serve
  background worker "$BIN/entra-sync" worker
  wait_http "http://$ENTRA_SYNC_LISTEN/healthz" "the API"
}
phase start start_apps

phase scenario "$BIN/entra-sync" demo --api-url "http://$ENTRA_SYNC_LISTEN" \
  --cipp-url "http://127.0.0.1:$SIM_PORT/cipp" --seed "$SEED" --tenants "$TENANTS" --users "$USERS"

cat <<EOT

Everything is still running:
  API        http://$ENTRA_SYNC_LISTEN  (OpenAPI: http://$ENTRA_SYNC_LISTEN/api/v1/openapi.json)
  simulator  http://127.0.0.1:$SIM_PORT  (admin: /_admin/state)
  Temporal   $TEMPORAL_ADDRESS
  logs       $RUN/*.log
  settings   source $RUN/env   (then: target/debug/entra-sync …)
Stop everything with: make stop
EOT
