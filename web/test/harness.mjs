// What the playground's end-to-end test and benchmark share: the repository's binaries started
// on loopback ports chosen by the OS, headless Chromium through playwright-core, and the native
// core (web/test/native) to compare the page's engine calls with.
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

export const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const varDir = join(root, "var");
const dist = join(root, "dist");

function need(path, how) {
  if (!existsSync(path)) throw new Error(`${path} is missing: ${how}`);
  return path;
}

/**
 * Starts a process and resolves with the first match of pattern in its standard output (the
 * address it serves on). The process is killed by stop().
 */
export function startProcess(cmd, args, pattern, { cwd = root, timeoutMs = 30000, stream = "stdout" } = {}) {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { cwd, stdio: ["ignore", "pipe", "pipe"] });
    children.add(p);
    p.on("exit", () => children.delete(p));
    let out = "", err = "";
    const timer = setTimeout(() => fail(new Error(`${cmd} did not start within ${timeoutMs} ms:\n${out}\n${err}`)), timeoutMs);
    const fail = (e) => {
      clearTimeout(timer);
      p.kill("SIGTERM");
      reject(e);
    };
    p[stream].on("data", (d) => {
      if (stream === "stdout") out += d;
      else err += d;
      const m = (stream === "stdout" ? out : err).match(pattern);
      if (m) {
        clearTimeout(timer);
        resolve({ match: m, stop: () => stopProcess(p), output: () => out + err });
      }
    });
    if (stream === "stdout") p.stderr.on("data", (d) => (err += d));
    else p.stdout.on("data", (d) => (out += d));
    p.on("exit", (code) => fail(new Error(`${cmd} exited (${code}) before it was ready:\n${out}\n${err}`)));
  });
}

// Whatever happens to the test process, the servers it started do not outlive it.
const children = new Set();
process.on("exit", () => {
  for (const p of children) p.kill("SIGTERM");
});

function stopProcess(p) {
  return new Promise((resolve) => {
    if (p.exitCode !== null) return resolve();
    p.once("exit", () => resolve());
    p.kill("SIGTERM");
  });
}

/** The playground's static server as `make playground` runs it, on a free port. */
export async function startPlayground() {
  const bin = need(join(dist, "keyclaim-playground"), "run `make test-web` (it builds it)");
  need(join(root, "web", "dist", "index.html"), "run `make web`");
  const p = await startProcess(bin, ["-dir", join(root, "web", "dist"), "-addr", "127.0.0.1:0"], /keyclaim playground: (http:\/\/\S+)/);
  return { url: p.match[1], stop: p.stop };
}

/**
 * dist/keyclaim-server on loopback (a free port unless listen is given) with a fresh SQLite
 * database (or dir's): --dev unless dev is false, and the flags in extra.
 */
export async function startKeysServer(extra = [], { dev = true, listen = "127.0.0.1:0", dir = mkdtempSync(join(tmpdir(), "keyclaim-web-")) } = {}) {
  const bin = need(join(dist, "keyclaim-server"), "run `make build`");
  const tokens = join(dir, "dev-tokens.json");
  if (!dev && !existsSync(tokens)) writeFileSync(tokens, JSON.stringify({ "tok-web-test": { user_id: "@alice:localhost", device_id: "ALICEDEV" } }));
  const args = [
    ...(dev ? ["--dev"] : []), "--listen", listen, "--db", `sqlite:${join(dir, "keyclaim.db")}`, "--tokens", tokens,
    "--signing-key", join(dir, "signing.key"), "--federation=false", "--log-level", dev ? "warn" : "info", "--log-format", "text", ...extra,
  ];
  // Without --dev there is no banner: the start-up log line names the address.
  const ready = dev ? /keyclaim development server: (http:\/\/\S+)/ : /keyclaim keys server starting.*addr=(\S+)/;
  const p = await startProcess(bin, args, ready, { stream: dev ? "stdout" : "stderr" });
  const url = dev ? p.match[1] + "/" : `http://${p.match[1]}/`;
  return { url, stop: p.stop, dir };
}

/** A free loopback port (for a server that must come back on the same address). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
    srv.on("error", reject);
  });
}

/** Headless Chromium (Debian's package; CHROMIUM overrides the path). */
export async function launchChromium() {
  const executablePath = process.env.CHROMIUM ?? "/usr/bin/chromium";
  need(executablePath, "run `make test-web`, which installs Debian's chromium");
  return chromium.launch({ executablePath, args: ["--no-sandbox", "--disable-dev-shm-usage"] });
}

/** Waits until the page's engine is loaded and its first scenario rendered. */
export async function waitReady(page) {
  await page.waitForFunction(() => window.__playground?.ready === true, null, { timeout: 30000 });
}

/** Runs engine calls through the native Go core; returns its envelopes. */
let nativeBin;
export function native(calls) {
  if (!nativeBin) {
    mkdirSync(varDir, { recursive: true });
    nativeBin = join(varDir, "web-native-invoke");
    execFileSync("go", ["build", "-o", nativeBin, "./web/test/native"], { cwd: root, stdio: "inherit" });
  }
  const out = execFileSync(nativeBin, { input: JSON.stringify(calls.map(({ op, input }) => ({ op, input }))), maxBuffer: 1 << 28 });
  return JSON.parse(out.toString("utf8"));
}

/** The result part of an envelope (ABI.md section 6), or undefined for an error envelope. */
export function resultOf(envelope) {
  const prefix = '{"result":';
  return envelope.startsWith(prefix) ? envelope.slice(prefix.length, -1) : undefined;
}
