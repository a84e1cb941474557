// matrix-sdk-crypto (npm @matrix-org/matrix-sdk-crypto-wasm, Element's) in the client
// compatibility matrix (../README.md). It uses the SDK that clienttest/ installs (npm ci there).
//
//   node harness.mjs STANDIN_URL TOKEN_FILE
//
// Every device is an OlmMachine. The SDK is sans-I/O: its own outgoingRequests() are sent to the
// stand-in and the answers go back unchanged (markRequestAsSent); it uploads its device keys,
// one-time keys and (after a sync that reports no unused fallback key) its own fallback key,
// queries (updateTrackedUsers), claims (getMissingSessions) and encrypts the to-device payload
// (Device.encryptToDeviceEvent); each receiving machine decrypts it in receiveSyncChanges, as a
// /sync would deliver it: no /sync, no /sendToDevice.

import { readFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import {
    initAsync,
    OlmMachine,
    UserId,
    DeviceId,
    RequestType,
    DeviceLists,
    DecryptionSettings,
    TrustRequirement,
    ProcessedToDeviceEventType,
    Tracing,
    LoggerLevel,
    getVersions,
} from "@matrix-org/matrix-sdk-crypto-wasm";

const STEP_TIMEOUT_MS = 20000;
const BOB_DEVICES = ["DEVKEYSONLY", "EXHAUSTED", "FALLBACKONLY", "KEYED"];
const PING = "org.keyclaim.compat.ping";

const base = process.argv[2].replace(/\/+$/, "");
const tokens = JSON.parse(readFileSync(process.argv[3], "utf8"));
const devices = {}; // device ID -> { userId, token }
for (const [token, who] of Object.entries(tokens)) devices[who.device_id] = { userId: who.user_id, token };

const result = { library: "matrix-sdk-crypto-wasm", version: "", olm: "", fallback: "library", sessions: [], decrypted: [], crash: "", hang: "", logs: [] };

// The SDK logs through console (tracing): keep every warning and error.
for (const level of ["warn", "error"]) {
    const orig = console[level].bind(console);
    console[level] = (...args) => {
        // One line: the message and its fields, without the Rust source location.
        const text = args.map(String).join(" ").split("\n").filter((l) => !/^\s*at \//.test(l)).map((l) => l.trim()).join(" ");
        result.logs.push(/^(WARN|ERROR)\b/.test(text) ? text : `${level.toUpperCase()} ${text}`);
        orig(...args);
    };
}

class Stop extends Error {}

async function step(name, promise) {
    let timer;
    const timeout = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Stop(`hang`)), STEP_TIMEOUT_MS);
    });
    try {
        return await Promise.race([promise, timeout]);
    } catch (e) {
        if (e instanceof Stop) {
            result.hang = `${name} did not finish within ${STEP_TIMEOUT_MS / 1000} s`;
            console.log(`HANG in ${name}`);
        } else {
            result.crash = `${e?.name ?? "Error"}: ${e?.message ?? e} (in ${name})`;
            console.log(`CRASH in ${name}: ${e?.stack ?? e}`);
        }
        throw new Stop();
    } finally {
        clearTimeout(timer);
    }
}

async function post(path, token, body) {
    const res = await fetch(base + path, {
        method: "POST",
        headers: { ...(token ? { Authorization: `Bearer ${token}` } : {}), "Content-Type": "application/json" },
        body: typeof body === "string" ? body : JSON.stringify(body),
    });
    const text = await res.text();
    if (res.status !== 200) throw new Error(`POST ${path} answered ${res.status}: ${text}`);
    return text;
}

class Device {
    constructor(id) {
        this.id = id;
        this.userId = devices[id].userId;
        this.token = devices[id].token;
    }
    async init() {
        this.machine = await OlmMachine.initialize(new UserId(this.userId), new DeviceId(this.id));
        return this;
    }
    // Sends the SDK's key requests until it has none left; returns the kinds sent.
    async settle(name) {
        const kinds = [];
        for (let round = 0; round < 6; round++) {
            const reqs = await this.machine.outgoingRequests();
            if (reqs.length === 0) return kinds;
            for (const req of reqs) {
                const kind = { [RequestType.KeysUpload]: "upload", [RequestType.KeysQuery]: "query", [RequestType.KeysClaim]: "claim" }[req.type];
                if (kind === undefined) {
                    // Nothing else is needed here (no cross-signing, no rooms): acknowledge it.
                    await this.machine.markRequestAsSent(req.id, req.type, "{}");
                    continue;
                }
                kinds.push(kind);
                const text = await post(`/_matrix/client/v3/keys/${kind}`, this.token, req.body);
                await step(`${name}: markRequestAsSent(${kind})`, this.machine.markRequestAsSent(req.id, req.type, text));
            }
        }
        return kinds;
    }
    // A /sync played locally: to-device events, the server's counts, and "no unused fallback
    // key" until this device's fallback key was uploaded.
    async sync(events, fallbackUploaded) {
        const counts = JSON.parse(await post("/_matrix/client/v3/keys/upload", this.token, {})).one_time_key_counts;
        return await this.machine.receiveSyncChanges(
            JSON.stringify(events),
            new DeviceLists(),
            new Map(Object.entries(counts)),
            new Set(fallbackUploaded ? ["signed_curve25519"] : []),
            new DecryptionSettings(TrustRequirement.Untrusted),
        );
    }
}

async function scenario() {
    await initAsync();
    const v = getVersions();
    result.olm = `vodozemac ${v.vodozemac} (matrix-sdk-crypto ${v.matrix_sdk_crypto})`;
    result.version = JSON.parse(readFileSync(new URL("../../node_modules/@matrix-org/matrix-sdk-crypto-wasm/package.json", import.meta.url))).version;
    new Tracing(LoggerLevel.Warn).turnOn();

    const all = {};
    for (const id of ["ALICE", ...BOB_DEVICES]) all[id] = await new Device(id).init();
    const alice = all.ALICE;
    // wasm-bindgen objects passed by value are consumed: a new UserId for every call.
    const bob = () => new UserId(devices.KEYED.userId);

    // 1. Uploads, by the SDK: device and one-time keys, then its fallback key after a sync.
    for (const d of Object.values(all)) {
        await d.settle(d.id);
        await step(`${d.id}: receiveSyncChanges`, d.sync([], false));
        await d.settle(d.id);
    }
    await post("/_compat/ready", "", {});

    // 2. Query, by the SDK.
    await alice.machine.updateTrackedUsers([bob()]);
    await alice.settle("ALICE");
    const known = (await alice.machine.getUserDevices(bob())).devices().map((d) => d.deviceId.toString()).sort();
    console.log(`alice knows bob's devices ${known.join(", ")}`);

    // 3. Claim, by the SDK.
    try {
        const claim = await alice.machine.getMissingSessions([bob()]);
        if (claim) {
            console.log(`the SDK claims ${claim.body}`);
            const text = await post("/_matrix/client/v3/keys/claim", alice.token, claim.body);
            await step("markRequestAsSent(claim)", alice.machine.markRequestAsSent(claim.id, claim.type, text));
        } else {
            console.log("the SDK claims nothing");
        }
    } catch (e) {
        if (!(e instanceof Stop)) throw e;
    } finally {
        await post("/_compat/claimed", "", {});
    }
    if (result.hang) throw new Stop();

    // 4. A payload per device: the SDK encrypts where it has a session; the device decrypts.
    for (const id of known) {
        const device = await alice.machine.getDevice(bob(), new DeviceId(id));
        const nonce = randomBytes(8).toString("hex");
        let content;
        try {
            content = await device.encryptToDeviceEvent(PING, { nonce });
        } catch (e) {
            console.log(`no session with ${id}: ${e?.message ?? e}`);
            continue;
        }
        result.sessions.push(id);
        if (!all[id]) continue;
        const processed = await all[id].sync([{ type: "m.room.encrypted", sender: alice.userId, content: JSON.parse(content) }], true);
        const got = processed.find((ev) => ev.type === ProcessedToDeviceEventType.Decrypted);
        const raw = got ? JSON.parse(got.rawEvent) : null;
        if (raw?.type === PING && raw?.content?.nonce === nonce) {
            result.decrypted.push(id);
            console.log(`${id} decrypted the payload`);
        } else {
            console.log(`${id} did not decrypt the payload: ${processed.map((e) => e.rawEvent).join(" ")}`);
        }
    }
}

try {
    await scenario();
} catch (e) {
    if (!(e instanceof Stop)) {
        result.crash = `${e?.name ?? "Error"}: ${e?.message ?? e} (in harness)`;
        console.log(e?.stack ?? e);
    }
}
result.sessions.sort();
result.decrypted.sort();
console.log("COMPAT-RESULT " + JSON.stringify(result));
process.exit(0);
