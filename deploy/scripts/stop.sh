#!/usr/bin/env bash
# `make stop`: stops everything `make demo` (or an interrupted `make test`) started.
source "$(dirname "$0")/lib.sh"
for run in "$ROOT/.run/demo" "$ROOT/.run/test" "$ROOT/.run/bench"; do
  [ -d "$run" ] || continue
  for pidfile in "$run"/*.pid; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
      say "stopping $(basename "$pidfile" .pid) (pid $pid)"
      kill "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
  done
  temporal_stop "$run/temporal"
  pg_stop "$run/postgres"
done
say "everything is stopped"
