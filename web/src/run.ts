// The scenario run through the engine: the claim as the client's server completes it, in both
// modes, and what each device's outcome is. Every answer shown is the module's own bytes; the
// playground only builds the inputs (ABI.md section 8) and the remote servers' misbehaviour.
import type { Answer, Engine, MatrixError } from "./engine";
import type { RemoteSetting, Scenario } from "./scenario";

export type Mode = "msc4072" | "legacy";
export const MODES: Mode[] = ["msc4072", "legacy"];

/** The fields of the scenario an error can belong to. */
export type Field = "serverName" | "request" | "inventory" | `remote:${string}`;

type KeyMap = Record<string, Record<string, Record<string, unknown>>>; // user -> device -> key ID -> key
type RequestMap = Record<string, Record<string, string>>; // user -> device -> algorithm

/** What a remote server answered, as complete_client's `remote` member takes it. */
export type RemoteOutcome =
  | { status: number; body: string }
  | { failure: { status: number; errcode?: string; message: string } };

export interface Claim {
  /** The request of this claim, canonical (parse_claim's result) and parsed. */
  requestText: string;
  request: RequestMap;
  /** The federation claim body sent to each remote server, and what it answered. */
  remotes: Record<string, { body: string; outcome: RemoteOutcome }>;
  /** The completed answer in each mode: exact bytes and parsed. */
  answers: Record<Mode, { text: string; value: { one_time_keys: KeyMap; failures: Record<string, Failure> } }>;
  /** The inventory after this claim (select_keys' result), as text. */
  inventoryAfter: string;
}

export interface Failure {
  status: number;
  errcode?: string;
  message: string;
}

export type Outcome = { outcome: "claimed"; key: unknown; key_id: string } | { outcome: "no_keys" } | { outcome: "server_failed" };

export interface Run {
  errors: Partial<Record<Field, MatrixError>>;
  claim?: Claim;
  /** classify_claim of each mode's answer. */
  outcomes?: Record<Mode, Record<string, Record<string, Outcome>>>;
}

/** The server part of a user ID (everything after the first colon). */
export function serverOf(userId: string): string {
  const i = userId.indexOf(":");
  return i < 0 ? "" : userId.slice(i + 1);
}

const q = JSON.stringify;

function fail(field: Field, a: Answer & { ok: false }): Run {
  return { errors: { [field]: a.error } };
}

/** Runs the scenario's claim and classifies both answers. */
export function runScenario(engine: Engine, s: Scenario): Run {
  const server = engine.call("plan_fanout", `{"server_name":${q(s.serverName)},"request":{"one_time_keys":{}}}`);
  if (!server.ok) return fail("serverName", server);
  const parsed = engine.call("parse_claim", `{"body":${q(s.request)}}`);
  if (!parsed.ok) return fail("request", parsed);
  const claim = claimOnce(engine, s, parsed.text, s.inventory.trim() === "" ? "{}" : s.inventory);
  if ("field" in claim) return { errors: { [claim.field]: claim.error } };
  const outcomes = {} as Record<Mode, Record<string, Record<string, Outcome>>>;
  for (const mode of MODES) {
    const c = engine.call("classify_claim", `{"request":${claim.requestText},"body":${q(claim.answers[mode].text)}}`);
    if (!c.ok) throw new Error(`classify_claim refused the engine's own answer: ${c.error.errcode} ${c.error.error}`);
    outcomes[mode] = (c.value as { outcomes: Record<string, Record<string, Outcome>> }).outcomes;
  }
  return { errors: {}, claim, outcomes };
}

/**
 * One claim by the client's server: the request split between local users and remote servers
 * (plan_fanout), keys taken from the inventory for every user (select_keys: the remote servers
 * are keyclaim servers too, answering legacy-shaped as they do by default, complete_federation),
 * each remote answer bent by its server's behaviour, then the answer completed in both modes
 * (complete_client).
 */
export function claimOnce(engine: Engine, s: Scenario, requestText: string, inventoryText: string): Claim | { field: Field; error: MatrixError } {
  const request = (JSON.parse(requestText) as { one_time_keys: RequestMap }).one_time_keys;
  const timeout = (JSON.parse(requestText) as { timeout?: number }).timeout ?? 10000;
  const plan = engine.call("plan_fanout", `{"server_name":${q(s.serverName)},"request":${requestText}}`);
  if (!plan.ok) return { field: "request", error: plan.error };
  const fanout = plan.value as { local: unknown; remote: Record<string, unknown> };
  const servers = Object.keys(fanout.remote).sort();
  const bodies = [q(fanout.local), ...servers.map((srv) => q(fanout.remote[srv]))];
  const selected = engine.call("select_keys", `{"inventory":${inventoryText},"requests":[${bodies.join(",")}]}`);
  if (!selected.ok) {
    if (selected.error.errcode === "M_NOT_JSON") {
      // The inventory is not JSON: the module's byte offset counts from the start of the whole
      // select_keys input. Read as a body on its own (classify_claim parses its body first), the
      // same text gives the module's message with the offset in the inventory itself.
      const own = engine.call("classify_claim", `{"request":{"one_time_keys":{}},"body":${q(inventoryText)}}`);
      if (!own.ok && own.error.errcode === "M_NOT_JSON") return { field: "inventory", error: own.error };
    }
    return { field: "inventory", error: selected.error };
  }
  const sel = selected.value as { inventory: unknown; results: unknown[] };

  const remotes: Claim["remotes"] = {};
  for (const [i, srv] of servers.entries()) {
    const fed = engine.call("complete_federation", `{"server_name":${q(srv)},"mode":"legacy","request":${bodies[i + 1]},"local":${q(sel.results[i + 1])}}`);
    if (!fed.ok) return { field: `remote:${srv}`, error: fed.error };
    const setting = s.remotes[srv] ?? { behaviour: "full" };
    remotes[srv] = { body: bodies[i + 1], outcome: misbehave(srv, s.serverName, setting, fed.text, request, timeout) };
  }
  const remoteText = "{" + servers.map((srv) => `${q(srv)}:${q(remotes[srv].outcome)}`).join(",") + "}";
  const answers = {} as Claim["answers"];
  for (const mode of ["msc4072", "legacy"] as Mode[]) {
    const a = engine.call("complete_client", `{"server_name":${q(s.serverName)},"mode":"${mode}","request":${requestText},"local":${q(sel.results[0])},"remote":${remoteText}}`);
    if (!a.ok) return { field: "request", error: a.error };
    answers[mode] = { text: a.text, value: a.value as Claim["answers"][Mode]["value"] };
  }
  return { requestText, request, remotes, answers, inventoryAfter: q(sel.inventory) };
}

/** The first requested device of a server, "user device", in sorted order. */
export function devicesOf(request: RequestMap, server: string): string[] {
  const out: string[] = [];
  for (const user of Object.keys(request).sort()) {
    if (serverOf(user) !== server) continue;
    for (const dev of Object.keys(request[user]).sort()) out.push(`${user} ${dev}`);
  }
  return out;
}

/**
 * What the remote server srv sends back, given the honest answer (fedText, the engine's
 * federation answer for its users) and how it misbehaves.
 */
function misbehave(srv: string, own: string, r: RemoteSetting, fedText: string, request: RequestMap, timeout: number): RemoteOutcome {
  switch (r.behaviour) {
    case "full":
      return { status: 200, body: fedText };
    case "timeout":
      return { failure: { status: 504, message: `no answer from ${srv} within the timeout of ${timeout} ms` } };
    case "error": {
      const status = r.status ?? 500;
      return { status, body: q({ errcode: r.errcode ?? "M_UNKNOWN", error: r.message ?? "Internal server error" }) };
    }
    case "omit": {
      const answer = JSON.parse(fedText) as { one_time_keys: KeyMap };
      const target = r.omit ?? devicesOf(request, srv)[0];
      if (target !== undefined) {
        const [user, dev] = target.split(" ");
        if (answer.one_time_keys[user]) delete answer.one_time_keys[user][dev];
      }
      return { status: 200, body: q(answer) };
    }
    case "junk": {
      const answer = JSON.parse(fedText) as { one_time_keys: Record<string, Record<string, unknown>> };
      const otks = answer.one_time_keys;
      const devs = devicesOf(request, srv);
      // A user of our own server: a remote that tries to speak for users it does not host.
      otks[`@mallory:${own}`] = { MALLORYDEV: { "signed_curve25519:AAAAAA": "bWFsbG9yeSdzIGtleSBmb3IgYSB1c2VyIHNoZSBkb2VzIG5vdA" } };
      // A user of this server that nobody asked for.
      otks[`@eve:${srv}`] = { EVEDEV: { "signed_curve25519:AAAAAB": "ZXZlIHdhcyBub3QgYXNrZWQgZm9yIGJ1dCBhbnN3ZXJzIGFueXdheQ" } };
      if (devs.length > 0) {
        const [user, dev] = devs[0].split(" ");
        const entry = (otks[user] ??= {}) as Record<string, unknown>;
        entry.NOTREQUESTED = { "signed_curve25519:AAAAAC": "YSBkZXZpY2UgdGhhdCB3YXMgbm90IHJlcXVlc3RlZCBhdCBhbGw" };
        const keys = (entry[dev] ??= {}) as Record<string, unknown>;
        keys["curve25519:AAAAAD"] = "YW4gdW5zaWduZWQga2V5OiBub3QgdGhlIHJlcXVlc3RlZCBhbGdv";
        keys["signed_curve25519:AAAAAE"] = null;
      }
      if (devs.length > 1) {
        // A device whose only key is not a key: the key it should have had is lost.
        const [user, dev] = devs[1].split(" ");
        (otks[user] ??= {})[dev] = { "signed_curve25519:AAAAAF": { key: 42 } };
      }
      return { status: 200, body: q(answer) };
    }
  }
}

/** One part of a remote answer that the engine did not keep, and why. */
export interface Dropped {
  server: string;
  user: string;
  device: string;
  keyId: string;
  reason: string;
}

function isKey(v: unknown): boolean {
  if (typeof v === "string") return true;
  if (typeof v !== "object" || v === null || Array.isArray(v)) return false;
  const hasNull = (x: unknown): boolean =>
    x === null || (typeof x === "object" && Object.values(x as object).some(hasNull));
  return typeof (v as { key?: unknown }).key === "string" && !hasNull(v);
}

/**
 * What the engine dropped from each 2xx remote answer: every user, device and key in the answer
 * that is not in the completed answer. The reasons are for people; the engine's answer itself is
 * what was kept.
 */
export function droppedParts(claim: Claim, own: string): Dropped[] {
  const out: Dropped[] = [];
  const kept = claim.answers.msc4072.value.one_time_keys;
  for (const srv of Object.keys(claim.remotes).sort()) {
    const o = claim.remotes[srv].outcome;
    if (!("status" in o) || o.status < 200 || o.status > 299) continue;
    let body: { one_time_keys?: Record<string, unknown> };
    try {
      body = JSON.parse(o.body);
    } catch {
      continue;
    }
    for (const [user, devices] of Object.entries(body.one_time_keys ?? {})) {
      const requested = claim.request[user];
      if (requested === undefined || serverOf(user) !== srv) {
        const why = serverOf(user) === own ? `a user of ${own}, our own server` : serverOf(user) !== srv ? `a user of ${serverOf(user)}` : "a user nobody asked for";
        out.push({ server: srv, user, device: "", keyId: "", reason: `user not requested (${why})` });
        continue;
      }
      for (const [dev, keys] of Object.entries((devices ?? {}) as Record<string, unknown>)) {
        if (!(dev in requested)) {
          out.push({ server: srv, user, device: dev, keyId: "", reason: "device not requested" });
          continue;
        }
        const keptId = Object.keys(kept[user]?.[dev] ?? {})[0];
        for (const [kid, val] of Object.entries((keys ?? {}) as Record<string, unknown>)) {
          if (kid === keptId) continue;
          const alg = kid.slice(0, kid.indexOf(":"));
          const reason = alg !== requested[dev] ? `algorithm ${alg || "(none)"}, not the requested ${requested[dev]}` : !isKey(val) ? `not a key: ${JSON.stringify(val)}` : `one key per device (kept ${keptId})`;
          out.push({ server: srv, user, device: dev, keyId: kid, reason });
        }
      }
    }
  }
  return out;
}

/** Where a claimed key came from, read from the inventory before the claim. */
export function keySource(inventory: unknown, user: string, device: string, keyId: string): string {
  const dev = (inventory as Record<string, Record<string, { one_time_keys?: { key_id: string; batch: number }[]; fallback_keys?: { key_id: string; used?: boolean }[] }>>)?.[user]?.[device];
  const o = dev?.one_time_keys?.find((k) => k.key_id === keyId);
  if (o) return `one-time key (upload batch ${o.batch})`;
  const f = dev?.fallback_keys?.find((k) => k.key_id === keyId);
  if (f) return f.used ? "fallback key, already used: handed out again" : "fallback key (now marked used)";
  return "key from the remote answer";
}
