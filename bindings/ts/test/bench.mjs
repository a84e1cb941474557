// complete_client of 1, 100 and 1,000 devices through the typed API and through invoke, on
// Node.js (V8) and in Chromium (V8), with the installed package. `make bench-ts` runs it (part of
// `make bench`). Usage: node test/bench.mjs [calls for 1,000 devices (default 100); 20× that for 1, 4× for 100]
import * as keyclaim from 'keyclaim';
import { benchCompleteClient } from './benchcore.mjs';
import { withPage } from './browser.mjs';

const calls1000 = Number(process.argv[2]) || 100;
const plan = [[1, calls1000 * 20], [100, calls1000 * 4], [1000, calls1000]];
const cpuCols = (r) => r.typedCpuUs === undefined ? '– | – | –'
  : `${r.typedCpuUs.toFixed(0)} | ${r.rawCpuUs.toFixed(0)} | ${(r.typedCpuUs / r.rawCpuUs).toFixed(2)}`;
const row = (where, r) => console.log(
  `| ${where} | ${r.devices} | ${r.calls} (batches of ${r.batch}) | ${r.typedUs.toFixed(0)} | ${r.rawUs.toFixed(0)} | ${r.ratio.toFixed(2)} | ${cpuCols(r)} |`);
const cpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

console.log('complete_client: typed (object in, parsed result out) vs raw invoke (JSON text in, envelope bytes out), interleaved, same engine');
console.log('(median wall µs per call; on Node.js also the mean process CPU µs per call, steadier on a busy machine)');
console.log('| runtime | devices | calls | typed µs | raw µs | typed/raw | typed CPU µs | raw CPU µs | CPU typed/raw |');
console.log('|---|---|---|---|---|---|---|---|---|');
const engine = await keyclaim.load();
for (const [n, calls] of plan) row(`Node.js ${process.version}`, benchCompleteClient(engine, n, calls, cpuMs));
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
