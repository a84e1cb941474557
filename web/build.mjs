// Builds the playground into web/dist: the page, its bundled script (esbuild; the `keyclaim`
// package's browser build, bindings/ts, is bundled in), its styles, the engine's WebAssembly
// module (the package's keyclaim.wasm, which the package's browser build fetches from beside the
// script) and the service worker that keeps them all for offline use.
import { build } from "esbuild";
import { createHash } from "node:crypto";
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "dist");
let wasm;
try {
  wasm = createRequire(import.meta.url).resolve("keyclaim/keyclaim.wasm");
} catch {}
if (!wasm || !existsSync(wasm)) {
  console.error("build.mjs: the keyclaim package has no keyclaim.wasm: run `make web` (it builds bindings/ts after `make wasm`)");
  process.exit(1);
}

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
await build({
  entryPoints: [join(here, "src", "main.ts")],
  outfile: join(out, "app.js"),
  bundle: true,
  format: "esm",
  target: "es2022",
  platform: "browser",
  conditions: ["browser"],
  minify: true,
  legalComments: "none",
  logLevel: "warning",
});
copyFileSync(join(here, "index.html"), join(out, "index.html"));
copyFileSync(join(here, "style.css"), join(out, "style.css"));
copyFileSync(wasm, join(out, "keyclaim.wasm"));

// The service worker: the files to keep and a version that changes with any of them.
const files = ["index.html", "app.js", "style.css", "keyclaim.wasm"];
const hash = createHash("sha256");
for (const f of files) hash.update(f).update(readFileSync(join(out, f)));
hash.update(readFileSync(join(here, "sw.js")));
const version = hash.digest("hex").slice(0, 16);
const sw = readFileSync(join(here, "sw.js"), "utf8").replace("__VERSION__", version).replace("__FILES__", JSON.stringify(files));
writeFileSync(join(out, "sw.js"), sw);
console.log(`built web/dist (version ${version}): ${[...files, "sw.js"].join(", ")}`);
