#!/usr/bin/env bash
# `make test`: installs what is missing, starts a private Postgres and a Temporal dev server on
# free ports, runs every test of the workspace against them, and stops them again — also when
# a test fails. Prints how long each phase takes.
source "$(dirname "$0")/lib.sh"
RUN="$ROOT/.run/test"
total_start=$(now_s)

cleanup() {
  local status=$?
  temporal_stop "$RUN/temporal"
  pg_stop "$RUN/postgres"
  if [ -n "${ARTIFACTS:-}" ]; then say "console screenshots (one per page visited): $ARTIFACTS"; fi
  say "make test finished in $(( $(now_s) - total_start ))s (exit $status)"
  exit $status
}
trap cleanup EXIT INT TERM

phase tools ensure_tools
# The Vault secret provider's tests run against a real OpenBao dev server they start themselves.
phase openbao ensure_openbao
# The console's browser tests drive Debian's headless Chromium through chromedriver.
phase chromium ensure_chromium
export ENTRA_SYNC_BAO_BIN="$VENV/bin/bao"
cd "$ROOT"
# The container and Kubernetes files, validated offline (no Docker engine, no cluster).
phase deploy-tools ensure_deploy_tools
phase deploy validate_deploy
phase build cargo build --workspace --all-targets --locked

rm -rf "$RUN" && mkdir -p "$RUN"
start_services() {
  DATABASE_URL=$(pg_start "$RUN/postgres")
  TEMPORAL_ADDRESS=$(temporal_start "$RUN/temporal")
  export DATABASE_URL TEMPORAL_ADDRESS
}
phase services start_services
export ENTRA_SYNC_TEMPORAL_CLI="$VENV/bin/temporal"
export RUST_LOG="${RUST_LOG:-warn}"
say "DATABASE_URL=$DATABASE_URL TEMPORAL_ADDRESS=$TEMPORAL_ADDRESS"
# The simulator's CIPP and OpenBao listen on 127.0.0.1, which the outbound policy refuses by
# default.
export ENTRA_SYNC_ALLOW_PRIVATE_ENDPOINTS=true
ARTIFACTS="$ROOT/target/test-artifacts/console"
rm -rf "$ARTIFACTS"
phase tests cargo test --workspace --locked --no-fail-fast -- --test-threads "${TEST_THREADS:-4}"
# schemathesis against a live `entra-sync serve` (every check, bounded examples): the served
# OpenAPI document must match what the server does.
phase api-conformance bash "$ROOT/deploy/scripts/api_conformance.sh"
