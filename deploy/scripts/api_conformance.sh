#!/usr/bin/env bash
# OpenAPI conformance: starts `entra-sync serve` on its own database (on the Postgres and
# Temporal that DATABASE_URL and TEMPORAL_ADDRESS name), seeds a PSA tenant with an admin key,
# a client, a contact and a discovery run, and runs schemathesis against the served document
# with every check on and a bounded number of examples per operation. Platform routes are
# exercised with the master key, every other route with the tenant admin's key. Fails when
# schemathesis reports any failure. Used by test.sh; runnable alone after `make test`'s
# services are up.
source "$(dirname "$0")/lib.sh"
ensure_schemathesis

: "${DATABASE_URL:?DATABASE_URL must name the test Postgres}"
: "${TEMPORAL_ADDRESS:?TEMPORAL_ADDRESS must name the test Temporal server}"
RUN="${CONFORMANCE_DIR:-$ROOT/.run/conformance}"
EXAMPLES="${SCHEMATHESIS_EXAMPLES:-15}"
BIN="$ROOT/target/debug/entra-sync"
rm -rf "$RUN" && mkdir -p "$RUN"

# A database of its own, so the fuzzer's writes touch nothing the other tests read.
db="entra_sync_conformance_$$"
base="${DATABASE_URL%/*}"
if [ ! -x "$PG_BIN/createdb" ]; then
  PG_BIN=$(dirname "$(ls /usr/lib/postgresql/*/bin/createdb | sort -V | tail -1)")
fi
"$PG_BIN/createdb" --maintenance-db="$DATABASE_URL" "$db"
export DATABASE_URL="$base/$db"

port=$(free_port)
export ENTRA_SYNC_LISTEN="127.0.0.1:$port"
ENTRA_SYNC_MASTER_KEY="conformance-master-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
ENTRA_SYNC_ENCRYPTION_KEY=$(head -c 32 /dev/urandom | base64)
export ENTRA_SYNC_MASTER_KEY ENTRA_SYNC_ENCRYPTION_KEY
export TEMPORAL_TASK_QUEUE="conformance-$$"
# Generated CIPP base URLs must not make the API call private hosts: the default policy stays.
unset ENTRA_SYNC_ALLOW_PRIVATE_ENDPOINTS
# A (fictitious) app registration, so the direct-connect route answers with an authorize URL
# instead of "not configured"; nothing here reaches Microsoft.
export MICROSOFT_CLIENT_ID="00000000-0000-0000-0000-00000000c0de"
export MICROSOFT_CLIENT_SECRET="conformance-client-secret"
export MICROSOFT_OAUTH_CALLBACK_URL="http://127.0.0.1/auth/oauth2/microsoft/callback"
API="http://127.0.0.1:$port"

"$BIN" migrate >"$RUN/migrate.log" 2>&1
RUST_LOG=warn "$BIN" serve >"$RUN/serve.log" 2>&1 &
serve_pid=$!
stop_serve() { kill "$serve_pid" 2>/dev/null || true; wait "$serve_pid" 2>/dev/null || true; }
trap stop_serve EXIT

deadline=$(( $(now_s) + 60 ))
until curl -fsS "$API/healthz" >/dev/null 2>&1; do
  if [ "$(now_s)" -gt "$deadline" ] || ! kill -0 "$serve_pid" 2>/dev/null; then
    say "entra-sync serve did not start; log follows"; tail -20 "$RUN/serve.log" >&2; exit 1
  fi
  sleep 0.2
done

post() { # post KEY PATH JSON
  curl -fsS -X POST -H "x-api-key: $1" -H 'content-type: application/json' -d "$3" "$API$2"
}
tenant=$(post "$ENTRA_SYNC_MASTER_KEY" /api/v1/platform/tenants '{"name":"Conformance MSP"}' | jq -r .tenant_id)
admin_key=$(post "$ENTRA_SYNC_MASTER_KEY" "/api/v1/platform/tenants/$tenant/users" \
  '{"email":"admin@conformance.example","user_type":"internal","permissions":["system_settings.read","system_settings.update","client.read","client.create","contact.read","contact.create","contact.update"]}' \
  | jq -r .api_key)
post "$ENTRA_SYNC_MASTER_KEY" /api/v1/platform-feature-flags '{"__action":"ensure_entra_phase1_flags"}' >/dev/null
for flag in entra-integration-ui entra-integration-client-sync-action entra-integration-cipp \
  entra-integration-field-sync entra-integration-ambiguous-queue; do
  post "$ENTRA_SYNC_MASTER_KEY" "/api/v1/platform-feature-flags/$flag/tenants" \
    "{\"__action\":\"add\",\"tenantId\":\"$tenant\"}" >/dev/null
done
client=$(post "$admin_key" /api/v1/clients '{"name":"Contoso","domains":["contoso.example"]}' | jq -r .client_id)
post "$admin_key" /api/v1/contacts \
  "{\"client_id\":\"$client\",\"full_name\":\"Some One\",\"email\":\"someone@contoso.example\"}" >/dev/null

status=0
run_schemathesis() { # run_schemathesis NAME KEY FILTER...
  # One worker: hypothesis' lambda-description cache is not safe across worker threads
  # ("AST constructor recursion depth mismatch").
  local name=$1 key=$2; shift 2
  say "schemathesis: $name operations, $EXAMPLES examples each, every check"
  "$VENV/bin/schemathesis" --config-file "$ROOT/deploy/schemathesis.toml" \
    run "$API/api/v1/openapi.json" \
    --checks all --max-examples "$EXAMPLES" --seed 1 --workers 1 \
    --request-timeout 30 --no-color \
    -H "x-api-key: $key" "$@" \
    --report junit --report-dir "$RUN/$name" >"$RUN/$name.log" 2>&1 || status=$?
  tail -25 "$RUN/$name.log" >&2
}
run_schemathesis platform "$ENTRA_SYNC_MASTER_KEY" --include-path-regex '^/api/v1/platform'
run_schemathesis tenant "$admin_key" --exclude-path-regex '^/api/v1/platform'
if [ "$status" != 0 ]; then
  say "schemathesis found failures; full logs in $RUN"
  exit "$status"
fi
say "schemathesis: 0 failures"
