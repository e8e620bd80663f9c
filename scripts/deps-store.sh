#!/usr/bin/env bash
# PostgreSQL for the store's tests (crates/store/tests): the server (its initdb and pg_ctl also
# run the private instance of the outage test) and psql, and a server answering on
# 127.0.0.1:5432 with trust authentication for the postgres user.
# Idempotent: does nothing when the server already answers. Needs root (or sudo) otherwise.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

answers() { psql "postgres://postgres@127.0.0.1:5432/postgres" -qAtc 'select 1' >/dev/null 2>&1; }

if command -v psql >/dev/null 2>&1 && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && answers; then
  echo "deps-store: PostgreSQL answers on 127.0.0.1:5432"
  exit 0
fi

if ! command -v psql >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "deps-store: installing postgresql"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends postgresql postgresql-client
fi

version="$(ls /etc/postgresql | sort -V | tail -n1)"
if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
  echo "deps-store: starting PostgreSQL $version"
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start
  for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
fi

if ! answers; then
  # A fresh Debian cluster asks for a password over TCP: the tests' server trusts loopback.
  hba="/etc/postgresql/$version/main/pg_hba.conf"
  echo "deps-store: trusting loopback connections in $hba"
  $SUDO sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main reload
  sleep 1
fi

answers || { echo "deps-store: PostgreSQL does not answer on 127.0.0.1:5432" >&2; exit 1; }
echo "deps-store: PostgreSQL $version answers on 127.0.0.1:5432"
