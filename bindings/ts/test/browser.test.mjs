// The same package in Chromium: every shared vector byte for byte through the browser build
// (vectorcheck.mjs, as on Node.js), trap recovery and concurrent promises in the page.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withPage } from './browser.mjs';
import { vectorFiles } from './repo.mjs';

test('Chromium: every shared vector, typed and raw; trap recovery; concurrent promises', async () => {
  const files = vectorFiles();
  await withPage(async (page, { version }) => {
    const r = await page.evaluate(async (files) => {
      const { keyclaim, runAll } = window.keyclaimTest;
      const engine = await keyclaim.load(); // fetches /keyclaim/dist/keyclaim.wasm, compileStreaming
      return runAll(keyclaim, engine, files);
    }, files);
    const ids = Object.keys(r.failures);
    assert.deepEqual(ids, [], ids.slice(0, 5).map((id) => `${id}:\n  ${r.failures[id].join('\n  ')}`).join('\n'));
    assert.ok(r.count >= 250, `only ${r.count} vectors`);
    console.log(`# Chromium ${version}: ${r.count} vectors, ${r.typed} through the typed API as well`);

    const trap = await page.evaluate(async () => {
      const { keyclaim } = window.keyclaimTest;
      const users = {};
      for (let d = 0; d < 200_000; d++) ((users[`@user${Math.floor(d / 10)}:example.org`] ??= {}))[`D${d % 10}`] = 'signed_curve25519';
      const big = { limits: { max_body_bytes: 67108864, max_pairs: 10000000 }, body: JSON.stringify({ one_time_keys: users }) };
      const e = await keyclaim.load({ maxMemoryMiB: 24, stderr: () => {} });
      let error;
      try { e.parseClaim(big); } catch (err) { error = `${err.name}: ${err instanceof keyclaim.KeyclaimTrap}`; }
      const after = e.parseClaim({ body: '{"one_time_keys":{}}' });
      return { error, after, stats: e.stats() };
    });
    assert.equal(trap.error, 'KeyclaimTrap: true');
    assert.deepEqual(trap.after, { one_time_keys: {}, timeout: 10000 });
    assert.equal(trap.stats.trapped, 1);
    assert.equal(trap.stats.created, 2);

    const conc = await page.evaluate(async () => {
      const { keyclaim } = window.keyclaimTest;
      const e = await keyclaim.load();
      const bad = [];
      await Promise.all(Array.from({ length: 100 }, async (_, i) => {
        const request = { one_time_keys: { [`@u${i}:s${i}.example`]: { D: 'signed_curve25519' } } };
        const t = e.tracker({ server_name: 'example.org' });
        await new Promise((r) => setTimeout(r, i % 5));
        t.observe(1000 + i, request, { one_time_keys: {}, failures: { [`s${i}.example`]: { status: 504, message: 'x' } } });
        await new Promise((r) => setTimeout(r, (i * 7) % 5));
        const p = t.plan(2000, request);
        if (p.deferred[`@u${i}:s${i}.example`]?.D !== 16000 + i) bad.push(JSON.stringify(p));
        t.free();
      }));
      return bad;
    });
    assert.deepEqual(conc, []);
  });
});
