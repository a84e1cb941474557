// complete_client of n devices through the typed API and through invoke on the same engine, on
// the inputs of bindings/go's benchmarks (every device remote, answered by its server with a
// signed key, ten devices per user). Plain JavaScript: runs on Node.js and in the browser.

const keyB64 = 'zKbLg+NrIjpnagy+pIY6uPL4ZwEG2v+8F9lmgsnlZzs';
const sigB64 = 'FLWxXqGbwrb8SM3Y795eB6OA8bwBcoMZFXBqnTn58AYWZSqiD45tlBVcDa2L7RwdKXebW/VzDlnfVJ+9jok1Bw';
const pad = (n, w) => String(n).padStart(w, '0');

/** The typed input of complete_client for n remote devices (the remote body as text). */
export function completeClientInput(n) {
  const request = { one_time_keys: {} };
  const answer = { failures: {}, one_time_keys: {} };
  for (let d = 0; d < n; d++) {
    const user = `@user${pad(Math.floor(d / 10), 5)}:remote.example`;
    const dev = `DEVICE${pad(d % 10, 2)}`;
    (request.one_time_keys[user] ??= {})[dev] = 'signed_curve25519';
    (answer.one_time_keys[user] ??= {})[dev] = {
      [`signed_curve25519:AAAA${pad(d, 4)}`]: { key: keyB64, signatures: { [user]: { [`ed25519:${dev}`]: sigB64 } } },
    };
  }
  request.timeout = 10000;
  return { server_name: 'example.org', request, remote: { 'remote.example': { status: 200, body: JSON.stringify(answer) } } };
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1];
};

/**
 * Times, interleaved, engine.completeClient(object) (typed: serialise, call, parse the result)
 * and engine.invoke('complete_client', text) (raw: the JSON text in, the envelope bytes out).
 * Calls are timed in batches of at least ~5 ms (a browser's performance.now() is coarse).
 * Returns the median wall time per call in µs over about `calls` calls of each, and, when
 * cpuMs (the process's CPU time in ms) is given, the mean CPU time per call too.
 */
export function benchCompleteClient(engine, n, calls, cpuMs) {
  const input = completeClientInput(n);
  const text = JSON.stringify(input);
  const typedOut = engine.completeClient(input);
  if (Object.keys(typedOut.one_time_keys).length !== Math.ceil(n / 10)) throw new Error('unexpected answer');
  const typedCall = () => engine.completeClient(input);
  const rawCall = () => engine.invoke('complete_client', text);
  const cpu = { typed: 0, raw: 0 };
  const batchTime = (f, batch, which) => {
    const c0 = cpuMs?.();
    const t0 = performance.now();
    for (let i = 0; i < batch; i++) f();
    const t = (performance.now() - t0) / batch;
    if (which && cpuMs) cpu[which] += cpuMs() - c0;
    return t;
  };
  const warm = Math.min(50, calls);
  for (let i = 0; i < warm; i++) { typedCall(); rawCall(); }
  const batch = Math.max(1, Math.ceil(5 / Math.max(batchTime(rawCall, 20), 1e-3)));
  const samples = Math.max(5, Math.ceil(calls / batch));
  const typed = [];
  const raw = [];
  for (let i = 0; i < samples; i++) {
    typed.push(batchTime(typedCall, batch, 'typed'));
    raw.push(batchTime(rawCall, batch, 'raw'));
  }
  const t = median(typed) * 1000;
  const r = median(raw) * 1000;
  const total = samples * batch;
  const out = { devices: n, calls: total, batch, typedUs: t, rawUs: r, ratio: t / r };
  if (cpuMs) Object.assign(out, { typedCpuUs: (cpu.typed / total) * 1000, rawCpuUs: (cpu.raw / total) * 1000 });
  return out;
}
