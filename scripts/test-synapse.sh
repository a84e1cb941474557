#!/usr/bin/env bash
# make test-synapse: keyclaim's proxy mode in front of a real Synapse (issue 6).
#
# Installs matrix-synapse into a virtual environment under ./var/synapse-venv (kept between runs),
# starts it on 127.0.0.1 with SQLite and a fresh data directory under ./var/synapse-test,
# registers alice and bob, logs bob in on three devices, uploads device keys and one-time keys for
# BOBDEV, a fallback key for BOBPHONE and nothing for BOBTAB, then runs the Go tests (build tag
# synapse) hostserver/proxy/synapse_test.go, which puts the proxy in front of Synapse, and
# hostserver/synapse_diff_test.go, which sends the same uploads, claims and queries to Synapse
# and to the keys server in each mode and compares the answers (issue 14).
# Synapse is stopped when the script ends, however it ends. Running it again starts afresh.
#
# Where the package index cannot be reached (and Synapse is not installed yet) it says so and
# exits 0, except in CI (CI set, as .ci/run does), where that fails. Settings: SYNAPSE_VERSION (default below), SYNAPSE_VENV (default ./var/synapse-venv),
# PYTHON (default python3), GO (default go).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
SYNAPSE_VERSION=${SYNAPSE_VERSION:-1.163.2}
PYTHON=${PYTHON:-python3}
GO=${GO:-go}
VENV=${SYNAPSE_VENV:-$ROOT/var/synapse-venv}
DATA=$ROOT/var/synapse-test
PIDFILE=$ROOT/var/synapse-test.pid
START=$(date +%s)

say() { echo "test-synapse: $*"; }
fail() {
	say "FAILED: $*"
	if [ -f "$DATA/homeserver.log" ]; then
		say "the last lines of $DATA/homeserver.log:"
		tail -n 40 "$DATA/homeserver.log" | sed 's/^/    /'
	fi
	exit 1
}

# --- 1. Synapse in a virtual environment ------------------------------------------------------
installed_version() {
	"$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("matrix-synapse"))' 2>/dev/null || true
}
if [ "$(installed_version)" != "$SYNAPSE_VERSION" ]; then
	if ! command -v "$PYTHON" >/dev/null; then
		[ -n "${CI:-}" ] && fail "$PYTHON not found (in CI this test may not be skipped)"
		say "$PYTHON not found, skipped"
		exit 0
	fi
	if [ ! -x "$VENV/bin/pip" ]; then
		say "creating the virtual environment $VENV"
		rm -rf "$VENV"
		"$PYTHON" -m venv "$VENV"
	fi
	if ! "$VENV/bin/pip" index versions matrix-synapse --timeout 20 --retries 1 >/dev/null 2>&1; then
		[ -n "${CI:-}" ] && fail "the package index is not reachable (in CI this test may not be skipped)"
		say "package index not reachable, skipped"
		exit 0
	fi
	say "installing matrix-synapse==$SYNAPSE_VERSION (this takes a minute the first time)"
	"$VENV/bin/pip" install --quiet "matrix-synapse==$SYNAPSE_VERSION" || fail "pip install matrix-synapse==$SYNAPSE_VERSION"
fi
say "matrix-synapse $(installed_version) in $VENV"
PY=$VENV/bin/python

# --- 2. A fresh homeserver configuration ------------------------------------------------------
# A Synapse left running by an earlier run that was killed: stop it (only that process, by id).
if [ -f "$PIDFILE" ]; then
	old=$(cat "$PIDFILE")
	if [ -n "$old" ] && grep -qs "synapse.app.homeserver" "/proc/$old/cmdline"; then
		say "stopping the Synapse of an earlier run (pid $old)"
		kill "$old" 2>/dev/null || true
		for _ in $(seq 50); do kill -0 "$old" 2>/dev/null || break; sleep 0.2; done
	fi
	rm -f "$PIDFILE"
fi
rm -rf "$DATA"
mkdir -p "$DATA"
PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
SECRET=$("$PY" -c 'import secrets; print(secrets.token_hex(16))')
BASE=http://127.0.0.1:$PORT

# From inside $DATA: the generated log configuration writes homeserver.log to the working directory.
(cd "$DATA" && "$PY" -m synapse.app.homeserver --generate-config --server-name localhost --report-stats=no \
	--config-path "$DATA/homeserver.yaml" --data-directory "$DATA" --config-directory "$DATA" >/dev/null) \
	|| fail "generating the Synapse configuration"

# Later config files overwrite top-level keys of earlier ones: the test settings go on top of the
# generated file. One client listener on loopback, no TLS, no federation listener, federation
# with nobody, no presence, no rate limits that a test could hit.
cat >"$DATA/test.yaml" <<EOF
listeners:
  - port: $PORT
    bind_addresses: ["127.0.0.1"]
    type: http
    tls: false
    x_forwarded: true
    resources:
      - names: [client]
        compress: false
database:
  name: sqlite3
  args:
    database: "$DATA/homeserver.db"
enable_registration: false
registration_shared_secret: "$SECRET"
presence:
  enabled: false
federation_domain_whitelist: []
trusted_key_servers: []
suppress_key_server_warning: true
report_stats: false
enable_metrics: false
url_preview_enabled: false
rc_message: {per_second: 1000, burst_count: 1000}
rc_registration: {per_second: 1000, burst_count: 1000}
rc_login:
  address: {per_second: 1000, burst_count: 1000}
  account: {per_second: 1000, burst_count: 1000}
  failed_attempts: {per_second: 1000, burst_count: 1000}
rc_admin_redaction: {per_second: 1000, burst_count: 1000}
rc_joins:
  local: {per_second: 1000, burst_count: 1000}
  remote: {per_second: 1000, burst_count: 1000}
bcrypt_rounds: 4
EOF

# --- 3. Start Synapse; stop it however the script ends -----------------------------------------
SYNAPSE_PID=
stop_synapse() {
	if [ -n "$SYNAPSE_PID" ] && kill -0 "$SYNAPSE_PID" 2>/dev/null; then
		kill "$SYNAPSE_PID" 2>/dev/null || true
		for _ in $(seq 50); do kill -0 "$SYNAPSE_PID" 2>/dev/null || break; sleep 0.2; done
		kill -9 "$SYNAPSE_PID" 2>/dev/null || true
		wait "$SYNAPSE_PID" 2>/dev/null || true
		say "Synapse stopped"
	fi
	rm -f "$PIDFILE"
}
trap stop_synapse EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "starting Synapse on $BASE"
(cd "$DATA" && exec "$PY" -m synapse.app.homeserver -c "$DATA/homeserver.yaml" -c "$DATA/test.yaml" \
	>"$DATA/stdout.log" 2>&1) &
SYNAPSE_PID=$!
echo "$SYNAPSE_PID" >"$PIDFILE"
ready=
for _ in $(seq 240); do
	if ! kill -0 "$SYNAPSE_PID" 2>/dev/null; then
		cat "$DATA/stdout.log" >&2 || true
		fail "Synapse exited during start-up"
	fi
	if "$PY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$BASE/health" 2>/dev/null; then
		ready=1
		break
	fi
	sleep 0.5
done
[ -n "$ready" ] || fail "Synapse did not become ready within 120 s"
say "Synapse is ready ($(($(date +%s) - START)) s since the start of the script)"

# --- 4. Users, devices, keys --------------------------------------------------------------------
for user in alice bob; do
	"$VENV/bin/register_new_matrix_user" --user "$user" --password "pw-$user-$SECRET" --no-admin \
		--shared-secret "$SECRET" "$BASE" >/dev/null || fail "registering $user"
done

# Log in (alice once, bob on three devices) and upload keys; write the tokens and what was
# uploaded to state.json for the Go test.
SECRET=$SECRET BASE=$BASE STATE="$DATA/state.json" "$PY" - <<'EOF' || fail "logging in and uploading keys"
import json, os, urllib.request

base, secret, state_path = os.environ["BASE"], os.environ["SECRET"], os.environ["STATE"]

def call(path, body, token=None):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    if token:
        req.add_header("Authorization", "Bearer " + token)
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.load(resp)

def login(user, device):
    r = call("/_matrix/client/v3/login", {
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": user},
        "password": "pw-%s-%s" % (user, secret), "device_id": device})
    assert r["device_id"] == device, r
    return r["access_token"]

def device_keys(user_id, device):
    return {"user_id": user_id, "device_id": device,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {"curve25519:" + device: "curve-" + device, "ed25519:" + device: "ed-" + device},
            "signatures": {user_id: {"ed25519:" + device: "sig-" + device}}}

def signed(user_id, device, key, fallback=False):
    k = {"key": key, "signatures": {user_id: {"ed25519:" + device: "sig-" + key}}}
    if fallback:
        k["fallback"] = True
    return k

bob = "@bob:localhost"
state = {"alice_token": login("alice", "ALICEDEV"), "bob_tokens": {}, "one_time_keys": {}, "fallback_keys": {}}
for device in ("BOBDEV", "BOBPHONE", "BOBTAB"):
    state["bob_tokens"][device] = login("bob", device)

# BOBDEV: device keys and three one-time keys.
otks = {"signed_curve25519:AAAAAQ": signed(bob, "BOBDEV", "otk-one"),
        "signed_curve25519:AAAAAg": signed(bob, "BOBDEV", "otk-two"),
        "signed_curve25519:AAAAAw": signed(bob, "BOBDEV", "otk-three")}
r = call("/_matrix/client/v3/keys/upload", {"device_keys": device_keys(bob, "BOBDEV"), "one_time_keys": otks},
         state["bob_tokens"]["BOBDEV"])
assert r["one_time_key_counts"].get("signed_curve25519") == 3, r
state["one_time_keys"]["BOBDEV"] = otks

# BOBPHONE: device keys and a fallback key only.
fb = {"signed_curve25519:AAAAHg": signed(bob, "BOBPHONE", "fallback-phone", fallback=True)}
call("/_matrix/client/v3/keys/upload", {"device_keys": device_keys(bob, "BOBPHONE"), "fallback_keys": fb},
     state["bob_tokens"]["BOBPHONE"])
state["fallback_keys"]["BOBPHONE"] = fb

# BOBTAB: nothing at all.
with open(state_path, "w") as f:
    json.dump(state, f)
EOF
say "registered alice and bob (BOBDEV: 3 one-time keys, BOBPHONE: a fallback key, BOBTAB: none)"

# --- 5. The Go test ------------------------------------------------------------------------------
# Or another script's work against this Synapse instead (make bench-synapse sets SYNAPSE_THEN):
# it gets the URL, the registration secret, the data directory, the pid and the venv's Python.
if [ -n "${SYNAPSE_THEN:-}" ]; then
	SYNAPSE_URL=$BASE SYNAPSE_SECRET=$SECRET SYNAPSE_DATA=$DATA SYNAPSE_PID=$SYNAPSE_PID SYNAPSE_PYTHON=$PY \
		bash -c "$SYNAPSE_THEN" || fail "$SYNAPSE_THEN"
	exit 0
fi
export KEYCLAIM_SYNAPSE_URL=$BASE
export KEYCLAIM_SYNAPSE_STATE=$DATA/state.json
KEYCLAIM_SYNAPSE_ALICE_TOKEN=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["alice_token"])' "$DATA/state.json")
export KEYCLAIM_SYNAPSE_ALICE_TOKEN
# The differential test (hostserver/synapse_diff_test.go) registers its own users.
export KEYCLAIM_SYNAPSE_SHARED_SECRET=$SECRET
status=0
"$GO" test -tags synapse -count=1 -run '^TestSynapse' -v ./hostserver/proxy/ ./hostserver/ 2>&1 | tee "$DATA/go-test.log" || status=$?
if [ "$status" -ne 0 ]; then
	fail "the Go test failed (exit $status)"
fi
for test in TestSynapse TestSynapseDifferential; do
	grep -q "^--- PASS: $test " "$DATA/go-test.log" || fail "$test did not run"
done
say "passed in $(($(date +%s) - START)) s"
