// complete_client of 1, 100 and 1,000 devices through the typed API and through invoke, on
// Node.js (V8) and in Chromium (V8), with the installed package. `make bench-ts` runs it (part of
// `make bench`). Usage: node test/bench.mjs [calls for 1,000 devices (default 100)]
import * as keyclaim from 'keyclaim';
import { benchCompleteClient } from './benchcore.mjs';
import { withPage } from './browser.mjs';

const calls1000 = Number(process.argv[2]) || 100;
const plan = [[1, calls1000 * 20], [100, calls1000 * 4], [1000, calls1000]];
const row = (where, r) => console.log(
  `| ${where} | ${r.devices} | ${r.calls} | ${r.typedUs.toFixed(0)} | ${r.rawUs.toFixed(0)} | ${r.ratio.toFixed(2)} |`);

console.log('complete_client, median µs per call, typed (object in, parsed result out) vs raw invoke (JSON text in, envelope bytes out), interleaved');
console.log('| runtime | devices | calls | typed µs | raw µs | typed/raw |');
console.log('|---|---|---|---|---|---|');
const engine = await keyclaim.load();
for (const [n, calls] of plan) row(`Node.js ${process.version}`, benchCompleteClient(engine, n, calls));
await withPage(async (page, { version }) => {
  for (const [n, calls] of plan) {
    const r = await page.evaluate(async ([n, calls]) => {
      const { keyclaim, benchCompleteClient } = window.keyclaimTest;
      window.engine ??= await keyclaim.load();
      return benchCompleteClient(window.engine, n, calls);
    }, [n, calls]);
    row(`Chromium ${version}`, r);
  }
});
