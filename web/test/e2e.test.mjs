// End to end: the playground in real headless Chromium, its engine the real WebAssembly module
// through the keyclaim package, checked against the native Go core byte for byte; errors next to
// their fields; sharing, copying, the tracker, offline use, keyboard use, an accessibility check
// (axe-core), screenshots under var/, and live mode against a real keys server (--dev).
import assert from "node:assert/strict";
import { readFileSync, mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { freePort, launchChromium, native, resultOf, startKeysServer, startPlayground, varDir, waitReady } from "./harness.mjs";

const require = createRequire(import.meta.url);
const axeSource = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");

let browser, playground;

before(async () => {
  mkdirSync(varDir, { recursive: true });
  playground = await startPlayground();
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await playground?.stop();
});

async function openPage(url, viewport = { width: 1280, height: 900 }, options = {}) {
  const context = await browser.newContext({ viewport, ...options });
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (e) => problems.push(`pageerror: ${e.message}`));
  page.on("console", (m) => {
    // The static server has no live mode: its 404 for the live configuration is expected.
    if (m.type() === "error" && !/404/.test(m.text())) problems.push(`console: ${m.text()}`);
  });
  await page.goto(url);
  await waitReady(page);
  return { context, page, problems };
}

const probe = (page) => page.evaluate(() => ({ runs: window.__playground.runs, trackerRuns: window.__playground.trackerRuns }));

/** Waits until the page has run the scenario again (and its tracker) after before. */
async function waitRun(page, before) {
  await page.waitForFunction(
    ([r, t]) => window.__playground.runs > r && window.__playground.trackerRuns > t,
    [before.runs, before.trackerRuns],
    { timeout: 20000 },
  );
}

async function chooseExample(page, id) {
  const before = await probe(page);
  await page.selectOption("#example", id);
  await waitRun(page, before);
}

const rendered = (page, mode) => page.locator(`#answer-${mode} .raw`).textContent();

/**
 * Every engine call of the page's last run, and its rendered answers, compared with the native
 * core: each envelope byte for byte, and each rendered answer with native complete_client's.
 */
async function checkParity(page) {
  const calls = await page.evaluate(() => window.__playground.calls());
  assert.ok(calls.length >= 5, `expected a full run, got ${calls.length} calls`);
  const want = native(calls);
  calls.forEach((c, i) => assert.equal(c.output, want[i], `${c.op} (call ${i}) differs from the native core`));
  const completes = calls.map((c, i) => ({ ...c, native: want[i] })).filter((c) => c.op === "complete_client");
  assert.equal(completes.length, 2);
  const answers = {};
  for (const mode of ["msc4072", "legacy"]) {
    const c = completes.find((c) => JSON.parse(c.input).mode === mode);
    const nativeAnswer = resultOf(c.native);
    assert.ok(nativeAnswer, `native complete_client (${mode}) failed: ${c.native}`);
    assert.equal(await rendered(page, mode), nativeAnswer, `rendered ${mode} answer differs from the native core's`);
    answers[mode] = JSON.parse(nativeAnswer);
  }
  // The outcome table says what native classify_claim says.
  const classify = calls.map((c, i) => ({ ...c, native: want[i] })).filter((c) => c.op === "classify_claim");
  const outcomes = JSON.parse(resultOf(classify[0].native)).outcomes;
  // A large claim shows 200 rows until "Show all" is pressed.
  const all = page.locator("#all-rows");
  if (await all.count()) {
    assert.match(await all.textContent(), /Show all [\d,]+ devices/);
    await all.click();
  }
  const rows = await page.locator("#outcomes tbody tr").evaluateAll((trs) => trs.map((tr) => [...tr.cells].map((td) => td.textContent)));
  const label = { claimed: "claimed", no_keys: "no keys", server_failed: "server failed" };
  let n = 0;
  for (const user of Object.keys(outcomes)) {
    for (const [dev, o] of Object.entries(outcomes[user])) {
      const row = rows.find((r) => r[0] === user && r[1] === dev);
      assert.ok(row, `no table row for ${user} ${dev}`);
      assert.ok(row[2].startsWith(label[o.outcome]), `${user} ${dev}: table says ${row[2]}, engine ${o.outcome}`);
      n++;
    }
  }
  assert.equal(rows.length, n);
  return { answers, calls };
}

describe("the playground in Chromium", () => {
  let page, problems, context;
  before(async () => {
    ({ page, problems, context } = await openPage(playground.url));
  });
  after(() => context?.close());

  test("the first example is rendered on load", async () => {
    assert.ok((await rendered(page, "msc4072")).startsWith('{"failures":'));
    assert.equal(await page.locator("#example").inputValue(), "complete");
  });

  // Each example through the real module, byte for byte against the native core, plus what the
  // answer must show for its misbehaviour (BRIEF 4).
  const scenarios = {
    complete: ({ msc4072, legacy }) => {
      assert.deepEqual(msc4072.one_time_keys["@alice:example.org"].OLDDEV, {});
      assert.equal(legacy.one_time_keys["@alice:example.org"].OLDDEV, undefined);
      assert.deepEqual(msc4072.failures, {});
    },
    omit: ({ msc4072, legacy }) => {
      assert.deepEqual(msc4072.one_time_keys["@bob:remote.example"].BOBPHONE, {});
      assert.equal(legacy.one_time_keys["@bob:remote.example"].BOBPHONE, undefined);
    },
    junk: ({ msc4072 }) => {
      assert.equal(msc4072.one_time_keys["@mallory:example.org"], undefined);
      assert.equal(msc4072.one_time_keys["@eve:other.example"], undefined);
      assert.deepEqual(Object.keys(msc4072.one_time_keys["@carol:other.example"].CAROLDEV), ["signed_curve25519:AAAAAw"]);
    },
    error: ({ msc4072 }) => {
      assert.deepEqual(msc4072.failures["remote.example"], { errcode: "M_UNKNOWN", message: "Internal server error", status: 500 });
      assert.equal(msc4072.one_time_keys["@bob:remote.example"], undefined);
    },
    timeout: ({ msc4072 }) => {
      assert.equal(msc4072.failures["other.example"].status, 504);
      assert.equal(msc4072.one_time_keys["@carol:other.example"], undefined);
    },
    mixed: ({ msc4072 }) => assert.deepEqual(Object.keys(msc4072.failures), ["remote.example"]),
    large: ({ msc4072 }, request) => {
      const count = (m, keep = () => true) => Object.entries(m).filter(([u]) => keep(u)).reduce((n, [, d]) => n + Object.keys(d).length, 0);
      const slow = count(request, (u) => u.endsWith(":slow.example"));
      assert.ok(slow > 0);
      assert.equal(count(request), 1000);
      assert.equal(count(msc4072.one_time_keys), 1000 - slow, "every device but slow.example's (timed out) is answered");
      assert.equal(msc4072.failures["slow.example"].status, 504);
    },
  };
  for (const [id, expect] of Object.entries(scenarios)) {
    test(`example ${id}: every engine call and both answers equal the native core's`, async () => {
      await chooseExample(page, id);
      const { answers } = await checkParity(page);
      const request = await page.evaluate(() => JSON.parse(window.__playground.scenario().request).one_time_keys);
      expect(answers, request);
    });
  }

  test("the junk example lists what the engine dropped", async () => {
    await chooseExample(page, "junk");
    const text = await page.locator("#dropped tbody").textContent();
    for (const s of ["@mallory:example.org", "@eve:other.example", "NOTREQUESTED", "curve25519:AAAAAD", "not a key"]) assert.ok(text.includes(s), `dropped table lacks ${s}: ${text}`);
  });

  test("editing with the keyboard: a remote server's behaviour", async () => {
    await chooseExample(page, "complete");
    const before = await probe(page);
    const select = page.locator("#remote-list select[data-server='remote.example']");
    await select.focus();
    await select.selectOption("error"); // as the keyboard does on a focused <select>
    await waitRun(page, before);
    const { answers } = await checkParity(page);
    assert.equal(answers.msc4072.failures["remote.example"].status, 500);
    assert.equal(await page.locator("#example").inputValue(), "");
    // The error fields appear and can be edited with the keyboard.
    const status = page.locator("#remote-list input[data-prop='status']");
    const b2 = await probe(page);
    await status.focus();
    await page.keyboard.press("Control+A");
    await page.keyboard.type("404");
    await waitRun(page, b2);
    assert.equal((await checkParity(page)).answers.msc4072.failures["remote.example"].status, 404);
  });

  test("a bad claim request shows the Matrix error next to the request", async () => {
    await chooseExample(page, "complete");
    const before = await probe(page);
    const body = '{"one_time_keys": {"@alice:example.org": {"ALICEDEV": "signed_curve25519"}, "bob:remote.example": {"BOBDEV": "signed_curve25519"}}}';
    await page.locator("#request").fill(body);
    await page.waitForFunction((r) => window.__playground.runs > r, before.runs);
    const err = page.locator("#request-error");
    assert.ok(await err.isVisible());
    const want = JSON.parse(native([{ op: "parse_claim", input: JSON.stringify({ body }) }])[0]);
    assert.equal(want.errcode, "M_INVALID_PARAM");
    assert.equal(await err.locator(".errcode").textContent(), want.errcode);
    assert.equal(await err.locator(".message").textContent(), want.error);
    assert.equal(await page.locator("#request").getAttribute("aria-invalid"), "true");
    assert.ok(await page.locator("#inventory-error").isHidden());
  });

  test("a broken inventory shows the Matrix error next to the inventory", async () => {
    await chooseExample(page, "complete");
    const before = await probe(page);
    const inventory = '{"@alice:example.org": {"ALICEDEV": {"one_time_keys": [{"key_id": "signed_curve25519:AAAA", "batch": -1, "key": "k"}]}}}';
    await page.locator("#inventory").fill(inventory);
    await page.waitForFunction((r) => window.__playground.runs > r, before.runs);
    const err = page.locator("#inventory-error");
    assert.ok(await err.isVisible());
    const calls = await page.evaluate(() => window.__playground.calls());
    const select = calls.find((c) => c.op === "select_keys");
    const want = JSON.parse(native([select])[0]);
    assert.ok(want.errcode, "native select_keys accepted the broken inventory");
    assert.equal(await err.locator(".errcode").textContent(), want.errcode);
    assert.equal(await err.locator(".message").textContent(), want.error);
    assert.ok(await page.locator("#request-error").isHidden());
    assert.equal(await page.locator("#inventory").getAttribute("aria-invalid"), "true");
  });

  test("an inventory that is not JSON: the error's byte offset is in the inventory", async () => {
    await chooseExample(page, "complete");
    const before = await probe(page);
    const inventory = '{"@alice:example.org": {,}}';
    await page.locator("#inventory").fill(inventory);
    await page.waitForFunction((r) => window.__playground.runs > r, before.runs);
    const err = page.locator("#inventory-error");
    assert.equal(await err.locator(".errcode").textContent(), "M_NOT_JSON");
    const want = JSON.parse(native([{ op: "classify_claim", input: JSON.stringify({ request: { one_time_keys: {} }, body: inventory }) }])[0]);
    assert.equal(want.errcode, "M_NOT_JSON");
    assert.match(want.error, /at byte 24\b/); // the comma, counted from the inventory's first byte
    assert.equal(await err.locator(".message").textContent(), want.error);
  });

  test("the share link restores the edited scenario", async () => {
    await chooseExample(page, "omit");
    const before = await probe(page);
    await page.locator("#server-name").fill("example.org");
    await page.locator("#remote-list select[data-server='other.example']").selectOption("timeout");
    await waitRun(page, before);
    const url = page.url();
    assert.match(url, /#s=/);
    const other = await openPage(url);
    try {
      for (const mode of ["msc4072", "legacy"]) assert.equal(await rendered(other.page, mode), await rendered(page, mode));
      assert.equal(await other.page.locator("#remote-list select[data-server='other.example']").inputValue(), "timeout");
    } finally {
      await other.context.close();
    }
  });

  test("copy JSON puts the exact answer on the clipboard", async () => {
    await context.grantPermissions(["clipboard-read", "clipboard-write"]);
    await chooseExample(page, "error");
    await page.locator("[data-copy='legacy']").click();
    await page.waitForFunction(() => document.querySelector("#status").textContent.includes("copied"));
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), await rendered(page, "legacy"));
  });

  test("the tracker backs a timed-out server off and retries it later", async () => {
    await chooseExample(page, "timeout");
    const next = () => page.locator("#tracker-next").textContent();
    assert.match(await next(), /@carol:other\.example CAROLDEV until 15 s/);
    for (const b of ["+15 s", "Claim now"]) {
      const before = await page.evaluate(() => window.__playground.trackerRuns);
      await page.getByRole("button", { name: b, exact: true }).click();
      await page.waitForFunction((t) => window.__playground.trackerRuns > t, before);
    }
    // At 20 s CAROLDEV was claimed again, its server failed again: backed off twice as long.
    const rows = await page.locator("#tracker-steps tbody tr").count();
    assert.equal(rows, 2);
    assert.match(await next(), /CAROLDEV until 50 s/);
    const calls = await page.evaluate(() => window.__playground.trackerCalls());
    const want = native(calls);
    calls.forEach((c, i) => assert.equal(c.output, want[i], `tracker ${c.op} (call ${i}) differs from the native core`));
  });

  test("no errors in the console", () => assert.deepEqual(problems, []));
});

describe("offline, accessibility, screenshots", () => {
  test("works offline once loaded", async () => {
    const { context, page } = await openPage(playground.url + "#example=error");
    try {
      await page.evaluate(() => navigator.serviceWorker.ready);
      await page.reload();
      await waitReady(page);
      await page.waitForFunction(() => navigator.serviceWorker.controller !== null);
      await context.setOffline(true);
      await page.reload();
      await waitReady(page);
      await chooseExample(page, "omit");
      await checkParity(page);
    } finally {
      await context.close();
    }
  });

  for (const [name, viewport] of [["desktop", { width: 1280, height: 900 }], ["phone", { width: 390, height: 844 }]]) {
    test(`axe-core finds no serious or critical violation (${name}), screenshot saved`, async () => {
      const { context, page } = await openPage(playground.url + "#example=mixed", viewport, { bypassCSP: true, isMobile: name === "phone", hasTouch: name === "phone" });
      try {
        // The state with an error shown is checked too.
        for (const state of ["answers", "error"]) {
          if (state === "error") {
            const r = await page.evaluate(() => window.__playground.runs);
            await page.locator("#request").fill("{not json");
            await page.waitForFunction((n) => window.__playground.runs > n, r);
          }
          await page.addScriptTag({ content: axeSource });
          const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ["violations"] }));
          const bad = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
          assert.deepEqual(bad.map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(" ")).join("; ")})`), [], `${name}, ${state}`);
          if (state === "answers") await page.screenshot({ path: join(varDir, `playground-${name}.png`), fullPage: true });
        }
        // Nothing is wider than the screen.
        const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
        assert.ok(overflow <= 0, `the page is ${overflow} px wider than the ${name} screen`);
      } finally {
        await context.close();
      }
    });
  }

  test("keyboard: the first Tab reaches the skip link, the third the examples, which change with the arrow keys", async () => {
    const { context, page } = await openPage(playground.url);
    try {
      await page.keyboard.press("Tab");
      assert.equal(await page.evaluate(() => document.activeElement.className), "skip");
      await page.keyboard.press("Tab"); // the link to MSC4072
      await page.keyboard.press("Tab");
      assert.equal(await page.evaluate(() => document.activeElement.id), "example");
      const before = await probe(page);
      await page.keyboard.press("ArrowDown");
      await waitRun(page, before);
      assert.equal(await page.locator("#example").inputValue(), "omit");
    } finally {
      await context.close();
    }
  });
});

describe("live mode against dist/keyclaim-server --dev", () => {
  let server;
  before(async () => {
    server = await startKeysServer();
  });
  after(() => server?.stop());

  test("the server's answer equals the in-page one, byte for byte, run after run", async () => {
    const { context, page, problems } = await openPage(server.url);
    try {
      await page.locator("#live").waitFor({ state: "visible" });
      await page.getByRole("button", { name: "Load an example for this server" }).click();
      for (let run = 1; run <= 2; run++) {
        await page.evaluate(() => (document.querySelector("#live-verdict").textContent = ""));
        await page.getByRole("button", { name: "Upload and claim on the server" }).click();
        await page.waitForFunction(() => document.querySelector("#live-verdict").textContent !== "" || !document.querySelector("#live-error").hidden, null, { timeout: 30000 });
        assert.ok(await page.locator("#live-error").isHidden(), await page.locator("#live-error").textContent());
        const serverAnswer = await page.locator("#live-server pre").textContent();
        const pageAnswer = await page.locator("#live-page pre").textContent();
        assert.equal(serverAnswer, pageAnswer, `run ${run}`);
        assert.equal(await page.locator("#live-verdict").getAttribute("data-same"), "true");
        const a = JSON.parse(serverAnswer);
        const alice = Object.keys(a.one_time_keys).find((u) => u.startsWith("@alice:"));
        assert.deepEqual(a.one_time_keys[alice].GHOSTDEV, {});
        assert.match(Object.keys(a.one_time_keys[alice].ALICEDEV)[0], /^signed_curve25519:AAAAA1_/, "the batch-1 key goes first");
      }
      assert.deepEqual(problems, []);
    } finally {
      await context.close();
    }
  });
});

describe("dist/keyclaim-server --playground, then without it", () => {
  test("--playground serves the page without live mode; restarted without it, / is the server's error and the page's worker removes itself", async () => {
    const listen = `127.0.0.1:${await freePort()}`;
    let server = await startKeysServer(["--playground"], { dev: false, listen });
    const { context, page, problems } = await openPage(server.url);
    try {
      await page.evaluate(() => navigator.serviceWorker.ready);
      assert.ok(await page.locator("#live").isHidden(), "live mode without --dev");
      await checkParity(page);
      await server.stop();
      server = await startKeysServer([], { dev: false, listen, dir: server.dir });
      const res = await page.reload();
      // The worker asked the network first: the server's own answer, not the cached page.
      assert.equal(res.status(), 404);
      assert.match(await page.locator("body").textContent(), /M_UNRECOGNIZED/);
      await page.waitForFunction(async () => (await navigator.serviceWorker.getRegistrations()).length === 0);
      assert.deepEqual(problems.filter((p) => !/404|Failed to load/.test(p)), []);
    } finally {
      await context.close();
      await server.stop();
    }
  });
});
