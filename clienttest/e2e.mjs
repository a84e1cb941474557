// End-to-end test of the keyclaim keys server against a real Matrix client's crypto library:
// matrix-sdk-crypto (Rust), as shipped to Element Web in @matrix-org/matrix-sdk-crypto-wasm.
//
//   node e2e.mjs BASE_URL TOKEN_FILE
//   KEYCLAIM_URL=http://127.0.0.1:8008 KEYCLAIM_TOKENS=tokens.json node e2e.mjs
//
// TOKEN_FILE is the server's --tokens file: {"<token>": {"user_id": ..., "device_id": ...}}. It
// must name these devices, all on one server: @alice ALICEDEV and ALICEPHONE, @bob BOBDEV,
// @carol CAROLDEV, @dave DAVEDEV, @erin ERINDEV, @frank FRANKDEV. The server must be fresh (an
// empty store) and run in msc4072 mode with federation off (--federation=false), so that a remote
// user is a failure of its server at once. KEYCLAIM_SDK_LOG=debug (or trace, info, warn) turns
// on the SDK's own log.
//
// Every OlmMachine's /keys/upload, /keys/query and /keys/claim requests go to the server over
// HTTP, and their answers go back into the SDK unchanged (markRequestAsSent). What keyclaim does
// not serve is played by this script, and so is NOT exercised against a server here:
//   - to-device messages (PUT /sendToDevice and their delivery in /sync): the script hands the
//     encrypted contents of the SDK's ToDeviceRequests straight to the target OlmMachine with
//     receiveSyncChanges, as a sync would;
//   - /sync's device_one_time_keys_count and device_unused_fallback_key_types: the counts the
//     script passes are the ones keyclaim answers to an empty /keys/upload; the unused fallback key
//     types are what the script knows it uploaded and saw claimed (keyclaim does not report them);
//   - room membership, room events and their transport (the script builds the encrypted room
//     event itself), cross-signing (no /keys/device_signing/upload or /keys/signatures/upload:
//     no cross-signing identity is bootstrapped, so the SDK never asks for them), key backup,
//     verification and dehydrated devices. A request of any of those kinds fails the test.
//
// Progress goes to stdout; any failed check prints "FAIL: ..." and exits with status 1.

import { readFileSync } from "node:fs";
import { isDeepStrictEqual } from "node:util";
import {
    initAsync,
    OlmMachine,
    UserId,
    DeviceId,
    RoomId,
    RequestType,
    DeviceLists,
    EncryptionSettings,
    DecryptionSettings,
    TrustRequirement,
    ProcessedToDeviceEventType,
    Tracing,
    LoggerLevel,
    getVersions,
} from "@matrix-org/matrix-sdk-crypto-wasm";

const OTK_ALG = "signed_curve25519";
const OLM_ALG = "m.olm.v1.curve25519-aes-sha2";
const MEGOLM_ALG = "m.megolm.v1.aes-sha2";

// ---------------------------------------------------------------------------------------------
// Reporting

class CheckError extends Error {}

function check(cond, msg, detail) {
    if (!cond) {
        const extra = detail === undefined ? "" : "\n  " + (typeof detail === "string" ? detail : JSON.stringify(detail));
        throw new CheckError(msg + extra);
    }
}

let stepNo = 0;
const started = performance.now();
function step(title) {
    stepNo++;
    console.log(`\n== ${stepNo}. ${title}  [${((performance.now() - started) / 1000).toFixed(2)}s]`);
}
function ok(msg) {
    console.log(`   ok: ${msg}`);
}
function info(msg) {
    console.log(`   .. ${msg}`);
}

function short(s, n = 400) {
    return s.length > n ? s.slice(0, n) + `... (${s.length} bytes)` : s;
}

// ---------------------------------------------------------------------------------------------
// Arguments and tokens

const baseURL = (process.argv[2] ?? process.env.KEYCLAIM_URL ?? "").replace(/\/+$/, "");
const tokenFile = process.argv[3] ?? process.env.KEYCLAIM_TOKENS ?? "";
if (!baseURL || !tokenFile) {
    console.error("usage: node e2e.mjs BASE_URL TOKEN_FILE   (or KEYCLAIM_URL and KEYCLAIM_TOKENS)");
    process.exit(2);
}

const tokens = JSON.parse(readFileSync(tokenFile, "utf8"));
function tokenFor(localpart, deviceId) {
    for (const [token, who] of Object.entries(tokens)) {
        if (who.user_id.startsWith(`@${localpart}:`) && who.device_id === deviceId) {
            return { token, userId: who.user_id };
        }
    }
    throw new CheckError(`the token file ${tokenFile} has no token for @${localpart}:... device ${deviceId}`);
}
const serverName = tokenFor("alice", "ALICEDEV").userId.split(":").slice(1).join(":");

// ---------------------------------------------------------------------------------------------
// HTTP

async function post(token, endpoint, body) {
    const url = `${baseURL}/_matrix/client/v3/keys/${endpoint}`;
    const res = await fetch(url, {
        method: "POST",
        headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
        body: typeof body === "string" ? body : JSON.stringify(body),
    });
    const text = await res.text();
    check(res.status === 200, `POST /keys/${endpoint} answered ${res.status}, not 200`, short(text));
    let json;
    try {
        json = JSON.parse(text);
    } catch (e) {
        throw new CheckError(`POST /keys/${endpoint} answered a body that is not JSON: ${short(text)}`);
    }
    return { text, json };
}

// ---------------------------------------------------------------------------------------------
// One device: an OlmMachine plus what the script saw it upload.

const clients = new Map(); // "user|device" -> Client

class Client {
    constructor(name, localpart, deviceId) {
        this.name = name;
        const t = tokenFor(localpart, deviceId);
        this.token = t.token;
        this.userId = t.userId;
        this.deviceId = deviceId;
        this.uploadedOTKs = new Map(); // key ID -> signed key object, as uploaded
        this.uploadOrder = []; // key IDs in upload order (one array per batch, concatenated)
        this.batches = [];
        this.fallback = null; // { id, value } of the last uploaded fallback key
        this.fallbackUnused = false; // what a homeserver's device_unused_fallback_key_types would say
        this.claimsSeen = []; // every claim answer this client's SDK was given
        this.uploadCounts = []; // one_time_key_counts of every upload answer
    }

    async init() {
        this.machine = await OlmMachine.initialize(new UserId(this.userId), new DeviceId(this.deviceId));
        clients.set(`${this.userId}|${this.deviceId}`, this);
        return this;
    }

    get ed25519() {
        return this.machine.identityKeys.ed25519.toBase64();
    }
    get curve25519() {
        return this.machine.identityKeys.curve25519.toBase64();
    }

    // Sends one request of the SDK to the server and gives the answer back to the SDK.
    async send(req) {
        const kind = { [RequestType.KeysUpload]: "upload", [RequestType.KeysQuery]: "query", [RequestType.KeysClaim]: "claim" }[req.type];
        if (kind === undefined) {
            throw new CheckError(`${this.name}: send() given a request of type ${req.type}`);
        }
        const res = await post(this.token, kind, req.body);
        if (kind === "upload") {
            this.recordUpload(JSON.parse(req.body), res.json);
        }
        if (kind === "claim") {
            this.claimsSeen.push({ request: JSON.parse(req.body), response: res.json });
        }
        await markSent(this, req, res.text);
        return res.json;
    }

    recordUpload(body, answer) {
        check(
            answer.one_time_key_counts && typeof answer.one_time_key_counts === "object",
            `${this.name}: /keys/upload answer has no one_time_key_counts object`,
            answer,
        );
        this.uploadCounts.push(answer.one_time_key_counts);
        if (body.device_keys) {
            this.deviceKeys = body.device_keys;
        }
        const batch = Object.keys(body.one_time_keys ?? {}).sort();
        for (const id of batch) {
            this.uploadedOTKs.set(id, body.one_time_keys[id]);
        }
        if (batch.length > 0) {
            this.batches.push(batch);
            this.uploadOrder.push(...batch);
        }
        const fb = Object.entries(body.fallback_keys ?? {});
        if (fb.length > 0) {
            check(fb.length === 1, `${this.name}: the SDK uploaded ${fb.length} fallback keys at once`, body.fallback_keys);
            this.fallback = { id: fb[0][0], value: fb[0][1] };
            this.fallbackUnused = true;
        }
        this.lastUpload = { body, answer };
    }

    // Processes the SDK's outgoing requests once (one "round"): upload, query and claim go to
    // the server; to-device requests are delivered to the target machines in this process.
    // Returns the requests' kinds, in order.
    async round() {
        const reqs = await this.machine.outgoingRequests();
        const kinds = [];
        for (const req of reqs) {
            switch (req.type) {
                case RequestType.KeysUpload:
                    kinds.push("upload");
                    await this.send(req);
                    break;
                case RequestType.KeysQuery:
                    kinds.push("query");
                    await this.send(req);
                    break;
                case RequestType.KeysClaim:
                    kinds.push("claim");
                    await this.send(req);
                    break;
                case RequestType.ToDevice:
                    kinds.push("to-device");
                    await this.deliverToDevice(req);
                    break;
                default:
                    throw new CheckError(
                        `${this.name}: the SDK wants to send a request of type ${req.type} (${req.constructor.name}), ` +
                            `which this test does not serve: ${short(req.body ?? "")}`,
                    );
            }
        }
        return kinds;
    }

    // Runs rounds until the SDK has nothing more to send; returns the kinds of every round.
    async settle(maxRounds = 6) {
        const rounds = [];
        for (let i = 0; i < maxRounds; i++) {
            const kinds = await this.round();
            rounds.push(kinds);
            if (kinds.length === 0) return rounds;
        }
        throw new CheckError(`${this.name}: the SDK still had requests after ${maxRounds} rounds: ${JSON.stringify(rounds)}`);
    }

    // Hands a ToDeviceRequest's contents to the target machines, as their /sync would.
    // Returns, per target "user|device", the processed events of the receiving machine.
    async deliverToDevice(req) {
        const body = JSON.parse(req.body);
        const results = {};
        for (const [userId, devices] of Object.entries(body.messages ?? {})) {
            for (const [deviceId, content] of Object.entries(devices)) {
                const target = clients.get(`${userId}|${deviceId}`);
                check(target, `${this.name} sent a to-device ${req.event_type} to ${userId} ${deviceId}, which is no device of this test`);
                const event = { type: req.event_type, sender: this.userId, content };
                results[`${userId}|${deviceId}`] = await target.sync([event]);
            }
        }
        await this.machine.markRequestAsSent(req.id, req.type, "{}");
        return results;
    }

    // Plays the homeserver's /sync for this device: to-device events, plus the one-time key
    // counts keyclaim reports (an empty /keys/upload answers the current counts) and the unused
    // fallback key types as far as this script knows them.
    async sync(toDeviceEvents = []) {
        const counts = (await post(this.token, "upload", {})).json.one_time_key_counts;
        check(counts && typeof counts[OTK_ALG] === "number", `${this.name}: an empty /keys/upload did not answer counts with ${OTK_ALG}`, counts);
        this.lastSyncCounts = counts;
        const unused = new Set(this.fallbackUnused ? [OTK_ALG] : []);
        return await this.machine.receiveSyncChanges(
            JSON.stringify(toDeviceEvents),
            new DeviceLists(),
            new Map(Object.entries(counts)),
            unused,
            new DecryptionSettings(TrustRequirement.Untrusted),
        );
    }
}

async function markSent(client, req, responseText) {
    try {
        const r = await client.machine.markRequestAsSent(req.id, req.type, responseText);
        check(r === true, `${client.name}: markRequestAsSent returned ${r}`);
    } catch (e) {
        if (e instanceof CheckError) throw e;
        throw new CheckError(
            `${client.name}: the SDK rejected the server's answer (markRequestAsSent threw: ${e?.message ?? e})\n` +
                `  request (type ${req.type}): ${short(req.body, 1500)}\n  response: ${short(responseText, 1500)}`,
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Scenario helpers

// Upload everything the SDK wants, then play one sync in which the homeserver reports no unused
// fallback key (true until one was uploaded), so the SDK creates and uploads its fallback key.
async function bringUp(client) {
    const rounds = await client.settle();
    check(rounds[0].includes("upload"), `${client.name}: the SDK's first requests had no /keys/upload`, rounds);
    check(client.lastUpload?.body.device_keys, `${client.name}: the first upload carried no device_keys`);
    const n = client.uploadOrder.length;
    check(n > 0, `${client.name}: the SDK uploaded no one-time keys`);
    const counts = client.uploadCounts.at(-1);
    check(counts[OTK_ALG] === n, `${client.name}: uploaded ${n} one-time keys, the server counts ${counts[OTK_ALG]}`, counts);
    ok(`${client.name} uploaded device keys and ${n} one-time keys; one_time_key_counts ${JSON.stringify(counts)}`);
    check(rounds.at(-1).length === 0, "unreachable");
    ok(`${client.name}: the SDK accepted the counts and asks for no further upload (rounds: ${JSON.stringify(rounds)})`);

    await client.sync([]);
    const fbRounds = await client.settle();
    check(client.fallback, `${client.name}: after a sync reporting no unused fallback key the SDK uploaded none`, fbRounds);
    check(client.fallback.id.startsWith(`${OTK_ALG}:`), `${client.name}: fallback key ID ${client.fallback.id} is not ${OTK_ALG}`);
    check(client.fallback.value.fallback === true, `${client.name}: the uploaded fallback key is not marked "fallback": true`, client.fallback.value);
    const c2 = client.uploadCounts.at(-1);
    check(c2[OTK_ALG] === n, `${client.name}: after the fallback key upload the server counts ${c2[OTK_ALG]} one-time keys, not ${n} (fallback keys must not be counted)`, c2);
    ok(`${client.name} uploaded fallback key ${client.fallback.id}; counts still ${JSON.stringify(c2)}`);

    // One more sync with the server's counts: the SDK must be content.
    await client.sync([]);
    const again = await client.round();
    check(!again.includes("upload"), `${client.name}: after a sync with the server's counts ${JSON.stringify(client.lastSyncCounts)} the SDK wants to upload again`, again);
    ok(`${client.name}: a sync with the server's counts ${JSON.stringify(client.lastSyncCounts)} asks for no upload`);
}

// Checks that the SDK of `viewer` knows `owner`'s device with exactly the owner's own keys.
async function checkDeviceKnown(viewer, owner) {
    const devices = await viewer.machine.getUserDevices(new UserId(owner.userId));
    const dev = devices.get(new DeviceId(owner.deviceId));
    check(dev, `${viewer.name}: the SDK does not know ${owner.userId} ${owner.deviceId} after /keys/query`, devices.keys().map(String));
    const ed = dev.ed25519Key?.toBase64();
    const cu = dev.curve25519Key?.toBase64();
    check(ed === owner.ed25519, `${viewer.name} sees ${owner.deviceId}'s ed25519 key ${ed}, the device itself has ${owner.ed25519}`);
    check(cu === owner.curve25519, `${viewer.name} sees ${owner.deviceId}'s curve25519 key ${cu}, the device itself has ${owner.curve25519}`);
}

// Plays a sync for `client`, whose server-side count should now be `expectCount`, and checks
// the SDK tops its one-time keys back up to its target (the size of its first batch) in one
// upload, that the server then counts exactly the target, and that the SDK is then content.
async function topUp(client, expectCount) {
    const target = client.batches[0].length;
    const before = client.uploadOrder.length;
    await client.sync([]);
    const have = client.lastSyncCounts[OTK_ALG];
    check(have === expectCount, `${client.name}: the server counts ${have} one-time keys, expected ${expectCount}`, client.lastSyncCounts);
    const rounds = await client.settle();
    const added = client.uploadOrder.length - before;
    check(added === target - have, `${client.name}: with the server's count ${have} the SDK uploaded ${added} one-time keys, expected ${target - have}`, rounds);
    const counts = client.uploadCounts.at(-1);
    check(counts[OTK_ALG] === target, `${client.name}: after topping up the server counts ${counts[OTK_ALG]}, not ${target}`, counts);
    check(rounds.filter((r) => r.includes("upload")).length === 1, `${client.name}: the SDK uploaded more than once`, rounds);
    ok(`${client.name}: server count ${have} -> the SDK uploaded ${added} key(s) -> counts ${JSON.stringify(counts)} -> no further upload`);
    return added;
}

// Shares a Megolm room key from `sender` with `recipients` (Clients of one user), delivers the
// Olm-encrypted to-device messages, encrypts a room message and checks each recipient decrypts it.
async function megolmRoundTrip(sender, recipients, roomIdStr, text) {
    const roomId = new RoomId(roomIdStr);
    const users = [...new Set(recipients.map((r) => r.userId))];
    const settings = new EncryptionSettings();
    const toDevice = await sender.machine.shareRoomKey(roomId, users.map((u) => new UserId(u)), settings);
    check(toDevice.length > 0, `${sender.name}: shareRoomKey produced no to-device request`);
    const gotKey = new Set();
    for (const req of toDevice) {
        const body = JSON.parse(req.body);
        if (req.event_type !== "m.room.encrypted") {
            throw new CheckError(`${sender.name}: shareRoomKey produced a ${req.event_type} to-device request (no Olm session?): ${short(req.body, 1500)}`);
        }
        for (const [userId, devices] of Object.entries(body.messages)) {
            for (const [deviceId, content] of Object.entries(devices)) {
                const target = clients.get(`${userId}|${deviceId}`);
                check(target, `to-device message for unknown ${userId} ${deviceId}`);
                check(content.algorithm === OLM_ALG, `to-device content for ${deviceId} is ${content.algorithm}`);
                check(content.sender_key === sender.curve25519, `to-device content's sender_key is not ${sender.name}'s curve25519 key`);
                const ct = content.ciphertext?.[target.curve25519];
                check(ct, `the Olm message for ${deviceId} is not encrypted to its curve25519 key ${target.curve25519}`, Object.keys(content.ciphertext ?? {}));
                info(`${sender.name} -> ${target.name}: Olm message type ${ct.type} (${ct.type === 0 ? "pre-key: opens a session with a claimed key" : "normal"})`);
            }
        }
        const results = await sender.deliverToDevice(req);
        for (const [who, events] of Object.entries(results)) {
            const target = clients.get(who);
            check(events.length === 1, `${target.name} processed ${events.length} to-device events, not 1`);
            const ev = events[0];
            if (ev.type !== ProcessedToDeviceEventType.Decrypted) {
                throw new CheckError(
                    `${target.name} could not decrypt ${sender.name}'s Olm message (processed type ${ev.type}` +
                        (ev.utdInfo ? `, reason ${ev.utdInfo.reason}` : "") +
                        `): ${short(ev.rawEvent, 600)}`,
                );
            }
            const raw = JSON.parse(ev.rawEvent);
            check(raw.type === "m.room_key", `${target.name} decrypted a ${raw.type}, not m.room_key`);
            check(raw.content.room_id === roomIdStr, `${target.name}'s room key is for ${raw.content.room_id}`);
            gotKey.add(who);
        }
    }
    for (const r of recipients) {
        check(gotKey.has(`${r.userId}|${r.deviceId}`), `${sender.name} shared no room key with ${r.name}`);
    }
    ok(`${sender.name}'s Olm-encrypted m.room_key for ${roomIdStr} decrypted by ${recipients.map((r) => r.name).join(", ")}`);

    const plaintext = { msgtype: "m.text", body: text };
    const encrypted = JSON.parse(await sender.machine.encryptRoomEvent(new RoomId(roomIdStr), "m.room.message", JSON.stringify(plaintext)));
    check(encrypted.algorithm === MEGOLM_ALG, `encryptRoomEvent produced ${encrypted.algorithm}`);
    const event = {
        type: "m.room.encrypted",
        event_id: `$${sender.deviceId}-${Date.now()}-${Math.random().toString(36).slice(2)}`,
        sender: sender.userId,
        origin_server_ts: Date.now(),
        room_id: roomIdStr,
        content: encrypted,
    };
    for (const r of recipients) {
        let dec;
        try {
            dec = await r.machine.decryptRoomEvent(JSON.stringify(event), new RoomId(roomIdStr), new DecryptionSettings(TrustRequirement.Untrusted));
        } catch (e) {
            throw new CheckError(`${r.name} could not decrypt ${sender.name}'s room message: ${e?.description ?? e?.message ?? e}`);
        }
        const got = JSON.parse(dec.event);
        check(got.type === "m.room.message" && got.content.body === text, `${r.name} decrypted something else`, got);
        check(dec.sender.toString() === sender.userId, `${r.name}: decrypted sender is ${dec.sender}`);
        check(dec.senderCurve25519Key === sender.curve25519, `${r.name}: the Megolm session's sender key is not ${sender.name}'s`);
    }
    ok(`${recipients.map((r) => r.name).join(", ")} decrypted ${sender.name}'s Megolm message: ${JSON.stringify(text)}`);
}

// The key a claim answer gives a device: [keyId, value], or null for {}.
function claimed(answer, userId, deviceId) {
    const dev = answer.one_time_keys?.[userId]?.[deviceId];
    check(dev !== undefined, `the claim answer has no entry for ${userId} ${deviceId} (MSC4072: every requested device answers)`, answer);
    check(dev !== null && typeof dev === "object", `the claim answer's entry for ${userId} ${deviceId} is not an object`, dev);
    const entries = Object.entries(dev);
    check(entries.length <= 1, `the claim answer gives ${userId} ${deviceId} ${entries.length} keys`, dev);
    return entries.length === 0 ? null : entries[0];
}

// ---------------------------------------------------------------------------------------------
// The scenario

async function main() {
    await initAsync();
    const sdkLog = process.env.KEYCLAIM_SDK_LOG;
    if (sdkLog) {
        const level = { trace: LoggerLevel.Trace, debug: LoggerLevel.Debug, info: LoggerLevel.Info, warn: LoggerLevel.Warn }[sdkLog];
        check(level !== undefined, `KEYCLAIM_SDK_LOG=${sdkLog}: use trace, debug, info or warn`);
        new Tracing(level).turnOn();
    }
    const v = getVersions();
    console.log(`matrix-sdk-crypto-wasm: matrix-sdk-crypto ${v.matrix_sdk_crypto}, vodozemac ${v.vodozemac}`);
    console.log(`server ${baseURL}, server name ${serverName}, tokens ${tokenFile}`);

    const alice = await new Client("Alice/ALICEDEV", "alice", "ALICEDEV").init();
    const alice2 = await new Client("Alice/ALICEPHONE", "alice", "ALICEPHONE").init();
    const bob = await new Client("Bob/BOBDEV", "bob", "BOBDEV").init();
    const aliceDevices = [alice, alice2];

    // ----
    step("every device uploads device keys, one-time keys and a fallback key");
    for (const c of [alice, alice2, bob]) {
        await bringUp(c);
    }

    // ----
    step("Bob tracks Alice and queries her device keys");
    await bob.machine.updateTrackedUsers([new UserId(alice.userId)]);
    const bobRounds = await bob.settle();
    check(bobRounds[0].includes("query"), "Bob's SDK sent no /keys/query after updateTrackedUsers", bobRounds);
    for (const a of aliceDevices) {
        await checkDeviceKnown(bob, a);
        ok(`Bob's SDK accepted ${a.deviceId} (signature checked) with ed25519 ${a.ed25519.slice(0, 12)}..., curve25519 ${a.curve25519.slice(0, 12)}...`);
    }
    {
        // And the raw answer carries the device keys exactly as uploaded.
        const q = await post(bob.token, "query", { device_keys: { [alice.userId]: [] } });
        for (const a of aliceDevices) {
            const got = q.json.device_keys?.[alice.userId]?.[a.deviceId];
            check(isDeepStrictEqual(got, a.deviceKeys), `/keys/query returns ${a.deviceId}'s device keys changed`, { got, uploaded: a.deviceKeys });
        }
        ok("/keys/query returns both Alice devices' device keys exactly as uploaded");
    }

    // ----
    step("Bob claims one-time keys for Alice's devices through the SDK (getMissingSessions)");
    const claimReq = await bob.machine.getMissingSessions([new UserId(alice.userId)]);
    check(claimReq, "Bob's SDK has no key claim request for Alice's devices");
    const claimBody = JSON.parse(claimReq.body);
    info(`Bob's SDK claims ${JSON.stringify(claimBody.one_time_keys)}`);
    for (const a of aliceDevices) {
        check(claimBody.one_time_keys?.[alice.userId]?.[a.deviceId] === OTK_ALG, `Bob's claim request does not ask for ${a.deviceId}`, claimBody);
    }
    const bobClaim = await bob.send(claimReq);
    for (const a of aliceDevices) {
        const k = claimed(bobClaim, alice.userId, a.deviceId);
        check(k, `the server gave Bob no key for ${a.deviceId}`, bobClaim);
        check(a.uploadedOTKs.has(k[0]), `the key ${k[0]} given for ${a.deviceId} is not a one-time key it uploaded`);
        check(isDeepStrictEqual(k[1], a.uploadedOTKs.get(k[0])), `the key ${k[0]} of ${a.deviceId} came back changed`, { got: k[1], uploaded: a.uploadedOTKs.get(k[0]) });
        check(k[0] === a.uploadOrder[0], `the server gave ${k[0]} for ${a.deviceId}, not its oldest key ${a.uploadOrder[0]}`);
        ok(`${a.deviceId}: claimed ${k[0]}, its oldest one-time key, exactly as uploaded`);
    }
    check(isDeepStrictEqual(bobClaim.failures, {}), "the claim answer's failures is not {}", bobClaim.failures);
    const missingAfter = await bob.machine.getMissingSessions([new UserId(alice.userId)]);
    check(missingAfter === null || missingAfter === undefined, "Bob's SDK still misses sessions after the claim", missingAfter?.body);
    // (getMissingSessions is also empty for a device whose key the SDK rejected, which it backs
    // off from: step 4 is what proves the sessions, and step 9 that a bad key is caught.)
    ok("Bob's SDK accepted the claim answer (markRequestAsSent) and asks for no further claim");

    // ----
    step("Bob shares a Megolm room key with Alice's devices over the new Olm sessions; Alice decrypts");
    await megolmRoundTrip(bob, aliceDevices, `!room1:${serverName}`, "hello Alice, from Bob");
    // Bob's claim took one of each Alice device's 50 keys: at the next sync the SDK tops up.
    for (const a of aliceDevices) {
        await topUp(a, a.uploadOrder.length - 1);
    }

    // ----
    step("exhaustion: Carol drains Alice's one-time keys with plain claims until the fallback key comes back");
    const carol = await new Client("Carol/CAROLDEV", "carol", "CAROLDEV").init();
    await carol.settle();
    // Per device, the one-time key IDs handed out so far: Bob's claim, then Carol's.
    const drained = new Map(aliceDevices.map((a) => [a.deviceId, [claimed(bobClaim, alice.userId, a.deviceId)[0]]]));
    const fallbackSeen = new Map();
    const maxClaims = Math.max(...aliceDevices.map((a) => a.uploadOrder.length)) + 5;
    let claims = 0;
    while (fallbackSeen.size < aliceDevices.length) {
        check(claims < maxClaims, `no fallback key after ${claims} claims`, Object.fromEntries(drained));
        claims++;
        const want = Object.fromEntries(aliceDevices.map((a) => [a.deviceId, OTK_ALG]));
        const { json } = await post(carol.token, "claim", { one_time_keys: { [alice.userId]: want } });
        for (const a of aliceDevices) {
            const k = claimed(json, alice.userId, a.deviceId);
            check(k, `claim ${claims}: ${a.deviceId} answered {} although it has a fallback key`, json);
            if (fallbackSeen.has(a.deviceId)) {
                check(k[0] === a.fallback.id && isDeepStrictEqual(k[1], a.fallback.value), `claim ${claims}: ${a.deviceId} answered something other than its fallback key after it ran out`, k);
                continue;
            }
            if (a.uploadedOTKs.has(k[0]) && k[1].fallback !== true) {
                const list = drained.get(a.deviceId);
                check(!list.includes(k[0]), `claim ${claims}: one-time key ${k[0]} of ${a.deviceId} handed out twice`);
                check(isDeepStrictEqual(k[1], a.uploadedOTKs.get(k[0])), `claim ${claims}: ${a.deviceId}'s key ${k[0]} came back changed`);
                list.push(k[0]);
            } else {
                check(a.fallback && k[0] === a.fallback.id, `claim ${claims}: ${a.deviceId} answered ${k[0]}, neither an uploaded one-time key nor its fallback key ${a.fallback?.id}`, k);
                check(isDeepStrictEqual(k[1], a.fallback.value), `claim ${claims}: ${a.deviceId}'s fallback key came back changed`, { got: k[1], uploaded: a.fallback.value });
                fallbackSeen.set(a.deviceId, claims);
            }
        }
    }
    for (const a of aliceDevices) {
        const list = drained.get(a.deviceId);
        check(list.length === a.uploadOrder.length, `${a.deviceId}: ${list.length} one-time keys handed out before the fallback key, ${a.uploadOrder.length} were uploaded`);
        check(isDeepStrictEqual(list, a.uploadOrder), `${a.deviceId}: one-time keys not handed out oldest first, by key ID within a batch`, { got: list, uploaded: a.uploadOrder });
        ok(`${a.deviceId}: all ${list.length} one-time keys handed out once each, in upload order; then its fallback key ${a.fallback.id} (claim ${fallbackSeen.get(a.deviceId)}), exactly as uploaded`);
    }
    {
        const { json } = await post(carol.token, "claim", { one_time_keys: { [alice.userId]: { ALICEDEV: OTK_ALG } } });
        const k = claimed(json, alice.userId, "ALICEDEV");
        check(k && k[0] === alice.fallback.id, "a used fallback key is not handed out again", json);
        ok("a used fallback key is handed out again");
    }
    for (const a of aliceDevices) {
        const counts = (await post(a.token, "upload", {})).json.one_time_key_counts;
        check(counts[OTK_ALG] === 0, `${a.deviceId}: the server counts ${counts[OTK_ALG]} one-time keys after draining, not 0`, counts);
    }
    ok(`Alice's counts after draining: ${JSON.stringify({ [OTK_ALG]: 0 })} (signed_curve25519 present with 0)`);

    // ----
    step("Dave, a new device, claims through the SDK while Alice has only fallback keys, and still gets through");
    const dave = await new Client("Dave/DAVEDEV", "dave", "DAVEDEV").init();
    await dave.settle();
    await dave.machine.updateTrackedUsers([new UserId(alice.userId)]);
    await dave.settle();
    for (const a of aliceDevices) await checkDeviceKnown(dave, a);
    const daveReq = await dave.machine.getMissingSessions([new UserId(alice.userId)]);
    check(daveReq, "Dave's SDK has no key claim request for Alice's devices");
    const daveClaim = await dave.send(daveReq);
    for (const a of aliceDevices) {
        const k = claimed(daveClaim, alice.userId, a.deviceId);
        check(k && k[0] === a.fallback.id && isDeepStrictEqual(k[1], a.fallback.value), `Dave was not given ${a.deviceId}'s fallback key`, daveClaim);
    }
    ok("Dave's SDK claimed and accepted both Alice devices' fallback keys");
    const daveMissing = await dave.machine.getMissingSessions([new UserId(alice.userId)]);
    check(!daveMissing, "Dave's SDK still misses sessions after claiming the fallback keys", daveMissing?.body);
    await megolmRoundTrip(dave, aliceDevices, `!room2:${serverName}`, "hello Alice, from Dave, over your fallback keys");

    // ----
    step("Alice's SDK replenishes from the server's counts (0) and the next claim gets a fresh one-time key");
    for (const a of aliceDevices) {
        // Its fallback key was claimed, so a homeserver would no longer list it as unused. (The SDK
        // replaces a fallback key only once it is an hour old, so no new one is expected here.)
        a.fallbackUnused = false;
        await topUp(a, 0);
    }
    {
        const { json } = await post(carol.token, "claim", { one_time_keys: { [alice.userId]: { ALICEDEV: OTK_ALG } } });
        const k = claimed(json, alice.userId, "ALICEDEV");
        const firstNew = alice.batches.at(-1)[0];
        check(k && k[0] === firstNew && k[1].fallback !== true, `after replenishing, ALICEDEV answered ${k?.[0]}, not the new batch's first key ${firstNew}`, json);
        ok(`after replenishing, a claim gets ${k[0]}, the oldest key of the new batch`);
    }

    // ----
    step("MSC4072: a claim naming an unknown device, an unknown user and a remote user answers for every device");
    const erin = await new Client("Erin/ERINDEV", "erin", "ERINDEV").init();
    await erin.settle();
    await erin.machine.updateTrackedUsers([new UserId(alice.userId)]);
    await erin.settle();
    const erinReq = await erin.machine.getMissingSessions([new UserId(alice.userId)]);
    check(erinReq, "Erin's SDK has no key claim request for Alice's devices");
    const body = JSON.parse(erinReq.body);
    const nobody = `@nobody:${serverName}`;
    const remote = "@zed:elsewhere.test";
    body.one_time_keys[alice.userId].NOSUCHDEVICE = OTK_ALG;
    body.one_time_keys[nobody] = { NODEVICE: OTK_ALG };
    body.one_time_keys[remote] = { ZEDDEV: OTK_ALG };
    info(`raw claim: ${JSON.stringify(body)}`);
    const raw = await post(erin.token, "claim", body);
    info(`answer: ${short(raw.text, 2000)}`);
    const ans = raw.json;
    check(ans.one_time_keys && typeof ans.one_time_keys === "object", "no one_time_keys object", ans);
    check(ans.failures && typeof ans.failures === "object", "no failures object", ans);
    for (const a of aliceDevices) {
        const k = claimed(ans, alice.userId, a.deviceId);
        check(k && a.uploadedOTKs.has(k[0]) && k[1].fallback !== true, `${a.deviceId} did not answer a one-time key`, ans);
    }
    check(claimed(ans, alice.userId, "NOSUCHDEVICE") === null, "the unknown device does not answer {}", ans);
    check(claimed(ans, nobody, "NODEVICE") === null, "the unknown user's device does not answer {}", ans);
    check(isDeepStrictEqual(Object.keys(ans.one_time_keys).sort(), [alice.userId, nobody].sort()), "one_time_keys names other users than the local ones requested", Object.keys(ans.one_time_keys));
    check(Object.keys(ans.failures).length === 1 && typeof ans.failures["elsewhere.test"]?.status === "number", "failures does not name exactly elsewhere.test with a status", ans.failures);
    check(!(serverName in ans.failures), "failures names our own server");
    ok(`every requested device answered: Alice's two with keys, NOSUCHDEVICE {}, ${nobody} NODEVICE {}; elsewhere.test in failures (${ans.failures["elsewhere.test"].status})`);
    await markSent(erin, erinReq, raw.text);
    ok("Erin's SDK accepted the complete answer (markRequestAsSent did not throw)");
    const erinMissing = await erin.machine.getMissingSessions([new UserId(alice.userId)]);
    check(!erinMissing, "Erin's SDK still misses sessions with Alice after the complete answer", erinMissing?.body);
    await megolmRoundTrip(erin, aliceDevices, `!room3:${serverName}`, "hello Alice, from Erin, after a complete MSC4072 answer");

    // ----
    step("control: a claimed one-time key whose signature was tampered with gives the SDK no session");
    // This shows the checks above have teeth: the SDK really verifies what the server hands out.
    const frank = await new Client("Frank/FRANKDEV", "frank", "FRANKDEV").init();
    await frank.settle();
    await frank.machine.updateTrackedUsers([new UserId(alice.userId)]);
    await frank.settle();
    const frankReq = await frank.machine.getMissingSessions([new UserId(alice.userId)]);
    check(frankReq, "Frank's SDK has no key claim request for Alice's devices");
    const fr = await post(frank.token, "claim", frankReq.body);
    const bad = claimed(fr.json, alice.userId, "ALICEDEV");
    check(bad, "no key for ALICEDEV", fr.json);
    const sigs = bad[1].signatures[alice.userId];
    const sigId = Object.keys(sigs)[0];
    const sig = sigs[sigId];
    sigs[sigId] = (sig[0] === "A" ? "B" : "A") + sig.slice(1);
    await markSent(frank, frankReq, JSON.stringify(fr.json));
    const frankShare = await frank.machine.shareRoomKey(new RoomId(`!room4:${serverName}`), [new UserId(alice.userId)], new EncryptionSettings());
    const encryptedFor = new Set();
    for (const req of frankShare) {
        if (req.event_type !== "m.room.encrypted") continue;
        for (const [u, devs] of Object.entries(JSON.parse(req.body).messages)) {
            for (const d of Object.keys(devs)) encryptedFor.add(`${u}|${d}`);
        }
    }
    check(!encryptedFor.has(`${alice.userId}|ALICEDEV`), "the SDK encrypted to ALICEDEV with a one-time key whose signature was broken: this test could not tell good keys from bad");
    check(encryptedFor.has(`${alice.userId}|ALICEPHONE`), "the SDK did not encrypt to ALICEPHONE, whose key was untouched", [...encryptedFor]);
    ok(`with ALICEDEV's key signature flipped the SDK made no session with it (to-device: ${frankShare.map((r) => r.event_type).join(", ")}); ALICEPHONE's untouched key worked`);

    console.log("\nPASS: matrix-sdk-crypto uploaded, queried and claimed against keyclaim, and every Olm and Megolm message decrypted");
}

try {
    await main();
    process.exit(0);
} catch (e) {
    if (e instanceof CheckError) {
        console.error(`\nFAIL: ${e.message}`);
    } else {
        console.error(`\nFAIL: unexpected error: ${e?.stack ?? e}`);
    }
    process.exit(1);
}
