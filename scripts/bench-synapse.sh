#!/usr/bin/env bash
# make bench-synapse: the load driver against a real Synapse and against keyclaim, the same
# workload in one run, side by side (issue 13 item 4).
#
# Synapse is the one make test-synapse installs (./var/synapse-venv, SQLite, rate limits raised,
# started afresh by scripts/test-synapse.sh, which then runs this script again with SYNAPSE_URL
# set and stops Synapse at the end). This script registers the users of the run through the
# shared-secret registration API, logs in one device per (user, device), and runs
#   go run ./bench/loaddriver --engine native,synapse ...
# which uploads the same keys to both servers and measures the same cells. The Markdown report
# goes to standard output (and var/bench-synapse.md). Settings: BENCH_SYNAPSE_DEVICES (1000),
# BENCH_SYNAPSE_KEYS (one-time keys per device, 100), BENCH_SYNAPSE_DURATION (per cell, 10s),
# BENCH_SYNAPSE_ARGS (extra loaddriver flags).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ -z "${SYNAPSE_URL:-}" ]; then
	SYNAPSE_THEN="bash $PWD/scripts/bench-synapse.sh" exec bash scripts/test-synapse.sh
fi

GO=${GO:-go}
DEVICES=${BENCH_SYNAPSE_DEVICES:-1000}
KEYS=${BENCH_SYNAPSE_KEYS:-100}
FLEET=$SYNAPSE_DATA/bench-fleet.json
RUN_ID=$(date +%s | tail -c 6)

echo "bench-synapse: registering $((DEVICES / 10)) users and logging in $DEVICES devices on $SYNAPSE_URL" >&2
BASE=$SYNAPSE_URL SECRET=$SYNAPSE_SECRET FLEET=$FLEET RUN_ID=$RUN_ID DEVICES=$DEVICES "$SYNAPSE_PYTHON" - <<'PY'
import hashlib, hmac, json, os, urllib.request
from concurrent.futures import ThreadPoolExecutor

base, secret = os.environ["BASE"], os.environ["SECRET"].encode()
run_id, devices = os.environ["RUN_ID"], int(os.environ["DEVICES"])

def call(path, body=None, token=None):
    req = urllib.request.Request(base + path, data=None if body is None else json.dumps(body).encode(),
                                 method="GET" if body is None else "POST", headers={"Content-Type": "application/json"})
    if token:
        req.add_header("Authorization", "Bearer " + token)
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.load(resp)

def register(localpart):
    nonce = call("/_synapse/admin/v1/register")["nonce"]
    password = "pw-" + localpart
    mac = hmac.new(secret, digestmod=hashlib.sha1)
    for part in (nonce, localpart, password, "notadmin"):
        mac.update(part.encode())
        mac.update(b"\x00") if part != "notadmin" else None
    call("/_synapse/admin/v1/register", {"nonce": nonce, "username": localpart, "password": password,
                                          "admin": False, "mac": mac.hexdigest()})

def login(localpart, device):
    r = call("/_matrix/client/v3/login", {"type": "m.login.password",
             "identifier": {"type": "m.id.user", "user": localpart}, "password": "pw-" + localpart, "device_id": device})
    return r["access_token"]

users = ["load%s-%d" % (run_id, k) for k in range(devices // 10)]
with ThreadPoolExecutor(8) as pool:
    list(pool.map(register, users + ["claimer" + run_id]))
    tokens = list(pool.map(lambda i: login(users[i // 10], "D%d" % (i % 10)), range(devices)))
    claimer = login("claimer" + run_id, "CLAIMER")
server_name = call("/_matrix/client/v3/account/whoami", token=claimer)["user_id"].split(":", 1)[1]
with open(os.environ["FLEET"], "w") as f:
    json.dump({"server_name": server_name, "run_id": run_id, "tokens": tokens, "claimer_token": claimer}, f)
PY

make -s build >&2
mkdir -p var
# shellcheck disable=SC2086
"$GO" run ./bench/loaddriver --server-binary dist/keyclaim-server --engine native,synapse \
	--synapse-url "$SYNAPSE_URL" --synapse-pid "$SYNAPSE_PID" --synapse-fleet "$FLEET" \
	--devices "$DEVICES" --keys-per-device "$KEYS" --sizes 1,10,100 --clients 8 --duration ${BENCH_SYNAPSE_DURATION:-10s} \
	${BENCH_SYNAPSE_ARGS:-} | tee var/bench-synapse.md
