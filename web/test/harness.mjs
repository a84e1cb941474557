// What the playground's end-to-end test and benchmark share: the repository's binaries started
// on loopback ports chosen by the OS, headless Chromium through playwright-core, and the native
// core (web/test/native) to compare the page's engine calls with.
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync } from "node:fs";
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
export function startProcess(cmd, args, pattern, { cwd = root, timeoutMs = 30000 } = {}) {
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
    p.stdout.on("data", (d) => {
      out += d;
      const m = out.match(pattern);
      if (m) {
        clearTimeout(timer);
        resolve({ match: m, stop: () => stopProcess(p), output: () => out + err });
      }
    });
    p.stderr.on("data", (d) => (err += d));
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

/** dist/keyclaim-server --dev on a free loopback port with a fresh SQLite database. */
export async function startKeysServer(extra = []) {
  const bin = need(join(dist, "keyclaim-server"), "run `make build`");
  const dir = mkdtempSync(join(tmpdir(), "keyclaim-web-"));
  const args = [
    "--dev", "--listen", "127.0.0.1:0", "--db", `sqlite:${join(dir, "keyclaim.db")}`, "--tokens", join(dir, "dev-tokens.json"),
    "--signing-key", join(dir, "signing.key"), "--federation=false", "--log-level", "warn", ...extra,
  ];
  const p = await startProcess(bin, args, /keyclaim development server: (http:\/\/\S+)/);
  return { url: p.match[1] + "/", stop: p.stop, dir };
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
