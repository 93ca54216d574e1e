#!/usr/bin/env bash
# Make sure a PostgreSQL server answers on 127.0.0.1:5432 with a database "test" that
# the "postgres" role reaches without a password (how the test suite connects).
# Starts an installed cluster that is down; installs one from Debian's packages if none.
set -euo pipefail

ready() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }

if ! command -v pg_isready >/dev/null 2>&1; then
  echo "ensure-postgres: installing PostgreSQL from the distribution's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
  INSTALLED_HERE=1
fi

if ! ready; then
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  if [ "${INSTALLED_HERE:-0}" = 1 ]; then
    hba=/etc/postgresql/$version/main/pg_hba.conf
    sed -i 's/^\(host\s\+all\s\+all\s\+127\.0\.0\.1\/32\s\+\)\S\+/\1trust/' "$hba"
  fi
  echo "ensure-postgres: starting PostgreSQL $version"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 30); do ready && break; sleep 1; done
fi
ready || { echo "ensure-postgres: PostgreSQL does not answer on 127.0.0.1:5432" >&2; exit 1; }

if ! psql -h 127.0.0.1 -U postgres -d test -Atc 'select 1' >/dev/null 2>&1; then
  psql -h 127.0.0.1 -U postgres -d postgres -c 'CREATE DATABASE test' >/dev/null 2>&1 \
    || su postgres -c "createdb test" \
    || { echo "ensure-postgres: cannot create database 'test'" >&2; exit 1; }
fi
