// The scenario: everything a person edits in the playground, and what the URL fragment carries.

/** What a remote server does with the federation claim it receives. */
export type Behaviour = "full" | "omit" | "junk" | "error" | "timeout";

export const BEHAVIOURS: { value: Behaviour; label: string }[] = [
  { value: "full", label: "answers fully" },
  { value: "omit", label: "leaves a device out" },
  { value: "junk", label: "adds junk and unrequested users" },
  { value: "error", label: "answers with an error" },
  { value: "timeout", label: "times out" },
];

export interface RemoteSetting {
  behaviour: Behaviour;
  /** omit: the device left out, "user_id device_id" (default: the first requested device). */
  omit?: string;
  /** error: the HTTP status and Matrix error body the server answers. */
  status?: number;
  errcode?: string;
  message?: string;
}

export interface TrackerSetting {
  /** The mode of the answers the client's server gives on each claim. */
  mode: "msc4072" | "legacy";
  /** Times (ms) of the claims after the first one (which is at 0). */
  claims: number[];
  /** The time (ms) at which the tracker is asked for its next plan. */
  now: number;
}

export interface Scenario {
  /** The server the client talks to ("our" server). */
  serverName: string;
  /** The body of the client's POST /_matrix/client/v3/keys/claim, as text. */
  request: string;
  /** Every device's keys (local and remote users), select_keys' inventory (ABI.md 8.3), as text. */
  inventory: string;
  /** Per remote server: its behaviour. A server of the request without an entry answers fully. */
  remotes: Record<string, RemoteSetting>;
  tracker: TrackerSetting;
}

export interface Example {
  id: string;
  title: string;
  /** One sentence: what to look at. */
  note: string;
  scenario: () => Scenario;
}

const ALG = "signed_curve25519";
const pretty = (v: unknown) => JSON.stringify(v, null, 2);
const freshTracker = (): TrackerSetting => ({ mode: "msc4072", claims: [], now: 5000 });

interface DeviceKeys {
  one_time_keys: { key_id: string; batch: number; key: unknown }[];
  fallback_keys: { key_id: string; key: unknown; used?: boolean }[];
}
type Inventory = Record<string, Record<string, DeviceKeys>>;

/** A 43-character unpadded base64 string standing for a curve25519 key, derived from seed. */
export function fakeKey(seed: string): string {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  let h = 2166136261;
  let out = "";
  for (let i = 0; out.length < 43; i++) {
    h ^= seed.charCodeAt(i % seed.length) + i;
    h = Math.imul(h, 16777619) >>> 0;
    out += alphabet[h % 64];
  }
  return out;
}

function otk(name: string, batch: number, signed = false) {
  const key = fakeKey(name);
  return { key_id: `${ALG}:${name}`, batch, key: signed ? { key } : key };
}
function fallback(name: string, used = false) {
  return { key_id: `${ALG}:${name}`, key: { fallback: true, key: fakeKey("fb" + name) }, used };
}

/**
 * Signs every key object of inv as its device would (spec KeyObject: `key` and `signatures` both
 * required; the keys server refuses an object without them). The signature is a stand-in: the
 * engine and the server check its shape, clients check its value.
 */
type SignableKeys = { one_time_keys?: { key_id: string; key: unknown }[]; fallback_keys?: { key_id: string; key: unknown }[] };
export function signAll<T extends Record<string, Record<string, SignableKeys>>>(inv: T): T {
  for (const [user, devs] of Object.entries(inv)) {
    for (const [dev, keys] of Object.entries(devs)) {
      for (const k of [...(keys.one_time_keys ?? []), ...(keys.fallback_keys ?? [])]) {
        if (typeof k.key === "object" && k.key !== null) {
          (k.key as Record<string, unknown>).signatures = { [user]: { [`ed25519:${dev}`]: fakeKey(`sig${user}${dev}${k.key_id}`) + fakeKey("s" + k.key_id).slice(0, 43) } };
        }
      }
    }
  }
  return inv;
}

/** The cast of the small examples: two local users, two remote servers. */
function baseInventory(): Inventory {
  return signAll({
    "@alice:example.org": {
      ALICEDEV: { one_time_keys: [otk("AAAAHQ", 2), otk("AAAAHg", 1, true)], fallback_keys: [fallback("AAAAGj")] },
      ALICEPHONE: { one_time_keys: [], fallback_keys: [fallback("AAAAFb", true)] },
    },
    "@bob:remote.example": {
      BOBDEV: { one_time_keys: [otk("AAAAAQ", 1, true)], fallback_keys: [] },
      BOBPHONE: { one_time_keys: [otk("AAAAAg", 1)], fallback_keys: [fallback("AAAABA")] },
    },
    "@carol:other.example": {
      CAROLDEV: { one_time_keys: [otk("AAAAAw", 3)], fallback_keys: [] },
    },
  });
}

function baseRequest() {
  return {
    one_time_keys: {
      "@alice:example.org": { ALICEDEV: ALG, ALICEPHONE: ALG, OLDDEV: ALG },
      "@bob:remote.example": { BOBDEV: ALG, BOBPHONE: ALG },
      "@carol:other.example": { CAROLDEV: ALG },
    },
    timeout: 10000,
  };
}

function small(remotes: Record<string, RemoteSetting>): () => Scenario {
  return () => ({
    serverName: "example.org",
    request: pretty(baseRequest()),
    inventory: pretty(baseInventory()),
    remotes,
    tracker: freshTracker(),
  });
}

/** A room of n devices: a fifth local, the rest spread over three remote servers. */
export function largeScenario(n: number): Scenario {
  const servers = ["example.org", "big.example", "slow.example", "junk.example"];
  const request: Record<string, Record<string, string>> = {};
  const inventory: Inventory = {};
  for (let i = 0; i < n; i++) {
    const server = servers[i % 5 === 0 ? 0 : 1 + (i % 3)];
    const user = `@user${String(Math.floor(i / 4)).padStart(4, "0")}:${server}`;
    const device = `DEV${String(i).padStart(4, "0")}`;
    (request[user] ??= {})[device] = ALG;
    if (i % 7 === 6) continue; // a device with no keys at all
    const dev: DeviceKeys = { one_time_keys: [], fallback_keys: [] };
    if (i % 3 !== 0) dev.one_time_keys.push(otk(`A${i}`, 1 + (i % 4)));
    dev.fallback_keys.push(fallback(`F${i}`, i % 2 === 0));
    (inventory[user] ??= {})[device] = dev;
  }
  return {
    serverName: "example.org",
    // Compact: the page and the engine read 1,000 devices' keys faster without indentation.
    request: JSON.stringify({ one_time_keys: request, timeout: 10000 }),
    inventory: JSON.stringify(signAll(inventory)),
    remotes: { "big.example": { behaviour: "full" }, "slow.example": { behaviour: "timeout" }, "junk.example": { behaviour: "junk" } },
    tracker: freshTracker(),
  };
}

export const EXAMPLES: Example[] = [
  {
    id: "complete",
    title: "Every server answers fully",
    note: "Devices without keys are {} in msc4072 and left out in legacy; ALICEPHONE gives its used fallback key again.",
    scenario: small({}),
  },
  {
    id: "omit",
    title: "A remote server leaves a device out",
    note: "remote.example says nothing about BOBPHONE: msc4072 answers it {}, legacy leaves it out, and the client cannot tell why.",
    scenario: small({ "remote.example": { behaviour: "omit", omit: "@bob:remote.example BOBPHONE" } }),
  },
  {
    id: "junk",
    title: "A remote server adds junk and unrequested users",
    note: "other.example answers for a user of our server, a device nobody asked for, another algorithm and a null key: all dropped.",
    scenario: small({ "other.example": { behaviour: "junk" } }),
  },
  {
    id: "error",
    title: "A remote server answers with an error",
    note: "remote.example answers 500: its users appear only in failures, never half in one_time_keys.",
    scenario: small({ "remote.example": { behaviour: "error", status: 500, errcode: "M_UNKNOWN", message: "Internal server error" } }),
  },
  {
    id: "timeout",
    title: "A remote server times out",
    note: "other.example does not answer within the request's timeout: a 504 failure, and the tracker backs the server off.",
    scenario: small({ "other.example": { behaviour: "timeout" } }),
  },
  {
    id: "mixed",
    title: "One server errs, one adds junk",
    note: "Both misbehaviours at once: each server is judged on its own.",
    scenario: small({
      "remote.example": { behaviour: "error", status: 404, errcode: "M_UNRECOGNIZED", message: "Unrecognized request" },
      "other.example": { behaviour: "junk" },
    }),
  },
  {
    id: "large",
    title: "A large room: 1,000 devices",
    note: "1,000 devices on four servers: one times out, one adds junk.",
    scenario: () => largeScenario(1000),
  },
];

export function example(id: string): Example | undefined {
  return EXAMPLES.find((e) => e.id === id);
}

// The URL fragment: "#example=ID" for an unchanged example, else "#s=" and the scenario as
// base64url of its UTF-8 JSON.

function toBase64Url(s: string): string {
  const bytes = new TextEncoder().encode(s);
  let bin = "";
  for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function fromBase64Url(s: string): string {
  const bin = atob(s.replace(/-/g, "+").replace(/_/g, "/"));
  return new TextDecoder("utf-8", { fatal: true }).decode(Uint8Array.from(bin, (c) => c.charCodeAt(0)));
}

const exampleJSON = new Map<string, string>();

export function encodeFragment(s: Scenario, exampleId?: string): string {
  const ex = exampleId === undefined ? undefined : example(exampleId);
  if (ex) {
    if (!exampleJSON.has(ex.id)) exampleJSON.set(ex.id, JSON.stringify(ex.scenario()));
    if (exampleJSON.get(ex.id) === JSON.stringify(s)) return `#example=${ex.id}`;
  }
  return "#s=" + toBase64Url(JSON.stringify(s));
}

/** Reads a fragment; undefined when it holds no scenario, an Error when it holds a broken one. */
export function decodeFragment(hash: string): { scenario: Scenario; exampleId?: string } | Error | undefined {
  const params = new URLSearchParams(hash.replace(/^#/, ""));
  const id = params.get("example");
  if (id !== null) {
    const ex = example(id);
    return ex ? { scenario: ex.scenario(), exampleId: id } : new Error(`no example named "${id}"`);
  }
  const s = params.get("s");
  if (s === null) return undefined;
  try {
    return { scenario: normalise(JSON.parse(fromBase64Url(s))) };
  } catch (e) {
    return new Error(`the link's scenario cannot be read: ${(e as Error).message}`);
  }
}

/** Checks the shape of a scenario read from a link, filling what an older link lacks. */
function normalise(v: unknown): Scenario {
  const o = v as Partial<Scenario>;
  if (typeof o !== "object" || o === null) throw new Error("not an object");
  for (const k of ["serverName", "request", "inventory"] as const) {
    if (typeof o[k] !== "string") throw new Error(`${k} must be a string`);
  }
  const remotes: Record<string, RemoteSetting> = {};
  for (const [server, r] of Object.entries(o.remotes ?? {})) {
    if (!BEHAVIOURS.some((b) => b.value === r?.behaviour)) throw new Error(`remotes.${server}: unknown behaviour`);
    remotes[server] = r;
  }
  const t = o.tracker ?? freshTracker();
  const num = (x: unknown) => typeof x === "number" && Number.isSafeInteger(x) && x >= 0;
  if ((t.mode !== "msc4072" && t.mode !== "legacy") || !Array.isArray(t.claims) || !t.claims.every(num) || !num(t.now)) {
    throw new Error("tracker: want {mode, claims: [ms], now: ms}");
  }
  return { serverName: o.serverName!, request: o.request!, inventory: o.inventory!, remotes, tracker: t };
}
