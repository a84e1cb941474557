// Copies the module built by `make wasm` (../../dist/keyclaim.wasm, or $KEYCLAIM_WASM) into the
// package's dist/, where load() finds it. The module binary is never committed.
import { copyFileSync, mkdirSync, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const pkg = join(dirname(fileURLToPath(import.meta.url)), '..');
const src = process.env.KEYCLAIM_WASM || join(pkg, '..', '..', 'dist', 'keyclaim.wasm');
if (!existsSync(src)) {
  console.error(`copy-wasm: ${src} is missing: run \`make wasm\` at the top of the repository first`);
  process.exit(1);
}
mkdirSync(join(pkg, 'dist'), { recursive: true });
copyFileSync(src, join(pkg, 'dist', 'keyclaim.wasm'));
