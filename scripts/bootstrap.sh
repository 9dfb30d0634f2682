#!/usr/bin/env bash
# Install what the project needs, idempotently: a Python venv with pinned packages and,
# with --with-db, Debian's PostgreSQL 15 and PgBouncer (tests start their own throwaway
# servers as the non-root `postgres` user; no system service is used).
#   scripts/bootstrap.sh            runtime packages (offline preview)
#   scripts/bootstrap.sh --dev      + test tools
#   scripts/bootstrap.sh --with-db  + PostgreSQL and PgBouncer from apt
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0; with_db=0
for arg in "$@"; do
  case "$arg" in
    --dev) dev=1 ;;
    --with-db) with_db=1 ;;
    *) echo "bootstrap: unknown option $arg" >&2; exit 2 ;;
  esac
done

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "bootstrap: need root (or sudo) to run: $*" >&2; exit 1; fi
}

if [ "$with_db" = 1 ]; then
  if [ ! -x /usr/lib/postgresql/15/bin/initdb ] || [ ! -x /usr/sbin/pgbouncer ] || ! id postgres >/dev/null 2>&1; then
    echo "bootstrap: installing postgresql-15 and pgbouncer (apt)" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 pgbouncer >/dev/null
  fi
fi

python=${PYTHON:-python3}
if [ ! -x venv/bin/python ]; then
  "$python" -m venv venv
fi
requirements=requirements.txt
[ "$dev" = 1 ] && requirements=requirements-dev.txt
# Reinstall only when the pinned requirements changed since the last successful install.
stamp="venv/.installed-$(cat requirements.txt "$requirements" | sha256sum | cut -c1-16)-$dev"
if [ ! -f "$stamp" ]; then
  echo "bootstrap: installing Python packages from $requirements" >&2
  venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
  venv/bin/python -m pip install -q --disable-pip-version-check -r "$requirements"
  touch "$stamp"
fi
