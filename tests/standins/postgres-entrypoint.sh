#!/bin/sh
# What the official postgres image's entrypoint does that a compose file relies on: on an empty data folder, a
# cluster whose superuser (POSTGRES_USER, default postgres) has POSTGRES_PASSWORD, a database POSTGRES_DB, and
# connections from other containers with that password; then `postgres` as the user postgres.
set -e
case "${1:-}" in -*) set -- postgres "$@" ;; esac
if [ "${1:-}" = postgres ]; then
  if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown -R postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
  fi
  if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "${POSTGRES_HOST_AUTH_METHOD:-}" != trust ]; then
      echo "Error: Database is uninitialized and superuser password is not specified." >&2
      echo "       You must specify POSTGRES_PASSWORD to a non-empty value for the superuser." >&2
      exit 1
    fi
    user=${POSTGRES_USER:-postgres}
    password=$(mktemp)
    printf '%s\n' "${POSTGRES_PASSWORD:-}" >"$password"
    initdb --username="$user" ${POSTGRES_INITDB_ARGS:-} $([ -n "${POSTGRES_PASSWORD:-}" ] && echo --pwfile="$password")
    rm -f "$password"
    echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
    echo "host all all all ${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}" >>"$PGDATA/pg_hba.conf"
    database=${POSTGRES_DB:-$user}
    if [ "$database" != postgres ]; then
      pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start
      psql -v ON_ERROR_STOP=1 --username="$user" --no-password --dbname=postgres -c "CREATE DATABASE \"$database\""
      pg_ctl -D "$PGDATA" -m fast -w stop
    fi
    echo
    echo 'PostgreSQL init process complete; ready for start up.'
    echo
  fi
fi
exec "$@"
