// The playground's two speed targets (issue 12), measured in headless Chromium on loopback:
//   1. time to interactive: from navigation start to the first example rendered (the module
//      fetched, compiled and instantiated, the first scenario computed and shown), in a fresh
//      browser context (no HTTP cache, no service worker) and again with both warm;
//   2. one completion of the 1,000-device example, run again in place: the whole claim computed
//      by the module (parse_claim, plan_fanout, select_keys, complete_federation per remote
//      server, complete_client in both modes, classify_claim for both) and rendered (both answers
//      with differences marked, the per-device table, the dropped junk) including the layout, as
//      the page times it (performance.now around compute, and around render plus a forced layout).
// Prints a Markdown table for BENCHMARKS.md. Usage: node bench.mjs [loads] [renders]
import { launchChromium, startPlayground, waitReady } from "./test/harness.mjs";

const loads = Number(process.argv[2] ?? 15);
const renders = Number(process.argv[3] ?? 15);
const stats = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p) => s[Math.min(s.length - 1, Math.floor(p * s.length))];
  return { median: q(0.5), min: s[0], p90: q(0.9), max: s.at(-1), n: s.length };
};
const fmt = (x) => x.toFixed(1);
const row = (name, st) => `| ${name} | ${fmt(st.median)} | ${fmt(st.min)} | ${fmt(st.p90)} | ${fmt(st.max)} | ${st.n} |`;

const pg = await startPlayground();
const browser = await launchChromium();
const tti = async (page) => page.evaluate(() => window.__playground.interactiveMs);
try {
  const cold = [], warm = [];
  for (let i = 0; i < loads; i++) {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    await page.goto(pg.url);
    await waitReady(page);
    cold.push(await tti(page));
    await page.evaluate(() => navigator.serviceWorker.ready);
    await page.reload();
    await waitReady(page);
    warm.push(await tti(page));
    await ctx.close();
  }

  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  await page.goto(pg.url);
  await waitReady(page);
  await page.selectOption("#example", "large");
  await page.waitForTimeout(500);
  // Wall times from the page, and the main thread's CPU time (Chrome's ThreadTime metric), which
  // a busy machine inflates far less than wall time.
  const cdp = await ctx.newCDPSession(page);
  await cdp.send("Performance.enable");
  const cpu = async () => (await cdp.send("Performance.getMetrics")).metrics.find((m) => m.name === "ThreadTime").value * 1000;
  const compute = [], render = [], total = [], cpuTotal = [], cpuCompute = [], cpuRender = [], renderAgain = [];
  for (let i = 0; i < renders + 2; i++) {
    // The same scenario again: the claim computed and rendered anew, nothing else changed.
    const c0 = await cpu();
    const r = await page.evaluate(() => window.__playground.rerun());
    const c1 = await cpu();
    if (r.devices !== 1000) throw new Error(`the large example has ${r.devices} devices`);
    await page.waitForTimeout(300); // the tracker runs after the render; let it finish
    const c2 = await cpu();
    await page.evaluate(() => window.__playground.computeOnly());
    const c3 = await cpu();
    await page.waitForTimeout(100);
    const c4 = await cpu();
    const renderWall = await page.evaluate(() => window.__playground.renderOnly());
    const c5 = await cpu();
    await page.waitForTimeout(100);
    if (i < 2) continue; // the first runs also warm V8's optimising tiers
    compute.push(r.computeMs);
    render.push(r.renderMs);
    total.push(r.computeMs + r.renderMs);
    cpuTotal.push(c1 - c0);
    cpuCompute.push(c3 - c2);
    cpuRender.push(c5 - c4);
    renderAgain.push(renderWall);
  }
  await ctx.close();
  const version = browser.version();
  const { loadavg } = await import("node:os");
  console.log(`Chromium ${version}, playground on ${pg.url} (loopback), times in ms, load average at the end ${loadavg().map((x) => x.toFixed(1)).join(" ")}\n`);
  console.log("| measure | median | min | p90 | max | runs |\n|---|---|---|---|---|---|");
  console.log(row("time to interactive, cold (fresh context: module fetched and compiled)", stats(cold)));
  console.log(row("time to interactive, warm (service worker and code cache)", stats(warm)));
  console.log(row("1,000-device claim: computed by the module (11 engine calls)", stats(compute)));
  console.log(row("1,000-device claim: rendered (answers, differences, table)", stats(render)));
  console.log(row("1,000-device claim: computed and rendered", stats(total)));
  console.log(row("1,000-device claim: computed, main-thread CPU", stats(cpuCompute)));
  console.log(row("1,000-device claim: computed and rendered, main-thread CPU", stats(cpuTotal)));
  console.log(row("1,000-device claim: rendered again alone (render and layout), wall", stats(renderAgain)));
  console.log(row("1,000-device claim: rendered again alone (render and layout), main-thread CPU", stats(cpuRender)));
} finally {
  await browser.close();
  await pg.stop();
}
