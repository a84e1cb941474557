// The playground page: the scenario editor, the two answers side by side, the per-device
// outcomes, the retry tracker and live mode, all computed by the engine (engine.ts).
import { Engine, type Call, type MatrixError } from "./engine";
import { prettyDiff } from "./pretty";
import { devicesOf, droppedParts, keySource, MODES, runScenario, serverOf, type Field, type Mode, type Run } from "./run";
import { BEHAVIOURS, EXAMPLES, decodeFragment, encodeFragment, example, type Behaviour, type Scenario } from "./scenario";
import { runTracker } from "./tracker";
import { setUpLive } from "./live";

const $ = <T extends HTMLElement = HTMLElement>(sel: string, root: ParentNode = document) => {
  const el = root.querySelector<T>(sel);
  if (!el) throw new Error(`missing element ${sel}`);
  return el;
};
const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");

/** What the page exposes for its end-to-end tests and benchmarks. */
export interface PlaygroundProbe {
  ready: boolean;
  runs: number;
  trackerRuns: number;
  lastRun?: { computeMs: number; renderMs: number; devices: number };
  interactiveMs?: number;
  calls: () => Call[];
  trackerCalls: () => Call[];
  scenario: () => Scenario;
  load: (s: Scenario) => void;
  /** Runs the current scenario again, now (for the benchmark). */
  rerun: () => PlaygroundProbe["lastRun"];
  /** Runs the current scenario's claim through the engine without rendering it; milliseconds. */
  computeOnly: () => number;
  /** Renders the last run again (and lays it out) without computing it; milliseconds. */
  renderOnly: () => number;
}
declare global {
  interface Window {
    __playground: PlaygroundProbe;
  }
}

let engine: Engine;
let state: Scenario;
let exampleId: string | undefined;
let lastRun: Run | undefined;
let lastCalls: Call[] = [];
let trackerCalls: Call[] = [];
const probe: PlaygroundProbe = {
  ready: false,
  runs: 0,
  trackerRuns: 0,
  calls: () => lastCalls,
  trackerCalls: () => trackerCalls,
  scenario: () => structuredClone(state),
  load: (s) => {
    exampleId = undefined;
    setScenario(s);
  },
  rerun: () => {
    runAndRender(false);
    return probe.lastRun;
  },
  renderOnly: () => {
    const t0 = performance.now();
    if (lastRun) render(lastRun);
    void document.body.offsetHeight;
    return performance.now() - t0;
  },
  computeOnly: () => {
    const t0 = performance.now();
    runScenario(engine, state);
    engine.takeCalls();
    return performance.now() - t0;
  },
};
window.__playground = probe;

const inputs = {
  serverName: $<HTMLInputElement>("#server-name"),
  request: $<HTMLTextAreaElement>("#request"),
  inventory: $<HTMLTextAreaElement>("#inventory"),
};

function status(text: string) {
  $("#status").textContent = text;
}

/** Shows err (or nothing) next to the field it belongs to. */
function showError(id: string, err: MatrixError | undefined, control?: HTMLElement | null) {
  const box = document.getElementById(`${id}-error`);
  if (!box) return;
  if (err) {
    box.innerHTML = `<code class="errcode">${esc(err.errcode)}</code> <span class="message">${esc(err.error)}</span>`;
    box.hidden = false;
  } else {
    box.textContent = "";
    box.hidden = true;
  }
  control?.setAttribute("aria-invalid", err ? "true" : "false");
}

const fieldElement: Record<string, string> = { serverName: "server-name", request: "request", inventory: "inventory" };

// ---- remote servers ----

let remoteServers: string[] = [];
let remoteSignature = "";

/** The remote servers of the request (as far as it can be read) in sorted order. */
function requestedServers(): { servers: string[]; devices: Record<string, string[]> } {
  let req: { one_time_keys?: Record<string, Record<string, string>> };
  try {
    req = JSON.parse(state.request);
  } catch {
    return { servers: remoteServers, devices: {} };
  }
  const map = req?.one_time_keys && typeof req.one_time_keys === "object" ? req.one_time_keys : {};
  const servers = new Set<string>();
  for (const [user, devs] of Object.entries(map)) {
    const srv = serverOf(user);
    if (srv && srv !== state.serverName && devs && typeof devs === "object" && Object.keys(devs).length > 0) servers.add(srv);
  }
  const list = [...servers].sort();
  const devices: Record<string, string[]> = {};
  for (const srv of list) devices[srv] = devicesOf(map as Record<string, Record<string, string>>, srv);
  return { servers: list, devices };
}

function renderRemotes() {
  const { servers, devices } = requestedServers();
  const sig = JSON.stringify([servers, devices, servers.map((s) => state.remotes[s]?.behaviour ?? "full")]);
  if (sig === remoteSignature) return;
  remoteSignature = sig;
  remoteServers = servers;
  const focused = document.activeElement?.id;
  const list = $("#remote-list");
  if (servers.length === 0) {
    list.innerHTML = `<p class="note">The request names no user of another server.</p>`;
    return;
  }
  list.innerHTML = servers
    .map((srv, i) => {
      const r = state.remotes[srv] ?? { behaviour: "full" };
      const opts = BEHAVIOURS.map((b) => `<option value="${b.value}"${b.value === r.behaviour ? " selected" : ""}>${esc(b.label)}</option>`).join("");
      let extra = "";
      if (r.behaviour === "omit") {
        const target = r.omit ?? devices[srv][0];
        const devOpts = devices[srv].map((d) => `<option value="${esc(d)}"${d === target ? " selected" : ""}>${esc(d)}</option>`).join("");
        extra = `<label for="remote-${i}-omit">Device left out</label><select id="remote-${i}-omit" data-server="${esc(srv)}" data-prop="omit">${devOpts}</select>`;
      } else if (r.behaviour === "error") {
        extra = `<label for="remote-${i}-status">HTTP status</label><input id="remote-${i}-status" type="number" min="100" max="599" inputmode="numeric" value="${r.status ?? 500}" data-server="${esc(srv)}" data-prop="status">
<label for="remote-${i}-errcode">errcode</label><input id="remote-${i}-errcode" value="${esc(r.errcode ?? "M_UNKNOWN")}" spellcheck="false" data-server="${esc(srv)}" data-prop="errcode">
<label for="remote-${i}-message">error</label><input id="remote-${i}-message" value="${esc(r.message ?? "Internal server error")}" data-server="${esc(srv)}" data-prop="message">`;
      }
      return `<div class="remote" role="group" aria-labelledby="remote-${i}-name">
<span class="server" id="remote-${i}-name">${esc(srv)}</span>
<label for="remote-${i}-behaviour" class="visually-hidden">What ${esc(srv)} does</label>
<select id="remote-${i}-behaviour" data-server="${esc(srv)}" data-prop="behaviour">${opts}</select>
<div class="extra">${extra}</div>
<p class="error" id="remote-${i}-error" hidden></p>
</div>`;
    })
    .join("");
  if (focused) document.getElementById(focused)?.focus();
}

$("#remote-list").addEventListener("change", onRemoteEdit);
$("#remote-list").addEventListener("input", onRemoteEdit);

function onRemoteEdit(ev: Event) {
  const el = ev.target as HTMLInputElement | HTMLSelectElement;
  const srv = el.dataset.server;
  const prop = el.dataset.prop;
  if (!srv || !prop) return;
  if (ev.type === "input" && el instanceof HTMLSelectElement) return; // handled on change
  const r = { ...(state.remotes[srv] ?? { behaviour: "full" as Behaviour }) };
  if (prop === "behaviour") {
    state.remotes[srv] = { behaviour: el.value as Behaviour };
  } else if (prop === "status") {
    const n = Number(el.value);
    state.remotes[srv] = { ...r, status: Number.isInteger(n) ? n : r.status };
  } else {
    state.remotes[srv] = { ...r, [prop]: el.value };
  }
  edited();
}

// ---- running and rendering ----

let timer: number | undefined;

/** Something was edited: the scenario is no longer an unchanged example. */
function edited() {
  exampleId = undefined;
  ($("#example") as HTMLSelectElement).value = "";
  $("#example-note").textContent = "";
  schedule();
}

function schedule(delay = 200) {
  clearTimeout(timer);
  timer = window.setTimeout(() => runAndRender(), delay);
}

/** Runs the scenario and renders it; then, unless told not to, the tracker (which replays claims). */
function runAndRender(withTracker = true) {
  clearTimeout(timer);
  renderRemotes();
  const t0 = performance.now();
  engine.takeCalls();
  let run: Run;
  try {
    run = runScenario(engine, state);
  } catch (e) {
    status(`The engine failed: ${(e as Error).message}`);
    throw e;
  }
  lastCalls = engine.takeCalls();
  const t1 = performance.now();
  render(run);
  void document.body.offsetHeight; // the layout of what was rendered is part of rendering it
  const t2 = performance.now();
  lastRun = run;
  const devices = run.claim ? Object.values(run.claim.request).reduce((n, d) => n + Object.keys(d).length, 0) : 0;
  probe.runs++;
  probe.lastRun = { computeMs: t1 - t0, renderMs: t2 - t1, devices };
  $("#timing").textContent = run.claim ? `Claim for ${devices.toLocaleString("en")} devices computed in ${(t1 - t0).toFixed(1)} ms, shown in ${(t2 - t1).toFixed(1)} ms.` : "";
  history.replaceState(null, "", encodeFragment(state, exampleId));
  const callsBox = $<HTMLDetailsElement>("#calls");
  if (callsBox.open) renderCalls();
  else $("ol", callsBox).innerHTML = "";
  // The tracker replays claims: after the answers are on screen.
  if (withTracker) window.setTimeout(renderTracker, 0);
}

let inventoryCache: { text: string; value: unknown } | undefined;

/** The scenario's inventory, parsed (once per text: a 1,000-device one is large). */
function parsedInventory(): unknown {
  if (inventoryCache?.text !== state.inventory) {
    let value: unknown = {};
    try {
      value = JSON.parse(state.inventory || "{}");
    } catch {
      // the engine has said what is wrong with it
    }
    inventoryCache = { text: state.inventory, value };
  }
  return inventoryCache.value;
}

/** The outcome rows shown before "Show all". */
const TABLE_ROWS = 200;

function render(run: Run) {
  const errs = run.errors;
  for (const f of ["serverName", "request", "inventory"] as Field[]) {
    showError(fieldElement[f], errs[f], document.getElementById(fieldElement[f]));
  }
  remoteServers.forEach((srv, i) => showError(`remote-${i}`, errs[`remote:${srv}`], document.getElementById(`remote-${i}-behaviour`)));
  const failed = Object.keys(errs).length > 0;
  document.body.classList.toggle("has-errors", failed);
  if (failed) {
    const [field, err] = Object.entries(errs)[0] as [Field, MatrixError];
    status(`${err.errcode} in ${field.startsWith("remote:") ? field.slice(7) : field}: the answers below are from the last valid scenario.`);
    return;
  }
  status("");
  const claim = run.claim!;
  const [m, l] = [claim.answers.msc4072, claim.answers.legacy];
  const pm = prettyDiff(m.value, l.value);
  const pl = prettyDiff(l.value, m.value);
  for (const [mode, p] of [["msc4072", pm], ["legacy", pl]] as const) {
    const fig = $(`#answer-${mode}`);
    $(".pretty", fig).innerHTML = p.html;
    $(".raw", fig).textContent = claim.answers[mode].text;
  }
  $("#diff-summary").textContent =
    pm.marked + pl.marked === 0
      ? "Both modes give the same answer: every requested device has a key, or its server failed."
      : `Marked + : ${pm.marked} ${pm.marked === 1 ? "entry" : "entries"} only in msc4072, ${pl.marked} only in legacy (~ : a different value).`;

  // Per-device outcomes.
  const inventory = parsedInventory();
  const rows: string[] = [];
  const fails = m.value.failures;
  const label: Record<string, string> = { claimed: "claimed", no_keys: "no keys", server_failed: "server failed" };
  for (const user of Object.keys(claim.request).sort()) {
    const srv = serverOf(user);
    for (const dev of Object.keys(claim.request[user]).sort()) {
      const o = MODES.map((mode) => run.outcomes![mode][user]?.[dev] ?? { outcome: "no_keys" as const });
      const cells = o.map((x, i) => {
        const absent = x.outcome === "no_keys" && !(dev in (claim.answers[MODES[i]].value.one_time_keys[user] ?? {}));
        return `<td data-label="${MODES[i]}" class="o-${x.outcome}">${label[x.outcome]}${x.outcome === "no_keys" ? (absent ? " <small>(left out)</small>" : " <small>(<code>{}</code>)</small>") : ""}</td>`;
      });
      let why = "";
      const x = o[0];
      if (x.outcome === "claimed") why = `<code>${esc(x.key_id)}</code><br>${esc(keySource(inventory, user, dev, x.key_id))}`;
      else if (x.outcome === "server_failed") {
        const f = fails[srv];
        why = f ? `${f.status}${f.errcode ? " " + esc(f.errcode) : ""}: ${esc(f.message)}` : "its server failed";
      } else {
        const known = (inventory as Record<string, Record<string, unknown>>)?.[user]?.[dev];
        const remote = claim.remotes[srv];
        why = !known
          ? "unknown device"
          : remote
            ? `${esc(srv)} gave no usable key for it`
            : "no one-time key and no fallback key left";
      }
      rows.push(`<tr><td data-label="User">${esc(user)}</td><td data-label="Device">${esc(dev)}</td>${cells.join("")}<td data-label="Why">${why}</td></tr>`);
    }
  }
  // A large claim shows its first rows at once, the rest on request (each row is laid out).
  const tbody = $<HTMLTableSectionElement>("#outcomes tbody");
  tbody.innerHTML =
    rows.length === 0
      ? `<tr><td colspan="5">The request names no device.</td></tr>`
      : rows.length <= TABLE_ROWS
        ? rows.join("")
        : rows.slice(0, TABLE_ROWS).join("") + `<tr><td colspan="5"><button type="button" id="all-rows">Show all ${rows.length.toLocaleString("en")} devices</button></td></tr>`;
  document.getElementById("all-rows")?.addEventListener("click", () => {
    tbody.innerHTML = rows.join("");
    (tbody.rows[TABLE_ROWS]?.cells[0] as HTMLElement | undefined)?.setAttribute("tabindex", "-1");
    (tbody.rows[TABLE_ROWS]?.cells[0] as HTMLElement | undefined)?.focus();
  });

  const dropped = droppedParts(claim, state.serverName);
  $("#dropped tbody").innerHTML =
    dropped.map((d) => `<tr><td data-label="Server">${esc(d.server)}</td><td data-label="User">${esc(d.user)}</td><td data-label="Device">${esc(d.device)}</td><td data-label="What and why">${d.keyId ? `<code>${esc(d.keyId)}</code><br>` : ""}${esc(d.reason)}</td></tr>`).join("") ||
    `<tr><td colspan="4">Nothing: every remote answer held only what was asked.</td></tr>`;

  $("#remote-answers > div").innerHTML =
    Object.entries(claim.remotes)
      .map(([srv, r]) => {
        const o = r.outcome;
        const what = "failure" in o ? `no answer: <code>${esc(JSON.stringify(o.failure))}</code>` : `HTTP ${o.status}: <pre class="raw">${esc(o.body)}</pre>`;
        return `<h4>${esc(srv)}</h4><p>asked <code>${esc(r.body)}</code></p><p>${what}</p>`;
      })
      .join("") || "<p>No remote server was asked.</p>";
}

function renderCalls() {
  $("#calls ol").innerHTML = lastCalls
    .map((c) => `<li><p><code>${esc(c.op)}</code></p><pre class="raw call-input">${esc(c.input)}</pre><pre class="raw call-output">${esc(c.output)}</pre></li>`)
    .join("");
}
$("#calls").addEventListener("toggle", () => {
  if (($("#calls") as HTMLDetailsElement).open) renderCalls();
});

// ---- tracker ----

const fmtTime = (ms: number) => {
  if (ms < 60000) return `${(ms / 1000).toLocaleString("en")} s`;
  const m = Math.floor(ms / 60000), s = (ms % 60000) / 1000;
  return s ? `${m} min ${s.toLocaleString("en")} s` : `${m} min`;
};

function deviceList(map: Record<string, Record<string, unknown>>, fmt?: (v: unknown) => string): string {
  const items: string[] = [];
  for (const user of Object.keys(map).sort()) for (const dev of Object.keys(map[user]).sort()) items.push(`${esc(user)} ${esc(dev)}${fmt ? " " + fmt(map[user][dev]) : ""}`);
  return items.length ? items.join("<br>") : "none";
}

function renderTracker() {
  $("#tracker-now").textContent = fmtTime(state.tracker.now);
  ($("#tracker-mode") as HTMLSelectElement).value = state.tracker.mode;
  const run = lastRun;
  if (!run?.claim) return;
  engine.takeCalls();
  const view = runTracker(engine, state, run.claim);
  trackerCalls = engine.takeCalls();
  probe.trackerRuns++;
  showError("tracker", view.error);
  const counts = (o: Record<string, Record<string, { outcome: string }>>) => {
    const c: Record<string, number> = { claimed: 0, no_keys: 0, server_failed: 0 };
    for (const u of Object.values(o)) for (const d of Object.values(u)) c[d.outcome]++;
    return `${c.claimed} claimed, ${c.no_keys} no keys, ${c.server_failed} server failed`;
  };
  $("#tracker-steps tbody").innerHTML = view.steps
    .map((s) => {
      const deferred = s.plan ? deviceList(s.plan.deferred, (v) => `until ${fmtTime(v as number)}`) : "";
      return `<tr><td data-label="Time">${fmtTime(s.at)}</td><td data-label="Claimed" class="devices">${s.claimed ? deviceList(s.claimed.request) : "nothing: every device is backed off"}</td><td data-label="Outcome">${s.claimed ? counts(s.claimed.outcomes) + `; remembers ${s.claimed.tracked}` : ""}</td><td data-label="Deferred then" class="devices">${deferred}</td></tr>`;
    })
    .join("");
  const n = view.next;
  $("#tracker-next").innerHTML = n
    ? `<p>Of the devices still without a key, at ${fmtTime(state.tracker.now)} the client would claim: <span class="devices">${deviceList(n.one_time_keys)}</span></p><p>and wait for: <span class="devices">${deviceList(n.deferred, (v) => `until ${fmtTime(v as number)}`)}</span></p>`
    : "";
}

document.querySelectorAll<HTMLButtonElement>("[data-advance]").forEach((b) =>
  b.addEventListener("click", () => {
    state.tracker.now += Number(b.dataset.advance);
    trackerChanged();
  }),
);
$("#tracker-claim").addEventListener("click", () => {
  if (!state.tracker.claims.includes(state.tracker.now) && state.tracker.now > 0) state.tracker.claims.push(state.tracker.now);
  trackerChanged();
});
$("#tracker-reset").addEventListener("click", () => {
  state.tracker = { mode: state.tracker.mode, claims: [], now: 5000 };
  trackerChanged();
});
$("#tracker-mode").addEventListener("change", (e) => {
  state.tracker.mode = (e.target as HTMLSelectElement).value as Mode;
  trackerChanged();
});
function trackerChanged() {
  exampleId = undefined;
  history.replaceState(null, "", encodeFragment(state));
  renderTracker();
}

// ---- scenario in and out ----

function setScenario(s: Scenario) {
  state = s;
  inputs.serverName.value = s.serverName;
  inputs.request.value = s.request;
  inputs.inventory.value = s.inventory;
  remoteSignature = "";
  const ex = exampleId ? example(exampleId) : undefined;
  ($("#example") as HTMLSelectElement).value = exampleId ?? "";
  $("#example-note").textContent = ex?.note ?? "";
  runAndRender();
}

function loadExample(id: string) {
  const ex = example(id);
  if (!ex) return;
  exampleId = id;
  setScenario(ex.scenario());
}

inputs.serverName.addEventListener("input", () => {
  state.serverName = inputs.serverName.value;
  edited();
});
inputs.request.addEventListener("input", () => {
  state.request = inputs.request.value;
  edited();
});
inputs.inventory.addEventListener("input", () => {
  state.inventory = inputs.inventory.value;
  edited();
});
$("#example").addEventListener("change", (e) => {
  const id = (e.target as HTMLSelectElement).value;
  if (id) loadExample(id);
});

async function copy(text: string, what: string) {
  try {
    await navigator.clipboard.writeText(text);
    status(`${what} copied.`);
  } catch {
    const ta = document.createElement("textarea");
    ta.value = text;
    ta.setAttribute("readonly", "");
    ta.className = "visually-hidden";
    document.body.append(ta);
    ta.select();
    const ok = document.execCommand("copy");
    ta.remove();
    status(ok ? `${what} copied.` : `Could not copy ${what}: select it and copy it by hand.`);
  }
}

document.querySelectorAll<HTMLButtonElement>("[data-copy]").forEach((b) =>
  b.addEventListener("click", () => {
    const mode = b.dataset.copy as Mode;
    const claim = lastRun?.claim;
    if (claim) void copy(claim.answers[mode].text, `The ${mode} answer`);
  }),
);
$("#share").addEventListener("click", () => {
  history.replaceState(null, "", encodeFragment(state, exampleId));
  void copy(location.href, "The link to this scenario");
});

window.addEventListener("hashchange", () => {
  const d = decodeFragment(location.hash);
  if (d instanceof Error) status(d.message);
  else if (d && JSON.stringify(d.scenario) !== JSON.stringify(state)) {
    exampleId = d.exampleId;
    setScenario(d.scenario);
  }
});

// ---- start ----

async function start() {
  const sel = $<HTMLSelectElement>("#example");
  sel.innerHTML = `<option value="">(edited)</option>` + EXAMPLES.map((e) => `<option value="${e.id}">${esc(e.title)}</option>`).join("");
  status("Loading the engine…");
  try {
    performance.mark("keyclaim-load-start");
    engine = await Engine.load();
    performance.mark("keyclaim-engine-loaded");
  } catch (e) {
    status(`The engine could not be loaded: ${(e as Error).message}`);
    throw e;
  }
  const d = decodeFragment(location.hash);
  if (d instanceof Error || d === undefined) {
    loadExample(EXAMPLES[0].id);
    if (d instanceof Error) status(d.message);
  } else {
    exampleId = d.exampleId;
    setScenario(d.scenario);
  }
  performance.mark("keyclaim-interactive");
  probe.interactiveMs = performance.now();
  probe.ready = true;
  document.body.dataset.ready = "true";
  setUpLive({ engine, scenario: () => state, load: (s) => probe.load(s) });
  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.register("sw.js").then(
      () => ($("#offline").textContent = "Works offline once loaded."),
      () => undefined,
    );
  }
}

void start();
