// The engine's contract beyond the vectors: loading other modules, refusing another ABI version,
// memory cap and trap recovery, recycling, trackers across both, bodies, errors, frees, and many
// concurrent promises on one engine. Runs against the installed package, imported by name.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import * as keyclaim from 'keyclaim';
import { load, capMemory, capMemoryStream, KeyclaimError, KeyclaimTrap, TrackerLostError, Tracker, unwrap } from 'keyclaim';

const dec = new TextDecoder();
const wasmPath = createRequire(import.meta.url).resolve('keyclaim/keyclaim.wasm');
const small = '{"body":"{\\"one_time_keys\\":{}}"}';
const smallAnswer = '{"result":{"one_time_keys":{},"timeout":10000}}';

// A claim body of n devices, ten per user (as bindings/go's bigClaimBody).
function bigClaimBody(n, server) {
  const users = {};
  for (let d = 0; d < n; d++) {
    ((users[`@user${String(Math.floor(d / 10)).padStart(6, '0')}:${server}`] ??= {}))[`DEVICE${String(d % 10).padStart(2, '0')}`] = 'signed_curve25519';
  }
  return JSON.stringify({ one_time_keys: users, timeout: 10000 });
}
const bigParse = (n) => ({ limits: { max_body_bytes: 67108864, max_pairs: 10000000 }, body: bigClaimBody(n, 'example.org') });

// A hand-assembled module: memory, _initialize and keyclaim_abi_version answering `version`.
function fakeModule(version) {
  const str = (s) => [s.length, ...new TextEncoder().encode(s)];
  const section = (id, content) => [id, content.length, ...content];
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, [2, 0x60, 0, 0, 0x60, 0, 1, 0x7f]), // types: () -> (), () -> i32
    ...section(3, [2, 0, 1]), // functions
    ...section(5, [1, 0, 1]), // memory: 1 page, no maximum
    ...section(7, [3, ...str('memory'), 2, 0, ...str('_initialize'), 0, 0, ...str('keyclaim_abi_version'), 0, 1]),
    ...section(10, [2, 2, 0, 0x0b, 4, 0, 0x41, version, 0x0b]), // bodies: nop; i32.const version
  ]);
}

test('load() takes the module as a path, a file URL, bytes, an ArrayBuffer or compiled', async () => {
  const bytes = readFileSync(wasmPath);
  const ab = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
  for (const module of [wasmPath, pathToFileURL(wasmPath), pathToFileURL(wasmPath).href, new Uint8Array(bytes), ab,
    await WebAssembly.compile(bytes)]) {
    const e = await load({ module });
    assert.equal(dec.decode(e.invoke('parse_claim', small)), smallAnswer);
  }
  await assert.rejects(load({ module: '/nonexistent/keyclaim.wasm' }), /ENOENT/);
});

test('a module of another ABI version is refused, naming both versions', async () => {
  await assert.rejects(load({ module: fakeModule(2) }), /ABI version 2; this package implements version 1/);
  await assert.rejects(load({ module: fakeModule(2), maxMemoryMiB: 0 }), /ABI version 2/);
  await assert.rejects(load({ module: new Uint8Array([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0]) }), /not a keyclaim module/);
});

test('capMemory writes a maximum into the module: memory cannot grow past it', async () => {
  const fake = fakeModule(1);
  const capped = capMemory(fake, 3 * 65536);
  assert.ok(capped.length > fake.length);
  const { exports } = (await WebAssembly.instantiate(capped)).instance;
  assert.equal(exports.memory.grow(2), 1);
  assert.throws(() => exports.memory.grow(1), RangeError);
  // Uncapped, the same module grows.
  assert.equal((await WebAssembly.instantiate(fake)).instance.exports.memory.grow(10), 1);
  // keyclaim.wasm itself: the cap lands in its memory section (42 pages at the start).
  const real = readFileSync(wasmPath);
  const { instance } = await WebAssembly.instantiate(capMemory(real, 50 * 65536), {
    wasi_snapshot_preview1: new Proxy({}, { get: () => () => 52 }),
  });
  const mem = instance.exports.memory;
  assert.throws(() => mem.grow(50 - mem.buffer.byteLength / 65536 + 1), RangeError);
  assert.equal(capMemory(real, 0).length, real.length + 1, 'a cap below the initial size keeps the initial size');
});

test('capMemoryStream gives the bytes of capMemory however the module is cut into chunks; random bytes never hang it', async () => {
  const real = new Uint8Array(readFileSync(wasmPath));
  let seed = 42;
  const rand = (n) => { seed ^= seed << 13; seed ^= seed >>> 17; seed ^= seed << 5; return (seed >>> 0) % n; }; // xorshift32
  for (const [bytes, cap] of [[real, 24 << 20], [real, 0], [fakeModule(1), 65536], [real.subarray(0, 100), 1 << 20]]) {
    const want = capMemory(bytes, cap);
    for (let round = 0; round < 8; round++) {
      const chunks = [];
      for (let i = 0; i < bytes.length;) {
        const n = 1 + rand(round < 2 ? 4096 : 100000);
        chunks.push(bytes.slice(i, i + n));
        i += n;
      }
      const got = new Uint8Array(await new Response(new Blob(chunks).stream().pipeThrough(capMemoryStream(cap))).arrayBuffer());
      assert.deepEqual(got, want, `cap ${cap}, round ${round}`);
    }
  }
  for (let i = 0; i < 2000; i++) {
    const junk = new Uint8Array(rand(64));
    for (let j = 0; j < junk.length; j++) junk[j] = rand(256);
    if (i % 2) junk.set([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0].slice(0, junk.length));
    try {
      capMemory(junk, 65536);
    } catch (e) {
      assert.match(String(e), /keyclaim: /);
    }
  }
});

test('a call past the memory cap traps; the instance is discarded and the next call succeeds', async () => {
  let printed = '';
  const e = await load({ maxMemoryMiB: 24, stderr: (t) => { printed += t; } });
  assert.throws(() => e.parseClaim(bigParse(200_000)), (err) => {
    assert.ok(err instanceof KeyclaimTrap, String(err));
    assert.ok(!(err instanceof KeyclaimError));
    assert.match(err.message, /discarded/);
    return true;
  });
  assert.match(printed, /out of memory/);
  let st = e.stats();
  assert.equal(st.trapped, 1);
  assert.equal(st.instances, 0);
  assert.equal(dec.decode(e.invoke('parse_claim', small)), smallAnswer);
  st = e.stats();
  assert.equal(st.created, 2);
  assert.equal(st.instances, 1);
  assert.ok(st.memoryBytes <= 24 * 1024 * 1024);
  // The same call fits under the default cap of 256 MiB.
  const roomy = await load();
  assert.equal(Object.keys(roomy.parseClaim(bigParse(200_000)).one_time_keys).length, 20_000);
});

test('a trap loses the trackers of that instance, not the engine', async () => {
  const e = await load({ maxMemoryMiB: 24, stderr: () => {} });
  const t = e.tracker({ server_name: 'example.org' });
  const big = JSON.parse(bigClaimBody(200_000, 'example.org'));
  assert.throws(() => t.plan(0, big), TrackerLostError);
  assert.throws(() => t.plan(0, { one_time_keys: {} }), TrackerLostError);
  assert.equal(t.free(), false);
  assert.deepEqual(e.parseClaim({ body: '{"one_time_keys":{}}' }), { one_time_keys: {}, timeout: 10000 });
  const t2 = e.tracker();
  assert.deepEqual(t2.plan(0, { one_time_keys: {} }), { deferred: {}, one_time_keys: {} });
  assert.equal(t2.free(), true);
});

test('an instance grown past the bound is replaced; its trackers keep it until freed', async () => {
  const e = await load({ recycleMemoryMiB: 8 });
  const req = { one_time_keys: { '@carol:down.example': { CAROLDEV: 'signed_curve25519' } } };
  const t = e.tracker({ server_name: 'example.org' });
  t.observe(1000, req, { one_time_keys: {}, failures: { 'down.example': { status: 504, message: 'timed out' } } });
  const parsed = e.parseClaim(bigParse(40_000));
  assert.equal(Object.keys(parsed.one_time_keys).length, 4_000);
  let st = e.stats();
  assert.equal(st.recycled, 1);
  assert.equal(st.instances, 1, 'the old instance is kept for its tracker');
  assert.equal(dec.decode(e.invoke('parse_claim', small)), smallAnswer);
  st = e.stats();
  assert.equal(st.created, 2);
  assert.equal(st.instances, 2);
  // The tracker still remembers what it observed before the recycle.
  assert.deepEqual(t.plan(2000, req), { deferred: { '@carol:down.example': { CAROLDEV: 16000 } }, one_time_keys: {} });
  assert.equal(t.free(), true);
  assert.equal(e.stats().instances, 1);
});

test('a tracker dropped without free() is freed when it is garbage-collected', async () => {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc');
  const e = await load({ recycleMemoryMiB: 8 });
  (() => { e.tracker(); })();
  e.parseClaim(bigParse(40_000)); // recycles the instance, which the tracker keeps alive
  assert.equal(e.stats().instances, 1);
  for (let i = 0; i < 50 && e.stats().instances > 0; i++) {
    gc();
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.equal(e.stats().instances, 0, 'the unreferenced tracker still holds its instance');
});

test('bodies as text, UTF-8 bytes, an ArrayBuffer, an object, or invalid bytes', async () => {
  const e = await load();
  const text = '{"one_time_keys":{"@alice:example.org":{"ALICEDEV":"signed_curve25519"}}}';
  const want = { one_time_keys: { '@alice:example.org': { ALICEDEV: 'signed_curve25519' } }, timeout: 10000 };
  const bytes = new TextEncoder().encode(text);
  for (const body of [text, bytes, bytes.buffer, JSON.parse(text)]) assert.deepEqual(e.parseClaim({ body }), want);
  assert.deepEqual(e.parseClaim({ body_base64: btoa(text) }), want);
  // Bytes that are not UTF-8 reach the module exactly (as body_base64), not replaced by U+FFFD.
  const bad = new Uint8Array([...bytes.slice(0, 20), 0xff, ...bytes.slice(20)]);
  assert.throws(() => e.parseClaim({ body: bad }), (err) => err instanceof KeyclaimError && err.errcode === 'M_NOT_JSON');
  const request = { one_time_keys: { '@bob:remote.example': { BOBDEV: 'signed_curve25519' } } };
  const r = e.completeClient({ server_name: 'example.org', request, remote: { 'remote.example': { status: 200, body: new Uint8Array([0xff]) } } });
  assert.equal(r.failures['remote.example'].status, 502);
  // A tracker observe with bytes and with an object body.
  const answer = { one_time_keys: { '@bob:remote.example': { BOBDEV: { 'signed_curve25519:A': 'k' } } } };
  for (const body of [answer, new TextEncoder().encode(JSON.stringify(answer))]) {
    const t = e.tracker();
    assert.deepEqual(t.observe(0, request, body).outcomes, { '@bob:remote.example': { BOBDEV: { key: 'k', key_id: 'signed_curve25519:A', outcome: 'claimed' } } });
    t[Symbol.dispose]();
    assert.equal(t.handle, 0);
  }
});

test('errors: KeyclaimError carries the errcode; invoke returns the envelope unchanged', async () => {
  const e = await load();
  const env = e.invoke('plan_fanout', '{"server_name":"example.org"}');
  assert.ok(env instanceof Uint8Array);
  const v = JSON.parse(dec.decode(env));
  assert.equal(v.errcode, 'M_BAD_JSON');
  assert.throws(() => e.planFanout('{"server_name":"example.org"}'), (err) => {
    assert.ok(err instanceof KeyclaimError);
    assert.equal(err.errcode, 'M_BAD_JSON');
    assert.equal(err.message, v.error);
    return true;
  });
  assert.throws(() => unwrap(env), KeyclaimError);
  assert.throws(() => e.tracker({ max_entries: -1 }), (err) => err.errcode === 'M_INVALID_PARAM');
  assert.throws(() => e.invoke('no_such_op', '{}'), (err) => err instanceof KeyclaimError && err.errcode === 'M_UNKNOWN');
  assert.throws(() => e.invoke('tracker_new', '{}'), (err) => err.errcode === 'M_UNKNOWN');
  assert.throws(() => e.invoke('alloc', '{}'), (err) => err.errcode === 'M_UNKNOWN');
  assert.throws(() => e.invoke('memory', '{}'), (err) => err.errcode === 'M_UNKNOWN');
  // Bytes in, the same bytes out as from a string.
  assert.deepEqual(e.invoke('parse_claim', new TextEncoder().encode(small)), e.invoke('parse_claim', small));
  // A tracker after free() refuses to run; its handle is 0.
  const t = e.tracker();
  assert.ok(t instanceof Tracker && t.handle >= 1);
  t.free();
  assert.equal(t.handle, 0);
  assert.throws(() => t.plan(0, { one_time_keys: {} }), /after free/);
  assert.equal(keyclaim.ABI_VERSION, 1);
  assert.equal(keyclaim.OPERATIONS.length, 8);
});

test('what the engine allocates in the module is freed: memory stays flat over many calls', async () => {
  const e = await load();
  const users = {};
  for (let i = 0; i < 100; i++) users[`@u${i}:example.org`] = { DEV: 'signed_curve25519' };
  const input = JSON.stringify({ server_name: 'example.org', request: { one_time_keys: users } }); // ~4 KB in, ~3 KB out
  const big = `{"body":${JSON.stringify(bigClaimBody(1000, 'example.org'))}}`; // ~50 KB: not the kept buffer
  for (let i = 0; i < 300; i++) { e.invoke('complete_federation', input); e.invoke('parse_claim', big); }
  const before = e.stats().memoryBytes;
  for (let i = 0; i < 3000; i++) { e.invoke('complete_federation', input); e.invoke('parse_claim', big); }
  const after = e.stats().memoryBytes;
  // A leak of the buffers would be 3000 × 100+ KB = 300+ MB (and past the recycle bound).
  assert.ok(after <= before + 4 * 1024 * 1024, `memory ${before} -> ${after}`);
  assert.equal(e.stats().created, 1);
});

test('many concurrent promises on one engine: every answer right, trackers independent', async () => {
  const e = await load();
  const ref = await load(); // answers computed one by one on another engine
  const tick = () => new Promise((r) => setImmediate(r));
  const task = async (i) => {
    const server = `s${i}.example`;
    const request = { one_time_keys: { [`@u${i}:${server}`]: { [`D${i}`]: 'signed_curve25519' }, [`@me${i}:example.org`]: { M: 'signed_curve25519' } } };
    const body = { one_time_keys: { [`@me${i}:example.org`]: { M: {} } }, failures: { [server]: { status: 504, message: `timed out ${i}` } } };
    const t = e.tracker({ server_name: 'example.org' });
    await tick();
    assert.deepEqual(t.plan(0, request).one_time_keys, request.one_time_keys);
    await tick();
    const obs = t.observe(1000 + i, request, body);
    assert.equal(obs.tracked, 2);
    await new Promise((r) => setTimeout(r, i % 7));
    const input = { server_name: 'example.org', request, remote: { [server]: { status: 200, body: { one_time_keys: { [`@u${i}:${server}`]: { [`D${i}`]: { [`signed_curve25519:K${i}`]: `key${i}` } } } } } } };
    const got = e.completeClient(input);
    assert.deepEqual(got, ref.completeClient(input));
    assert.equal(got.one_time_keys[`@u${i}:${server}`][`D${i}`][`signed_curve25519:K${i}`], `key${i}`);
    await tick();
    const plan = t.plan(2000 + i, request);
    assert.deepEqual(plan, { deferred: { [`@me${i}:example.org`]: { M: 16000 + i }, [`@u${i}:${server}`]: { [`D${i}`]: 16000 + i } }, one_time_keys: {} });
    assert.equal(dec.decode(e.invoke('classify_claim', JSON.stringify({ request, body: JSON.stringify(body) }))),
      dec.decode(ref.invoke('classify_claim', JSON.stringify({ request, body: JSON.stringify(body) }))));
    assert.equal(t.free(), true);
    return i;
  };
  const n = 300;
  const done = await Promise.all(Array.from({ length: n }, (_, i) => task(i)));
  assert.equal(done.length, n);
  assert.equal(e.stats().created, 1);
  assert.equal(e.stats().trapped, 0);
});
