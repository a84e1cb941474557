// complete_client through the module on Node.js (V8), on the inputs of bindings/go's benchmarks
// (BenchmarkOps / BenchmarkInterleaved: every device remote, answered by its server with a signed
// key per device, ten devices per user). `make bench` runs it after the Go benchmarks; compare
// with BenchmarkInterleaved's native column for the ratio. Usage: node bench.mjs [calls per size]
import { readFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Keyclaim } from './keyclaim.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const k = await Keyclaim.load(readFileSync(process.env.KEYCLAIM_WASM || join(root, 'dist', 'keyclaim.wasm')));
const calls = +process.argv[2] || 200;

const keyB64 = 'zKbLg+NrIjpnagy+pIY6uPL4ZwEG2v+8F9lmgsnlZzs';
const sigB64 = 'FLWxXqGbwrb8SM3Y795eB6OA8bwBcoMZFXBqnTn58AYWZSqiD45tlBVcDa2L7RwdKXebW/VzDlnfVJ+9jok1Bw';
const pad = (n, w) => String(n).padStart(w, '0');
const device = (server, d) => [`@user${pad(Math.floor(d / 10), 5)}:${server}`, `DEVICE${pad(d % 10, 2)}`];

function completeClientInput(n) {
  const request = { one_time_keys: {} }, answer = { failures: {}, one_time_keys: {} };
  for (let d = 0; d < n; d++) {
    const [user, dev] = device('remote.example', d);
    (request.one_time_keys[user] ??= {})[dev] = 'signed_curve25519';
    (answer.one_time_keys[user] ??= {})[dev] = {
      [`signed_curve25519:AAAA${pad(d, 4)}`]: { key: keyB64, signatures: { [user]: { [`ed25519:${dev}`]: sigB64 } } },
    };
  }
  request.timeout = 10000;
  return JSON.stringify({ server_name: 'example.org', request,
    remote: { 'remote.example': { status: 200, body: JSON.stringify(answer) } } });
}

console.log(`node ${process.version}, ${calls} calls per size after 50 to warm up`);
for (const n of [1, 100, 1000]) {
  const input = new TextEncoder().encode(completeClientInput(n));
  const out = new TextDecoder().decode(k.invoke('complete_client', input));
  if (!out.startsWith('{"result":')) throw new Error(out.slice(0, 200));
  for (let i = 0; i < 50; i++) k.invoke('complete_client', input);
  const times = [];
  for (let i = 0; i < calls; i++) {
    const t0 = performance.now();
    k.invoke('complete_client', input);
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  const med = times[times.length >> 1] * 1000;
  console.log(`complete_client devices=${n}: median ${med.toFixed(0)} µs/op (min ${(times[0] * 1000).toFixed(0)})`);
}
