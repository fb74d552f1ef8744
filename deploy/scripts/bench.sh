#!/usr/bin/env bash
# `make bench`: reconciles a 50,000-user directory (pages of 999) against 50,000 contacts on a
# private Postgres, first run and re-run, and compares it with the floor of one COPY of as many
# contact rows. Prints the figures as name=value lines (crates/bench says what each means).
# The cluster preloads pg_stat_statements so the bench can say which statement the time goes
# to; it is stopped again on exit, also on failure.
source "$(dirname "$0")/lib.sh"
RUN="$ROOT/.run/bench"
total_start=$(now_s)

cleanup() {
  local status=$?
  pg_stop "$RUN/postgres"
  say "make bench finished in $(( $(now_s) - total_start ))s (exit $status)"
  exit $status
}
trap cleanup EXIT INT TERM

phase tools ensure_tools
cd "$ROOT"
phase build cargo build --release --locked -p entra-sync-bench --bin reconcile-bench

rm -rf "$RUN" && mkdir -p "$RUN"
start_postgres() {
  # Restart once with pg_stat_statements preloaded (ALTER SYSTEM needs a running server).
  "$PG_BIN/psql" -q "$(pg_start "$RUN/postgres")" \
    -c "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'"
  pg_stop "$RUN/postgres"
  DATABASE_URL=$(pg_start "$RUN/postgres")
  export DATABASE_URL
}
phase postgres start_postgres
say "DATABASE_URL=$DATABASE_URL"
phase bench cargo run --release --locked -q -p entra-sync-bench --bin reconcile-bench
