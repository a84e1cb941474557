#!/usr/bin/env bash
# start-postgres.sh: make a local PostgreSQL ready for the store tests, idempotently.
#
# Installs PostgreSQL from Debian's packages if it is missing, starts the first cluster it finds
# (creating one if there is none), and creates the role "keyclaim" (password "keyclaim") and the
# database "keyclaim_test" owned by it. Safe to run again: every step checks before it acts.
# Runs as root (as on the project's machines and CI). Its standard output is the DSN alone, so:
#
#   export KEYCLAIM_TEST_POSTGRES=$(hostserver/store/testdata/start-postgres.sh)
#
# (postgres://keyclaim:keyclaim@127.0.0.1:5432/keyclaim_test?sslmode=disable with the default
# port); progress and the export line for a person go to standard error.
set -euo pipefail

as_postgres() { runuser -u postgres -- "$@"; }

if ! command -v pg_lsclusters >/dev/null 2>&1 || [ -z "$(ls /usr/lib/postgresql 2>/dev/null)" ]; then
	echo "start-postgres: installing postgresql" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >&2
	apt-get install -y -qq postgresql >&2
fi

version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
if ! pg_lsclusters -h | awk -v v="$version" '$1 == v { found = 1 } END { exit !found }'; then
	echo "start-postgres: creating cluster $version/main" >&2
	pg_createcluster "$version" main >&2
fi
cluster=$(pg_lsclusters -h | awk -v v="$version" '$1 == v { print $2; exit }')
port=$(pg_lsclusters -h | awk -v v="$version" '$1 == v { print $3; exit }')
if ! pg_lsclusters -h | awk -v v="$version" -v c="$cluster" '$1 == v && $2 == c && $4 == "online" { found = 1 } END { exit !found }'; then
	echo "start-postgres: starting cluster $version/$cluster" >&2
	pg_ctlcluster "$version" "$cluster" start >&2
fi

# Wait until the server accepts connections (bounded: 30 s).
for _ in $(seq 1 60); do
	if as_postgres psql -p "$port" -Atqc 'SELECT 1' >/dev/null 2>&1; then
		break
	fi
	sleep 0.5
done
as_postgres psql -p "$port" -Atqc 'SELECT 1' >/dev/null

if [ "$(as_postgres psql -p "$port" -Atqc "SELECT 1 FROM pg_roles WHERE rolname = 'keyclaim'")" != "1" ]; then
	as_postgres psql -p "$port" -qc "CREATE ROLE keyclaim LOGIN PASSWORD 'keyclaim'" >&2
fi
if [ "$(as_postgres psql -p "$port" -Atqc "SELECT 1 FROM pg_database WHERE datname = 'keyclaim_test'")" != "1" ]; then
	as_postgres psql -p "$port" -qc "CREATE DATABASE keyclaim_test OWNER keyclaim" >&2
fi

# A test database only: commits do not wait for the WAL to reach the disk (fdatasync takes tens of
# milliseconds on some virtual disks, and every claim is a commit). Locking, isolation and
# atomicity, which the tests are about, are unchanged; only a crash of the machine could lose the
# last commits, and test data is thrown away anyway.
as_postgres psql -p "$port" -qc "ALTER DATABASE keyclaim_test SET synchronous_commit = off" >&2

dsn="postgres://keyclaim:keyclaim@127.0.0.1:${port}/keyclaim_test?sslmode=disable"
echo "start-postgres: ready; export KEYCLAIM_TEST_POSTGRES='$dsn'" >&2
echo "$dsn"
