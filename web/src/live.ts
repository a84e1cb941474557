// Live mode: when a keys server in development mode serves the page, run the scenario's claim on
// that server too (upload the inventory with the development tokens, claim) and show the
// server's answer beside the in-page one. The server hands the tokens only to this page, only in
// --dev, only over loopback (hostserver/playground.go; DESIGN.md).
import type { Engine } from "./engine";
import { fakeKey, signAll, type Scenario } from "./scenario";
import { serverOf } from "./run";

/** GET /_keyclaim/playground/live: what a --dev keys server tells its own page. */
export interface LiveConfig {
  server_name: string;
  mode: "msc4072" | "legacy";
  identities: { user_id: string; device_id: string; access_token: string }[];
}

export const LIVE_PATH = "/_keyclaim/playground/live";
/** The header the server requires on LIVE_PATH: a page of another origin cannot send it without a CORS preflight, which that path never grants. */
export const LIVE_HEADER = "X-Keyclaim-Playground";

interface Ctx {
  engine: Engine;
  scenario: () => Scenario;
  load: (s: Scenario) => void;
}

type DeviceKeys = {
  one_time_keys?: { key_id: string; batch: number; key: unknown }[];
  fallback_keys?: { key_id: string; key: unknown; used?: boolean }[];
};
type Inventory = Record<string, Record<string, DeviceKeys>>;

const $ = (sel: string) => document.querySelector<HTMLElement>(sel)!;
const q = JSON.stringify;

export async function setUpLive(ctx: Ctx): Promise<void> {
  let cfg: LiveConfig;
  try {
    const r = await fetch(LIVE_PATH, { headers: { [LIVE_HEADER]: "live" }, cache: "no-store" });
    if (!r.ok) return;
    cfg = (await r.json()) as LiveConfig;
  } catch {
    return; // not served by a keys server in --dev: no live mode
  }
  if (!cfg.identities?.length) return;
  $("#live").hidden = false;
  $("#live-note").textContent =
    `This page is served by a keyclaim keys server in development mode (server name ${cfg.server_name}, ${cfg.mode} answers), ` +
    `with development access tokens for ${cfg.identities.map((i) => `${i.user_id} ${i.device_id}`).join(" and ")}. ` +
    `"Upload and claim" uploads the inventory of those devices (after claiming away what earlier runs left), claims the request's users of ${cfg.server_name} on the server, and computes the same claim in the page. ` +
    `Users of other servers stay in-page only: the server would ask real servers.`;
  $("#live-example").addEventListener("click", () => ctx.load(liveExample(cfg)));
  $("#live-run").addEventListener("click", () => {
    const button = $("#live-run") as HTMLButtonElement;
    button.disabled = true;
    runLive(ctx, cfg)
      .catch((e: Error) => showLiveError(e.message))
      .finally(() => (button.disabled = false));
  });
}

function showLiveError(msg: string) {
  const box = $("#live-error");
  box.textContent = msg;
  box.hidden = msg === "";
}

/** A scenario for the live server: its own users and devices, one remote user for the in-page side. */
export function liveExample(cfg: LiveConfig): Scenario {
  const alg = "signed_curve25519";
  const inventory: Inventory = {};
  const request: Record<string, Record<string, string>> = {};
  cfg.identities.forEach((id, i) => {
    const n = (k: number) => `AAAA${String.fromCharCode(65 + i)}${k}`;
    inventory[id.user_id] ??= {};
    inventory[id.user_id][id.device_id] =
      i === 0
        ? {
            one_time_keys: [
              { key_id: `${alg}:${n(2)}`, batch: 2, key: { key: fakeKey(id.device_id + "2") } },
              { key_id: `${alg}:${n(1)}`, batch: 1, key: { key: fakeKey(id.device_id + "1") } },
            ],
            fallback_keys: [{ key_id: `${alg}:${n(9)}`, key: { fallback: true, key: fakeKey(id.device_id + "f") }, used: false }],
          }
        : { one_time_keys: [], fallback_keys: [{ key_id: `${alg}:${n(9)}`, key: { fallback: true, key: fakeKey(id.device_id + "f") }, used: true }] };
    (request[id.user_id] ??= {})[id.device_id] = alg;
  });
  request[cfg.identities[0].user_id].GHOSTDEV = alg;
  request["@dave:remote.example"] = { DAVEDEV: alg };
  inventory["@dave:remote.example"] = { DAVEDEV: { one_time_keys: [{ key_id: `${alg}:AAAAZ1`, batch: 1, key: fakeKey("dave") }], fallback_keys: [] } };
  return {
    serverName: cfg.server_name,
    request: JSON.stringify({ one_time_keys: request, timeout: 10000 }, null, 2),
    inventory: JSON.stringify(signAll(inventory), null, 2),
    remotes: { "remote.example": { behaviour: "omit" } },
    tracker: { mode: "msc4072", claims: [], now: 5000 },
  };
}

async function post(path: string, token: string, body: unknown): Promise<{ status: number; text: string }> {
  const r = await fetch(path, {
    method: "POST",
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: typeof body === "string" ? body : q(body),
    cache: "no-store",
  });
  return { status: r.status, text: await r.text() };
}

async function postOK(path: string, token: string, body: unknown): Promise<string> {
  const r = await post(path, token, body);
  if (r.status !== 200) throw new Error(`POST ${path} answered ${r.status}: ${r.text}`);
  return r.text;
}

const UPLOAD = "/_matrix/client/v3/keys/upload";
const CLAIM = "/_matrix/client/v3/keys/claim";

async function runLive(ctx: Ctx, cfg: LiveConfig) {
  showLiveError("");
  const log = $("#live-log");
  log.innerHTML = "";
  $("#live-verdict").textContent = "";
  for (const sel of ["#live-server pre", "#live-page pre"]) $(sel).textContent = "";
  const say = (text: string) => {
    const li = document.createElement("li");
    li.textContent = text;
    log.append(li);
  };
  const s = ctx.scenario();
  if (s.serverName !== cfg.server_name) {
    throw new Error(`The scenario's server is ${s.serverName}, the live server is ${cfg.server_name}: load the example for this server, or change "Our server".`);
  }
  const parsed = ctx.engine.call("parse_claim", `{"body":${q(s.request)}}`);
  if (!parsed.ok) throw new Error(`The claim request is invalid: ${parsed.error.errcode} ${parsed.error.error}`);
  const full = parsed.value as { one_time_keys: Record<string, Record<string, string>>; timeout: number };
  const local: Record<string, Record<string, string>> = {};
  for (const [user, devs] of Object.entries(full.one_time_keys)) if (serverOf(user) === cfg.server_name) local[user] = devs;
  if (Object.keys(local).length === 0) throw new Error(`The request names no user of ${cfg.server_name}.`);
  const requestText = q({ one_time_keys: local, timeout: full.timeout });

  let inventory: Inventory;
  try {
    inventory = JSON.parse(s.inventory || "{}") as Inventory;
  } catch (e) {
    throw new Error(`The inventory is not JSON: ${(e as Error).message}`);
  }
  const token = new Map(cfg.identities.map((i) => [`${i.user_id} ${i.device_id}`, i.access_token]));
  // Key IDs get a suffix unique to this run: a one-time key ID that was claimed once is never
  // stored again (BRIEF 3), so a second run with the same IDs would upload nothing.
  const tag = Date.now().toString(36);
  const retag = (kid: string) => `${kid}_${tag}`;
  const live: Inventory = {};
  for (const [user, devs] of Object.entries(inventory)) {
    if (serverOf(user) !== cfg.server_name) continue;
    for (const [dev, keys] of Object.entries(devs)) {
      if (!token.has(`${user} ${dev}`)) {
        say(`${user} ${dev}: not uploaded (the server has no access token for it), so the server does not know it.`);
        continue;
      }
      (live[user] ??= {})[dev] = {
        one_time_keys: (keys.one_time_keys ?? []).map((k) => ({ ...k, key_id: retag(k.key_id) })),
        fallback_keys: (keys.fallback_keys ?? []).map((k) => ({ ...k, key_id: retag(k.key_id) })),
      };
    }
  }

  // 1. Claim away the one-time keys earlier runs left, so that the server holds what the page does.
  for (const id of cfg.identities) {
    const counts = (JSON.parse(await postOK(UPLOAD, id.access_token, {})) as { one_time_key_counts: Record<string, number> }).one_time_key_counts;
    let drained = 0;
    for (const [alg, n] of Object.entries(counts)) {
      for (let i = 0; i < Math.min(n, 1000); i++, drained++) {
        await postOK(CLAIM, id.access_token, { one_time_keys: { [id.user_id]: { [id.device_id]: alg } } });
      }
    }
    if (drained) say(`${id.user_id} ${id.device_id}: claimed away ${drained} one-time key${drained === 1 ? "" : "s"} left by earlier uploads.`);
  }
  // 2. Upload: fallback keys first (claimed once if the scenario has them used), then each batch of one-time keys, oldest first.
  for (const [user, devs] of Object.entries(live)) {
    for (const [dev, keys] of Object.entries(devs)) {
      const t = token.get(`${user} ${dev}`)!;
      const fb = keys.fallback_keys ?? [];
      if (fb.length) {
        await postOK(UPLOAD, t, { fallback_keys: Object.fromEntries(fb.map((k) => [k.key_id, k.key])) });
        for (const k of fb.filter((k) => k.used)) {
          await postOK(CLAIM, t, { one_time_keys: { [user]: { [dev]: k.key_id.slice(0, k.key_id.indexOf(":")) } } });
        }
        say(`${user} ${dev}: uploaded ${fb.length} fallback key${fb.length === 1 ? "" : "s"}${fb.some((k) => k.used) ? " (and claimed the used one once, so that it is marked used)" : ""}.`);
      }
      const batches = [...new Set((keys.one_time_keys ?? []).map((k) => k.batch))].sort((a, b) => a - b);
      for (const b of batches) {
        const batch = (keys.one_time_keys ?? []).filter((k) => k.batch === b);
        await postOK(UPLOAD, t, { one_time_keys: Object.fromEntries(batch.map((k) => [k.key_id, k.key])) });
        say(`${user} ${dev}: uploaded batch ${b}: ${batch.map((k) => k.key_id).join(", ")}.`);
      }
    }
  }
  // 3. Claim on the server, and the same claim in the page.
  const claimer = cfg.identities[0];
  const answer = await post(CLAIM, claimer.access_token, requestText);
  say(`${claimer.user_id} claimed: HTTP ${answer.status}.`);
  const sel = ctx.engine.call("select_keys", `{"inventory":${q(live)},"requests":[${q({ one_time_keys: local })}]}`);
  if (!sel.ok) throw new Error(`select_keys: ${sel.error.errcode} ${sel.error.error}`);
  const results = (sel.value as { results: unknown[] }).results;
  const page = ctx.engine.call("complete_client", `{"server_name":${q(cfg.server_name)},"mode":"${cfg.mode}","request":${requestText},"local":${q(results[0])}}`);
  if (!page.ok) throw new Error(`complete_client: ${page.error.errcode} ${page.error.error}`);
  $("#live-server pre").textContent = answer.text;
  $("#live-page pre").textContent = page.text;
  const same = answer.status === 200 && answer.text === page.text;
  const verdict = $("#live-verdict");
  verdict.dataset.same = String(same);
  verdict.textContent = same
    ? "Identical: the server's answer and the in-page answer are the same bytes."
    : "They differ. The server keeps what earlier uploads gave it (a fallback key is replaced, never deleted), so a device without a fallback key in the scenario may still have one there.";
}
