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
 * Returns medians in µs.
 */
export function benchCompleteClient(engine, n, calls) {
  const input = completeClientInput(n);
  const text = JSON.stringify(input);
  const typedOut = engine.completeClient(input);
  if (Object.keys(typedOut.one_time_keys).length !== Math.ceil(n / 10)) throw new Error('unexpected answer');
  const warm = Math.min(50, calls);
  for (let i = 0; i < warm; i++) { engine.completeClient(input); engine.invoke('complete_client', text); }
  const typed = [];
  const raw = [];
  for (let i = 0; i < calls; i++) {
    let t0 = performance.now();
    engine.completeClient(input);
    typed.push(performance.now() - t0);
    t0 = performance.now();
    engine.invoke('complete_client', text);
    raw.push(performance.now() - t0);
  }
  const t = median(typed) * 1000;
  const r = median(raw) * 1000;
  return { devices: n, calls, typedUs: t, rawUs: r, ratio: t / r };
}
