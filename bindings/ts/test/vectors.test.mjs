// Every shared vector (core/testdata/vectors) through the installed package on Node.js (V8):
// invoke byte for byte, the typed methods (re-encoded canonically: the same bytes), bodies as
// bytes, trackers step by step (vectorcheck.mjs). KEYCLAIM_REPO is the repository's root.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import * as keyclaim from 'keyclaim';
import { runAll } from './vectorcheck.mjs';
import { vectorFiles } from './repo.mjs';

test('every shared vector, typed and raw, on Node.js', async () => {
  const files = vectorFiles();
  assert.ok(Object.keys(files).length >= 9, `only ${Object.keys(files).length} vector files`);
  const engine = await keyclaim.load();
  const { count, typed, failures } = runAll(keyclaim, engine, files);
  const ids = Object.keys(failures);
  assert.deepEqual(ids, [], ids.slice(0, 5).map((id) => `${id}:\n  ${failures[id].join('\n  ')}`).join('\n'));
  assert.ok(count >= 250, `only ${count} vectors`);
  assert.ok(typed >= count * 0.9, `only ${typed} of ${count} vectors through the typed API`);
  console.log(`# ${count} vectors, ${typed} of them through the typed API as well, ${count - typed} through invoke only`);
});
