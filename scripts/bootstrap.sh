#!/usr/bin/env bash
# Install what the project needs, idempotently: a Python venv with pinned packages and,
# with --with-db, Debian's PostgreSQL 15 and PgBouncer (tests start their own throwaway
# servers as the non-root `postgres` user; no system service is used).
#   scripts/bootstrap.sh            runtime packages (offline preview)
#   scripts/bootstrap.sh --dev      + test tools
#   scripts/bootstrap.sh --with-db  + the real servers from apt (PostgreSQL, PgBouncer, sshd, Prometheus, HAProxy, nsd, unbound)
#   scripts/bootstrap.sh --with-engine  + the real Pulumi engine and the twin's Kubernetes, built from the Go
#                                         module proxy once per version (python -m engine.build; cache outside the repo)
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0; with_db=0; with_engine=0
for arg in "$@"; do
  case "$arg" in
    --dev) dev=1 ;;
    --with-db) with_db=1 ;;
    --with-engine) with_engine=1 ;;
    *) echo "bootstrap: unknown option $arg" >&2; exit 2 ;;
  esac
done

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "bootstrap: need root (or sudo) to run: $*" >&2; exit 1; fi
}

# Debian packages of the real servers the tests and the rehearsal start as plain processes on
# loopback (never as system services): PostgreSQL 15 + PgBouncer, sshd (the SSH-driven data-plane
# commands), Prometheus + the PostgreSQL exporter (live-metric gates), HAProxy, nsd and unbound
# (the twin's edge: Cloudflare's load balancer and DNS; HAProxy is also the twin's gateway image).
# The twin's servers (twin/) also need sudo (the program's scripts run through it, as on the VPSs),
# iproute2 (their network namespaces) and what the program's own scripts apt-get install on a server
# (the twin installs nothing: its apt-get only finds what is here): the provisioning's base packages
# and Debian's python3.11 with venv (the data-plane virtualenv). faketime: an update run "minutes later" (saved plans).
SERVER_PACKAGES="postgresql-15 pgbouncer openssh-server openssh-client prometheus prometheus-postgres-exporter haproxy nsd unbound sudo iproute2 ca-certificates curl gnupg lsb-release chrony python3.11 python3.11-venv faketime"
missing_packages() {
  for package in $SERVER_PACKAGES; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || printf '%s ' "$package"
  done
}
if [ "$with_db" = 1 ]; then
  missing=$(missing_packages)
  if [ -n "$missing" ] || ! id postgres >/dev/null 2>&1; then
    echo "bootstrap: installing $missing(apt)" >&2
    # apt must not start any of them as a service: tests start their own on loopback.
    created_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null
      as_root chmod 755 /usr/sbin/policy-rc.d; created_policy=1
    fi
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $SERVER_PACKAGES >/dev/null
    [ "$created_policy" = 1 ] && as_root rm -f /usr/sbin/policy-rc.d
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

if [ "$with_engine" = 1 ]; then
  # Says what it builds and how long each part took; a part that cannot be built is named with its
  # module and the error (the tests that need it are then skipped with that reason).
  venv/bin/python -m engine.build
fi
