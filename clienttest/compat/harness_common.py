"""What the Python harnesses of the client compatibility matrix share (see README.md here).

A harness runs one library's machines for @alice:ALICE (the claiming client) and bob's claim
targets against the stand-in in front of the keys server, and prints, as its last line,
"COMPAT-RESULT " followed by a JSON object: library, version, olm, fallback, sessions,
decrypted, crash, hang and logs (every warning and error the library logged).
"""

import asyncio
import json
import logging
import sys
import traceback
import urllib.parse
import urllib.request

STEP_TIMEOUT = 20  # seconds; a step that takes longer is reported as a hang
BOB_DEVICES = ["DEVKEYSONLY", "EXHAUSTED", "FALLBACKONLY", "KEYED"]
ALL_BOB_DEVICES = BOB_DEVICES + ["UNKNOWN"]  # UNKNOWN: added to query answers by the stand-in


class Stop(Exception):
    """The scenario cannot go on (the crash or hang is already recorded)."""


class _Capture(logging.Handler):
    def __init__(self, into):
        super().__init__(logging.WARNING)
        self.into = into

    def emit(self, record):
        msg = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            msg += f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
        self.into.append(f"{record.levelname} {record.name}: {msg}")


class Run:
    def __init__(self, library, version, olm, base, token_file):
        self.base = base.rstrip("/")
        with open(token_file) as f:
            tokens = json.load(f)
        # device ID -> (user ID, access token)
        self.devices = {w["device_id"]: (w["user_id"], tok) for tok, w in tokens.items()}
        self.result = {
            "library": library, "version": version, "olm": olm, "fallback": "",
            "sessions": [], "decrypted": [], "crash": "", "hang": "", "logs": [],
        }
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="%(levelname)s %(name)s: %(message)s")
        logging.getLogger().addHandler(_Capture(self.result["logs"]))
        # asyncio's own complaints (a task's exception never retrieved) are the library's too.
        self.loop_errors = []

    def say(self, msg):
        print(msg, flush=True)

    async def step(self, name, awaitable, timeout=STEP_TIMEOUT):
        """Run one step of the library's code, bounded; a crash or a hang is recorded and stops."""
        try:
            return await asyncio.wait_for(awaitable, timeout)
        except asyncio.TimeoutError:
            self.result["hang"] = f"{name} did not finish within {timeout} s"
            self.say(f"HANG in {name}")
            raise Stop()
        except Stop:
            raise
        except Exception as e:  # noqa: BLE001 - every exception out of the library is a finding
            self.crashed(name, e)
            raise Stop()

    def crashed(self, name, e):
        if not self.result["crash"]:  # the first crash is the finding; later ones follow from it
            self.result["crash"] = f"{type(e).__name__}: {e} (in {name})"
        self.say(f"CRASH in {name}: {type(e).__name__}: {e}")
        traceback.print_exception(e, file=sys.stderr)

    def control(self, name):
        """POST /_compat/<name> to the stand-in (ready: uploads done; claimed: claim done)."""
        req = urllib.request.Request(f"{self.base}/_compat/{name}", data=b"{}", method="POST")
        with urllib.request.urlopen(req, timeout=STEP_TIMEOUT) as resp:
            self.say(f"stand-in {name}: {resp.read().decode().strip()}")

    def fetch_to_device(self, user, device):
        """The to-device events queued by the stand-in for USER's DEVICE (sync event dicts)."""
        url = f"{self.base}/_compat/to_device/{urllib.parse.quote(user)}/{device}"
        with urllib.request.urlopen(url, timeout=STEP_TIMEOUT) as resp:
            return json.loads(resp.read())["events"]

    def post(self, device, endpoint, body):
        """A plain POST /keys/<endpoint> as DEVICE (only for what the library cannot upload)."""
        user, token = self.devices[device]
        req = urllib.request.Request(
            f"{self.base}/_matrix/client/v3/keys/{endpoint}", data=json.dumps(body).encode(),
            method="POST", headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=STEP_TIMEOUT) as resp:
            return json.loads(resp.read())

    def finish(self):
        for k in ("sessions", "decrypted"):
            self.result[k] = sorted(set(self.result[k]))
        print("COMPAT-RESULT " + json.dumps(self.result), flush=True)

    def drive(self, coro):
        """Runs the harness coroutine: a Stop ends it early, anything else is a crash of the
        harness itself; either way the result is printed."""
        try:
            asyncio.run(coro)
        except Stop:
            pass
        except Exception as e:  # noqa: BLE001
            self.crashed("harness", e)
        self.finish()


def canonical(obj):
    """Matrix canonical JSON (sorted keys, no spaces, UTF-8)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def signed_fallback_key(user, device, key_id, key, sign):
    """The fallback_keys field of an upload: one signed_curve25519 key, signed with SIGN (the
    device's Olm account's ed25519 signing function, canonical JSON string -> signature)."""
    obj = {"key": key, "fallback": True}
    obj["signatures"] = {user: {f"ed25519:{device}": sign(canonical(obj))}}
    return {f"signed_curve25519:{key_id}": obj}
