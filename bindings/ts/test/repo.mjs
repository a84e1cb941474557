// Where the repository is (KEYCLAIM_REPO, set by scripts/test.sh) and its shared vectors.
import { readFileSync, readdirSync } from 'node:fs';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repo = process.env.KEYCLAIM_REPO ?? resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const vectorDir = join(repo, 'core', 'testdata', 'vectors');

/** {file name: text} of every vector file but pending_bugs.json. */
export function vectorFiles() {
  const out = {};
  for (const f of readdirSync(vectorDir).sort()) {
    if (f.endsWith('.json') && f !== 'pending_bugs.json') out[f] = readFileSync(join(vectorDir, f), 'utf8');
  }
  return out;
}
