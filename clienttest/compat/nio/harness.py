"""matrix-nio in the client compatibility matrix (../README.md).

    python harness.py STANDIN_URL TOKEN_FILE

Runs with matrix-nio 0.26.0 (vodozemac) and 0.25.2 (python-olm), each in its own venv. Every
device is an nio AsyncClient with its own store; nio's own code uploads the keys (keys_upload),
queries (keys_query), and sends two messages to an encrypted room with AsyncClient.room_send, a
bot's path: it claims (get_missing_sessions + keys_claim), shares a Megolm room key over the new
Olm sessions (PUT /sendToDevice, answered by the stand-in, which queues the messages) and sends
the encrypted events (acknowledged by the stand-in). Each of bob's devices fetches its queued
to-device messages and its own olm machine decrypts them (decrypt_event): no /sync.
nio uploads no fallback key, so FALLBACKONLY's is made with its Olm account and signed by it.
"""

import asyncio
import importlib.metadata as md
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from harness_common import ALL_BOB_DEVICES, BOB_DEVICES, Run, Stop, signed_fallback_key  # noqa: E402

from nio import AsyncClient, AsyncClientConfig  # noqa: E402
from nio.events import RoomKeyEvent, ToDeviceEvent  # noqa: E402
from nio.responses import KeysQueryError, KeysUploadError  # noqa: E402
from nio.rooms import MatrixRoom  # noqa: E402

ROOM = "!compat:compat.test"
SEND_TIMEOUT = 8  # seconds for one room_send on loopback; longer is a hang

try:
    OLM = "vodozemac " + md.version("vodozemac")
except md.PackageNotFoundError:
    OLM = "python-olm " + md.version("python-olm")


def fallback_key(client):
    """Generate a fallback key with the client's Olm account: (key ID, base64 key)."""
    acct = client.olm.account
    if OLM.startswith("vodozemac"):  # nio >= 0.26: {key_id: Curve25519PublicKey}
        inner = acct._account
        inner.generate_fallback_key()
        (key_id, key), = inner.fallback_key.items()
        key = key.to_base64()
        mark = inner.mark_keys_as_published
    else:  # python-olm (nio <= 0.25): olm.Account itself
        acct.generate_fallback_key()
        (key_id, key), = acct.fallback_key["curve25519"].items()
        mark = acct.mark_keys_as_published
    return key_id, key, mark


async def main(run, tmp):
    clients = {}
    for dev, (user, token) in run.devices.items():
        if dev == "DRAIN":
            continue
        c = AsyncClient(run.base, user, device_id=dev, store_path=os.path.join(tmp, dev),
                        config=AsyncClientConfig(encryption_enabled=True, store_sync_tokens=False))
        os.makedirs(os.path.join(tmp, dev))
        c.restore_login(user, dev, token)
        clients[dev] = c
    try:
        await scenario(run, clients)
    finally:
        for c in clients.values():
            await c.close()


async def scenario(run, clients):
    alice = clients["ALICE"]
    bob_user = run.devices["KEYED"][0]
    # 1. Uploads, by nio.
    for dev, c in clients.items():
        resp = await run.step(f"keys_upload {dev}", c.keys_upload())
        if isinstance(resp, KeysUploadError):
            run.crashed(f"keys_upload {dev}", RuntimeError(f"{resp}"))
            raise Stop()
        run.say(f"{dev}: uploaded, signed_curve25519 count {resp.signed_curve25519_count}")
    user, _ = run.devices["FALLBACKONLY"]
    key_id, key, mark = fallback_key(clients["FALLBACKONLY"])
    run.post("FALLBACKONLY", "upload", {"fallback_keys": signed_fallback_key(
        user, "FALLBACKONLY", key_id, key, clients["FALLBACKONLY"].olm.account.sign)})
    mark()
    run.result["fallback"] = "harness"
    run.control("ready")

    # 2. Query, by nio.
    alice.olm.users_for_key_query.add(bob_user)
    resp = await run.step("keys_query", alice.keys_query())
    if isinstance(resp, KeysQueryError):
        run.crashed("keys_query", RuntimeError(f"{resp}"))
        raise Stop()
    known = sorted(d.id for d in alice.device_store.active_user_devices(bob_user))
    run.say(f"alice knows bob's devices {known}")

    # 3. A bot's message to an encrypted room with bob in it, by nio's AsyncClient.room_send:
    # it claims for the devices without a session (get_missing_sessions + keys_claim), shares
    # a Megolm room key over the new Olm sessions (PUT /sendToDevice, answered by the stand-in)
    # and sends the encrypted event. A second message must not need any of that again.
    room = MatrixRoom(ROOM, alice.user_id, encrypted=True)
    room.add_member(alice.user_id, "alice", None)
    room.add_member(bob_user, "bob", None)
    room.members_synced = True
    alice.rooms[ROOM] = room
    try:
        for n in (1, 2):  # the second one also after a crash of the first: does nio recover?
            try:
                resp = await run.step(f"room_send {n}", alice.room_send(
                    ROOM, "m.room.message", {"msgtype": "m.text", "body": f"hello {n}"},
                    ignore_unverified_devices=True), timeout=SEND_TIMEOUT)
                run.say(f"room_send {n}: {type(resp).__name__}")
            except Stop:
                if run.result["hang"]:
                    run.say("nio still waits for the room key share that the crash left unfinished")
                    break
    finally:
        run.control("claimed")

    # 4. Which devices got an Olm session.
    for device in alice.device_store.active_user_devices(bob_user):
        if device.id in ALL_BOB_DEVICES and alice.olm.session_store.get(device.curve25519):
            run.result["sessions"].append(device.id)

    # 5. The room key as each device receives it (to-device messages queued by the stand-in),
    # decrypted by that device's own olm machine.
    group = alice.olm.outbound_group_sessions.get(ROOM)
    for dev in BOB_DEVICES:
        for raw in run.fetch_to_device(bob_user, dev):
            got = clients[dev].olm.decrypt_event(ToDeviceEvent.parse_event(raw))
            if isinstance(got, RoomKeyEvent) and group is not None and got.session_id == group.id and got.room_id == ROOM:
                run.result["decrypted"].append(dev)
                run.say(f"{dev} decrypted the room key")
            else:
                run.say(f"{dev} did not decrypt the room key: {got!r}")


def entry():
    run = Run("matrix-nio", md.version("matrix-nio"), OLM, sys.argv[1], sys.argv[2])
    with tempfile.TemporaryDirectory() as tmp:
        run.drive(main(run, tmp))


if __name__ == "__main__":
    entry()
