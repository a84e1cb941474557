#!/usr/bin/env bash
# own-postgres.sh: a PostgreSQL instance of the benchmarks' own, with the durable defaults (fsync
# on, synchronous_commit on), unlike the shared test database (synchronous_commit off).
#
#   bench/own-postgres.sh start DIR PORT   # initdb into DIR (once), start on 127.0.0.1:PORT, print the DSN
#   bench/own-postgres.sh stop DIR         # stop it (DIR can then be removed)
#
# Uses the installed server binaries (/usr/lib/postgresql/*/bin; hostserver/store/testdata/
# start-postgres.sh installs them). As root the server runs as the user postgres.
set -euo pipefail
cmd=${1:?start|stop}
dir=${2:?DIR}
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
case $cmd in
start)
	port=${3:?PORT}
	mkdir -p "$dir"
	[ "$(id -u)" = 0 ] && chown postgres: "$dir"
	if [ ! -f "$dir/data/PG_VERSION" ]; then
		as_pg "$bin/initdb" -D "$dir/data" -U keyclaim --auth=trust -E UTF8 --locale=C >&2
		printf "listen_addresses = '127.0.0.1'\nport = %s\nunix_socket_directories = '%s'\nmax_connections = 200\nshared_buffers = 256MB\nfsync = on\nsynchronous_commit = on\n" "$port" "$dir" \
			| as_pg tee "$dir/data/postgresql.auto.conf" >/dev/null
	fi
	as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >&2
	as_pg "$bin/psql" -h 127.0.0.1 -p "$port" -U keyclaim -d postgres -Atqc "SELECT 1 FROM pg_database WHERE datname = 'keyclaim'" | grep -q 1 \
		|| as_pg "$bin/createdb" -h 127.0.0.1 -p "$port" -U keyclaim keyclaim
	echo "postgres://keyclaim@127.0.0.1:$port/keyclaim?sslmode=disable"
	;;
stop)
	as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >&2
	;;
*)
	echo "usage: $0 start DIR PORT | stop DIR" >&2
	exit 2
	;;
esac
