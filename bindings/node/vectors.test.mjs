// The shared vectors (core/testdata/vectors) through the module on Node.js (V8): every answer must
// be byte for byte what the vector expects (README "Comparison rules"), as on native Go and on
// wazero. The module is dist/keyclaim.wasm (`make wasm`), or the file named by KEYCLAIM_WASM.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Keyclaim, OPERATIONS, canonical } from './keyclaim.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const wasmPath = process.env.KEYCLAIM_WASM || join(root, 'dist', 'keyclaim.wasm');
const vectorDir = join(root, 'core', 'testdata', 'vectors');
const MEMBERS = new Set(['id', 'description', 'source', 'op', 'input', 'expect', 'expect_error']);

const k = await Keyclaim.load(readFileSync(wasmPath));
const dec = new TextDecoder();

function wantResult(expect) {
  return '{"result":' + canonical(expect) + '}';
}

function checkError(out, code) {
  const v = JSON.parse(out);
  assert.deepEqual(Object.keys(v).sort(), ['errcode', 'error'], out);
  assert.equal(v.errcode, code, out);
  assert.ok(typeof v.error === 'string' && v.error.length > 0, out);
}

const files = readdirSync(vectorDir).filter((f) => f.endsWith('.json') && f !== 'pending_bugs.json').sort();
test('the corpus is there', () => assert.ok(files.length >= 9, `only ${files.length} vector files`));

let count = 0;
for (const file of files) {
  const doc = JSON.parse(readFileSync(join(vectorDir, file), 'utf8'));
  assert.equal(doc.schema, 1, `${file}: schema`);
  for (const v of doc.vectors) {
    count++;
    test(`${v.id} (${file})`, () => {
      for (const m of Object.keys(v)) assert.ok(MEMBERS.has(m), `unknown member ${m}`);
      assert.ok(OPERATIONS.includes(v.op), `unknown op ${v.op}`);
      assert.ok(('expect' in v) !== ('expect_error' in v), 'exactly one of expect and expect_error');
      const out = dec.decode(k.invoke(v.op, JSON.stringify(v.input)));
      if ('expect_error' in v) {
        checkError(out, v.expect_error);
      } else {
        assert.equal(out, wantResult(v.expect));
      }
      if (v.op !== 'tracker_run') return;
      // The same steps through a tracker handle (vectors README, "tracker_run vectors"): each
      // step's result is expect's item; for expect_error, the tracker cannot be created (and
      // there is no step), or the last step fails with it and the others succeed.
      let handle;
      try {
        handle = k.trackerNew(v.input.config === undefined ? '' : JSON.stringify(v.input.config));
      } catch (err) {
        assert.ok('expect_error' in v, `trackerNew: ${err}`);
        assert.equal(err.errcode, v.expect_error);
        assert.equal(v.input.steps.length, 0, 'the tracker was refused, yet there are steps');
        return;
      }
      try {
        const steps = v.input.steps;
        if ('expect_error' in v) assert.ok(steps.length > 0, `no step to fail with ${v.expect_error}`);
        steps.forEach((s, i) => {
          const stepOut = dec.decode(k.trackerStep(handle, s.op, JSON.stringify(s.input)));
          if ('expect' in v) {
            assert.equal(stepOut, wantResult(v.expect[i]), `step ${i}`);
          } else if (i === steps.length - 1) {
            checkError(stepOut, v.expect_error);
          } else {
            assert.ok(stepOut.startsWith('{"result":'), `step ${i} failed before the last: ${stepOut}`);
          }
        });
      } finally {
        assert.ok(k.trackerFree(handle));
      }
    });
  }
}
test('every vector ran', () => assert.ok(count >= 250, `only ${count} vectors`));
