"""mautrix-python (with python-olm) in the client compatibility matrix (../README.md).

    python harness.py STANDIN_URL TOKEN_FILE

Every device is a mautrix Client with its own OlmMachine (memory crypto store). mautrix's own
code uploads the keys (share_keys), queries (_fetch_keys) and claims (_create_outbound_sessions,
what share_group_session and send_encrypted_to_device call) and encrypts the to-device payload
(_encrypt_olm_event); each receiving device's machine decrypts it (_decrypt_olm_event): no /sync,
no /sendToDevice. mautrix-python uploads no fallback key, so FALLBACKONLY's is made with its
Olm account (python-olm) and signed by it.
"""

import asyncio
import importlib.metadata as md
import os
import secrets
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from harness_common import ALL_BOB_DEVICES, BOB_DEVICES, STEP_TIMEOUT, Run, Stop, signed_fallback_key  # noqa: E402

from mautrix.client import Client  # noqa: E402
from mautrix.crypto import OlmMachine  # noqa: E402
from mautrix.crypto.store import MemoryCryptoStore, StateStore  # noqa: E402
from mautrix.types import EventType, ToDeviceEvent  # noqa: E402

PING = EventType.find("org.keyclaim.compat.ping", EventType.Class.TO_DEVICE)


class NoRooms(StateStore):
    """No room is encrypted or shared: the scenario has no rooms."""

    async def is_encrypted(self, room_id):
        return False

    async def get_encryption_info(self, room_id):
        return None

    async def find_shared_rooms(self, user_id):
        return []


async def main(run):
    machines, clients = {}, []
    try:
        for dev, (user, token) in run.devices.items():
            if dev == "DRAIN":
                continue
            client = Client(mxid=user, device_id=dev, base_url=run.base, token=token)
            clients.append(client)
            mach = OlmMachine(client, MemoryCryptoStore(user, "compat"), NoRooms())
            await mach.load()
            machines[dev] = mach
        await scenario(run, machines)
    finally:
        for c in clients:
            await c.api.session.close()


async def scenario(run, machines):
    alice = machines["ALICE"]
    bob_user = run.devices["KEYED"][0]
    # 1. Uploads, by mautrix.
    for dev, mach in machines.items():
        await run.step(f"share_keys {dev}", mach.share_keys(0))
    fb = machines["FALLBACKONLY"].account
    fb.generate_fallback_key()
    (key_id, key), = fb.fallback_key["curve25519"].items()
    run.post("FALLBACKONLY", "upload", {"fallback_keys": signed_fallback_key(
        bob_user, "FALLBACKONLY", key_id, key, fb.sign)})
    fb.mark_keys_as_published()
    run.result["fallback"] = "harness"
    run.control("ready")

    # 2. Query, by mautrix.
    devices = await run.step("_fetch_keys", alice._fetch_keys([bob_user], include_untracked=True))
    known = devices.get(bob_user, {})
    run.say(f"alice knows bob's devices {sorted(known)}")

    # 3. Claim, by mautrix, for all of them at once (as share_group_session does).
    try:
        await run.step("_create_outbound_sessions", alice._create_outbound_sessions({bob_user: known}))
    except Stop:
        pass
    finally:
        run.control("claimed")
    if run.result["hang"]:
        raise Stop()

    # 4. Sessions, and a payload over each: mautrix encrypts, the device's machine decrypts.
    for dev in ALL_BOB_DEVICES:
        identity = known.get(dev)
        if identity is None or not await alice.crypto_store.has_session(identity.identity_key):
            continue
        run.result["sessions"].append(dev)
        if dev not in BOB_DEVICES:
            continue
        nonce = secrets.token_hex(8)
        session = await alice.crypto_store.get_latest_session(identity.identity_key)
        content = await alice._encrypt_olm_event(session, identity, PING, {"nonce": nonce})
        evt = ToDeviceEvent.deserialize({"type": "m.room.encrypted", "sender": alice.client.mxid,
                                         "content": content.serialize()})
        try:
            got = await asyncio.wait_for(machines[dev]._decrypt_olm_event(evt), STEP_TIMEOUT)
        except Exception as e:  # noqa: BLE001 - recorded as no decryption
            run.say(f"{dev} did not decrypt: {type(e).__name__}: {e}")
            continue
        body = got.content.serialize() if hasattr(got.content, "serialize") else dict(got.content)
        if got.type == PING and body.get("nonce") == nonce:
            run.result["decrypted"].append(dev)
            run.say(f"{dev} decrypted the payload")
        else:
            run.say(f"{dev} decrypted something else: {got.type} {body}")


def entry():
    run = Run("mautrix-python", md.version("mautrix"), "python-olm " + md.version("python-olm"),
              sys.argv[1], sys.argv[2])
    run.drive(main(run))


if __name__ == "__main__":
    entry()
