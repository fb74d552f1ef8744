#!/usr/bin/env bash
# Creates the secret files deploy/compose.yaml mounts (deploy/compose.secrets/, git-ignored):
# a random Postgres password and the DATABASE_URL using it, a random platform master key and
# encryption key, and the Microsoft app registration's values from the environment
# (MICROSOFT_CLIENT_ID, MICROSOFT_CLIENT_SECRET, MICROSOFT_TENANT_ID; empty files when unset,
# fill them in later — the workers re-read them). Existing files are kept.
set -euo pipefail
dir="$(cd "$(dirname "$0")/.." && pwd)/compose.secrets"
mkdir -p "$dir"
chmod 0700 "$dir"
umask 077
write() { [ -e "$dir/$1" ] || printf '%s' "$2" >"$dir/$1"; }
random() { head -c "$1" /dev/urandom | base64 | tr -d '\n'; }
[ -s "$dir/POSTGRES_PASSWORD" ] || random 24 | tr '+/' '-_' >"$dir/POSTGRES_PASSWORD"
write DATABASE_URL "postgres://entra_sync:$(cat "$dir/POSTGRES_PASSWORD")@postgres:5432/entra_sync"
write ENTRA_SYNC_MASTER_KEY "$(random 32)"
write ENTRA_SYNC_ENCRYPTION_KEY "$(random 32)"
write MICROSOFT_CLIENT_ID "${MICROSOFT_CLIENT_ID:-}"
write MICROSOFT_CLIENT_SECRET "${MICROSOFT_CLIENT_SECRET:-}"
write MICROSOFT_TENANT_ID "${MICROSOFT_TENANT_ID:-}"
# The containers run as uid 65532 and read these files (Postgres reads its own as root).
chmod 0644 "$dir"/*
chmod 0755 "$dir"
echo "secret files are in $dir"
