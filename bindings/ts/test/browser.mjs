// Chromium (Debian's `chromium`, driven by playwright-core) on a page that loads the installed
// package's browser build from a loopback static server, as a web application would.
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, normalize, extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const pkg = dirname(createRequire(import.meta.url).resolve('keyclaim/package.json'));
const TYPES = { '.js': 'text/javascript', '.mjs': 'text/javascript', '.wasm': 'application/wasm', '.html': 'text/html', '.json': 'application/json' };
// What the server serves: the package as installed (its exports' browser build) and this folder.
const ROOTS = { '/keyclaim/': pkg, '/test/': here };

function startServer() {
  const server = createServer(async (req, res) => {
    const path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    const prefix = Object.keys(ROOTS).find((p) => path.startsWith(p));
    const file = prefix && normalize(join(ROOTS[prefix], path.slice(prefix.length)));
    if (!file || !file.startsWith(ROOTS[prefix]) || !existsSync(file)) {
      res.writeHead(404).end('not found');
      return;
    }
    res.writeHead(200, { 'Content-Type': TYPES[extname(file)] ?? 'application/octet-stream', 'Cache-Control': 'no-store' });
    res.end(await readFile(file));
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

/** The Chromium binary: $KEYCLAIM_CHROMIUM, or Debian's. */
export function chromiumPath() {
  for (const p of [process.env.KEYCLAIM_CHROMIUM, '/usr/lib/chromium/chromium', '/usr/bin/chromium']) {
    if (p && existsSync(p)) return p;
  }
  throw new Error('no Chromium: apt-get install chromium (make test-ts does)');
}

/**
 * Opens test/page.html (which imports "keyclaim" through an import map pointing at the package's
 * browser entry) in headless Chromium and passes the page to fn.
 */
export async function withPage(fn) {
  const server = await startServer();
  const browser = await chromium.launch({ executablePath: chromiumPath(), args: ['--no-sandbox', '--disable-gpu'] });
  try {
    const page = await browser.newPage();
    const logs = [];
    page.on('console', (m) => logs.push(m.text()));
    page.on('pageerror', (e) => logs.push(String(e)));
    await page.goto(`http://127.0.0.1:${server.address().port}/test/page.html`);
    await page.waitForFunction(() => window.keyclaimReady === true || window.keyclaimFailed, null, { timeout: 60_000 })
      .catch((e) => { throw new Error(`${e.message}\npage log:\n${logs.join('\n')}`); });
    return await fn(page, { version: browser.version(), logs });
  } finally {
    await browser.close();
    server.close();
  }
}
