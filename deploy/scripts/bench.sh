#!/usr/bin/env bash
# `make bench`: reconciles a 50,000-user directory (pages of 999) against 50,000 contacts on a
# private Postgres, first run and re-run, and compares it with the floor of one COPY of as many
# contact rows (reconcile-bench); then the scale part on the real stack — the simulator, the
# API and a worker as release-build processes, a Temporal dev server and the same Postgres —
# (scale-bench: mapping preview, list pages, small-tenant and 1,000-tenant syncs). Prints the
# figures as name=value lines (crates/bench says what each means). The cluster preloads
# pg_stat_statements so the benches can say where the time goes; Postgres and Temporal are
# stopped again on exit, also on failure.
#
# Sizes: SCALE_PARTS (mapping,lists,sync,large), SCALE_MAPPING_TENANTS/CLIENTS, SCALE_LIST_CONTACTS,
# SCALE_SYNC_TENANTS/USERS, SCALE_LARGE_TENANTS/USERS, SCALE_SIZE_MEDIAN; BENCH_PARTS=scale
# skips reconcile-bench (then STORE_USERS_PER_SECOND may be given); BENCH_EXPLAIN_MS=N logs the
# plan of every statement slower than N ms (auto_explain) to .run/bench/postgres.log;
# BENCH_TRACK_PLANNING=on adds planning time to the Postgres figures (it costs a little under
# concurrency, so it is off by default); ENTRA_SYNC_BIN runs another build of the product (to
# compare two builds in turn on the same machine); SCALE_RUST_LOG sets the processes' log
# filter (default warn). A quick run:
#   SCALE_MAPPING_TENANTS=200 SCALE_MAPPING_CLIENTS=500 SCALE_LIST_CONTACTS=20000 \
#   SCALE_SYNC_TENANTS=20 SCALE_SYNC_USERS=4000 SCALE_LARGE_TENANTS=50 SCALE_LARGE_USERS=10000 make bench
source "$(dirname "$0")/lib.sh"
RUN="$ROOT/.run/bench"
total_start=$(now_s)

cleanup() {
  local status=$?
  temporal_stop "$RUN/temporal"
  # The cluster may live outside $RUN (pg_home), and pg_stop removes it there: keep its log.
  [ -f "$RUN/postgres/location" ] && cp "$(cat "$RUN/postgres/location")/postgres.log" "$RUN/postgres.log" 2>/dev/null
  pg_stop "$RUN/postgres"
  say "make bench finished in $(( $(now_s) - total_start ))s (exit $status)"
  exit $status
}
trap cleanup EXIT INT TERM

phase tools ensure_tools
cd "$ROOT"
phase build cargo build --release --locked -p entra-sync-bench -p entra-sync -p entra-sync-simulator --bins

rm -rf "$RUN" && mkdir -p "$RUN"
start_postgres() {
  # Restart once with pg_stat_statements preloaded (ALTER SYSTEM needs a running server).
  "$PG_BIN/psql" -q "$(pg_start "$RUN/postgres")" \
    -c "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'" \
    -c "ALTER SYSTEM SET pg_stat_statements.track_planning = ${BENCH_TRACK_PLANNING:-off}"
  pg_stop "$RUN/postgres"
  DATABASE_URL=$(pg_start "$RUN/postgres")
  export DATABASE_URL
  if [ -n "${BENCH_EXPLAIN_MS:-}" ]; then
    # Loaded by each new session, so every process the bench starts logs its slow plans.
    "$PG_BIN/psql" -q -v ON_ERROR_STOP=1 "$DATABASE_URL" -c "LOAD 'auto_explain'" \
      -c "ALTER SYSTEM SET session_preload_libraries = 'auto_explain'" \
      -c "ALTER SYSTEM SET auto_explain.log_min_duration = '${BENCH_EXPLAIN_MS}ms'" \
      -c "SELECT pg_reload_conf()" >/dev/null
  fi
}
phase postgres start_postgres
say "DATABASE_URL=$DATABASE_URL"
BENCH_PARTS="${BENCH_PARTS:-reconcile,scale}"
if [[ ",$BENCH_PARTS," == *",reconcile,"* ]]; then
  phase reconcile "$ROOT/target/release/reconcile-bench" | tee "$RUN/reconcile.txt"
  # The store-only rate the end-to-end sync is compared with, from this same run.
  STORE_USERS_PER_SECOND=$(sed -n 's/^first_run_users_per_second=//p' "$RUN/reconcile.txt")
  export STORE_USERS_PER_SECOND
fi
if [[ ",$BENCH_PARTS," == *",scale,"* ]]; then
  start_temporal() {
    TEMPORAL_ADDRESS=$(temporal_start "$RUN/temporal")
    TEMPORAL_PID=$(cat "$RUN/temporal/pid")
    export TEMPORAL_ADDRESS TEMPORAL_PID
  }
  phase temporal start_temporal
  export TEMPORAL_CLI="$VENV/bin/temporal" SCALE_LOG_DIR="$RUN/logs"
  export ENTRA_SYNC_BIN="${ENTRA_SYNC_BIN:-$ROOT/target/release/entra-sync}"
  export SIMULATOR_BIN="$ROOT/target/release/entra-sync-simulator"
  phase scale "$ROOT/target/release/scale-bench"
fi
