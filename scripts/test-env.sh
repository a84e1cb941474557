# Sourced by `make test`: makes PostgreSQL available to the store and server tests.
# If KEYCLAIM_TEST_POSTGRES is already set, it is used as it is. Otherwise, as root on a Debian
# machine, PostgreSQL is installed if missing and started on loopback, and the variable is set.
# Where that cannot be done, the PostgreSQL tests say plainly that they are skipped, except in CI
# (CI set, as .ci/run does), where that is an error.
if [ -z "${KEYCLAIM_TEST_POSTGRES:-}" ]; then
	if [ -x hostserver/store/testdata/start-postgres.sh ] && dsn=$(hostserver/store/testdata/start-postgres.sh 2>/tmp/keyclaim-postgres.log | tail -n 1) && [ -n "$dsn" ]; then
		export KEYCLAIM_TEST_POSTGRES="$dsn"
		echo "test-env: PostgreSQL at $KEYCLAIM_TEST_POSTGRES"
	elif [ -n "${CI:-}" ]; then
		# In CI a green run must mean the PostgreSQL tests ran: no skipping there.
		echo "test-env: PostgreSQL could not be started (see /tmp/keyclaim-postgres.log), and CI requires it" >&2
		false
	else
		echo "test-env: PostgreSQL could not be started (see /tmp/keyclaim-postgres.log): its tests will be skipped"
	fi
fi
