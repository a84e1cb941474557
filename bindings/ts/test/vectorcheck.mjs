// Runs shared vectors (core/testdata/vectors) through an engine of the keyclaim package and
// reports every difference. Used by the Node.js tests and, unchanged, inside Chromium, so it uses
// only what both have. Comparison rules: core/testdata/vectors/README.md.
//
// Each vector goes (1) through invoke, as its JSON text, byte for byte; (2) through the typed
// method of its operation with the input object, whose result, re-encoded canonically, must be
// the same bytes (or a KeyclaimError with the expected errcode); (3) through the typed method
// again with every body given as bytes (UTF-8 of body, decoded body_base64), which must change
// nothing; (4) for tracker_run, step by step through a Tracker, raw and typed. A vector whose
// input the typed API cannot carry as it is (a body that is not a string: the typed API would
// serialise it) goes through invoke only.

export const MEMBERS = new Set(['id', 'description', 'source', 'op', 'input', 'expect', 'expect_error']);
export const METHODS = {
  parse_claim: 'parseClaim',
  plan_fanout: 'planFanout',
  select_keys: 'selectKeys',
  complete_client: 'completeClient',
  complete_federation: 'completeFederation',
  classify_claim: 'classifyClaim',
  tracker_run: 'trackerRun',
  complete_upstream: 'completeUpstream',
};

const enc = new TextEncoder();
const dec = new TextDecoder();

function compareUtf8(a, b) {
  const x = enc.encode(a);
  const y = enc.encode(b);
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] - y[i];
  return x.length - y.length;
}

/**
 * Matrix canonical JSON: members sorted by code point (UTF-8 byte order, not UTF-16), no white
 * space, strings escaping only '"', '\' and U+0000-U+001F (JSON.stringify's rules), integers.
 */
export function canonical(v) {
  if (v === null || typeof v === 'boolean' || typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number') {
    if (!Number.isSafeInteger(v)) throw new Error(`not a canonical JSON number: ${v}`);
    return String(v);
  }
  if (Array.isArray(v)) return '[' + v.map(canonical).join(',') + ']';
  const keys = Object.keys(v).sort(compareUtf8);
  return '{' + keys.map((k) => JSON.stringify(k) + ':' + canonical(v[k])).join(',') + '}';
}

const isObj = (v) => typeof v === 'object' && v !== null && !Array.isArray(v);

// The places where an operation's input carries an HTTP body (ABI section 7).
function bodyHolders(op, input) {
  if (!isObj(input)) return [];
  switch (op) {
    case 'parse_claim':
    case 'classify_claim':
    case 'complete_upstream':
      return [input];
    case 'complete_client':
      return isObj(input.remote) ? Object.values(input.remote).filter(isObj) : [];
    case 'tracker_run':
      return Array.isArray(input.steps)
        ? input.steps.filter((s) => isObj(s) && s.op === 'observe' && isObj(s.input)).map((s) => s.input)
        : [];
    default:
      return [];
  }
}

/** Whether the typed API carries this input unchanged: every body a string. */
export function typedFits(op, input) {
  return isObj(input) && bodyHolders(op, input).every((h) => !('body' in h) || typeof h.body === 'string');
}

function base64Bytes(s) {
  try {
    const bin = atob(s);
    const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
    let again = '';
    for (const b of bytes) again += String.fromCharCode(b);
    return btoa(again) === s ? bytes : undefined;
  } catch {
    return undefined;
  }
}

// A deep copy of input with every body as bytes; undefined when a body cannot be (both members,
// or base64 that does not decode to itself).
function withByteBodies(op, input) {
  const copy = JSON.parse(JSON.stringify(input));
  let changed = false;
  for (const h of bodyHolders(op, copy)) {
    if ('body' in h && 'body_base64' in h) return undefined;
    if (typeof h.body === 'string') {
      h.body = enc.encode(h.body);
      changed = true;
    } else if (typeof h.body_base64 === 'string') {
      const b = base64Bytes(h.body_base64);
      if (b === undefined) return undefined;
      delete h.body_base64;
      h.body = b;
      changed = true;
    }
  }
  return changed ? copy : undefined;
}

const wantResult = (expect) => '{"result":' + canonical(expect) + '}';

function errorProblem(out, code) {
  let v;
  try {
    v = JSON.parse(out);
  } catch {
    return `not JSON: ${out}`;
  }
  const keys = Object.keys(v).sort().join(',');
  if (keys !== 'errcode,error') return `want an error envelope with ${code}, got ${out}`;
  if (v.errcode !== code) return `errcode ${v.errcode}, want ${code}: ${out}`;
  if (typeof v.error !== 'string' || v.error.length === 0) return `empty error message: ${out}`;
  return undefined;
}

// The answer of a typed call as envelope text, for the same comparison as invoke's.
function typedEnvelope(KeyclaimError, f) {
  try {
    return wantResult(f());
  } catch (e) {
    if (e instanceof KeyclaimError) return JSON.stringify({ errcode: e.errcode, error: e.message });
    throw e;
  }
}

/**
 * Checks one vector; returns { problems: string[], typed: boolean }. keyclaim is the package's
 * module namespace (for KeyclaimError), engine a loaded engine.
 */
export function checkVector(keyclaim, engine, v) {
  const problems = [];
  const check = (what, out) => {
    const p = 'expect_error' in v ? errorProblem(out, v.expect_error)
      : out === wantResult(v.expect) ? undefined : `got  ${out}\nwant ${wantResult(v.expect)}`;
    if (p) problems.push(`${what}: ${p}`);
  };
  for (const m of Object.keys(v)) if (!MEMBERS.has(m)) problems.push(`unknown member ${m}`);
  if (!(v.op in METHODS)) problems.push(`unknown op ${v.op}`);
  if (('expect' in v) === ('expect_error' in v)) problems.push('not exactly one of expect and expect_error');
  if (problems.length) return { problems, typed: false };

  check('invoke', dec.decode(engine.invoke(v.op, JSON.stringify(v.input))));
  const typed = typedFits(v.op, v.input);
  const method = METHODS[v.op];
  if (typed) {
    check(`${method}`, typedEnvelope(keyclaim.KeyclaimError, () => engine[method](v.input)));
    const bytesInput = withByteBodies(v.op, v.input);
    if (bytesInput) {
      check(`${method} (bodies as bytes)`, typedEnvelope(keyclaim.KeyclaimError, () => engine[method](bytesInput)));
    }
  }
  if (v.op === 'tracker_run') trackerSteps(keyclaim, engine, v, problems, typed);
  return { problems, typed };
}

// A tracker_run vector step by step through a Tracker (vectors README, "tracker_run vectors"):
// step i's result is expect[i]; for expect_error, either the tracker is refused (no steps) or the
// last step fails with it and the earlier ones succeed.
function trackerSteps(keyclaim, engine, v, problems, typed) {
  const input = v.input;
  if (!isObj(input) || !Array.isArray(input.steps)) return;
  let tracker;
  try {
    tracker = engine.tracker(input.config === undefined ? undefined : JSON.stringify(input.config));
  } catch (e) {
    if (!(e instanceof keyclaim.KeyclaimError)) throw e;
    if (!('expect_error' in v)) problems.push(`tracker(): ${e.errcode} ${e.message}`);
    else if (e.errcode !== v.expect_error) problems.push(`tracker(): ${e.errcode}, want ${v.expect_error}`);
    else if (input.steps.length !== 0) problems.push('the tracker was refused, yet there are steps');
    return;
  }
  try {
    if ('expect_error' in v && input.steps.length === 0) problems.push(`no step to fail with ${v.expect_error}`);
    input.steps.forEach((s, i) => {
      if (!isObj(s) || (s.op !== 'plan' && s.op !== 'observe')) return; // the whole run covers it
      const last = i === input.steps.length - 1;
      const judge = (what, out) => {
        if ('expect' in v) {
          if (out !== wantResult(v.expect[i])) problems.push(`${what} step ${i}: got ${out}, want ${wantResult(v.expect[i])}`);
        } else if (last) {
          const p = errorProblem(out, v.expect_error);
          if (p) problems.push(`${what} step ${i}: ${p}`);
        } else if (!out.startsWith('{"result":')) {
          problems.push(`${what} step ${i} failed before the last: ${out}`);
        }
      };
      judge('tracker.invoke', dec.decode(tracker.invoke(s.op, JSON.stringify(s.input))));
    });
  } finally {
    if (!tracker.free()) problems.push('tracker.free() returned false');
  }
  if (!typed) return;
  // The typed Tracker methods on a second tracker, given the same steps.
  let twin;
  try {
    twin = engine.tracker(input.config);
  } catch (e) {
    if (!(e instanceof keyclaim.KeyclaimError)) throw e;
    return; // refused as above
  }
  try {
    input.steps.forEach((s, i) => {
      if (!isObj(s) || (s.op !== 'plan' && s.op !== 'observe') || !isObj(s.input)) return;
      const out = typedEnvelope(keyclaim.KeyclaimError, () => s.op === 'plan' ? twin.plan(s.input) : twin.observe(s.input));
      if ('expect' in v) {
        if (out !== wantResult(v.expect[i])) problems.push(`tracker.${s.op} step ${i}: got ${out}, want ${wantResult(v.expect[i])}`);
      } else if (i === input.steps.length - 1) {
        const p = errorProblem(out, v.expect_error);
        if (p) problems.push(`tracker.${s.op} step ${i}: ${p}`);
      }
    });
  } finally {
    twin.free();
  }
}

/** Parses a vector file's text; throws on a file that breaks the schema. */
export function parseVectorFile(name, text) {
  const doc = JSON.parse(text);
  const keys = Object.keys(doc).sort().join(',');
  if (keys !== 'description,schema,vectors') throw new Error(`${name}: members ${keys}`);
  if (doc.schema !== 1) throw new Error(`${name}: schema ${doc.schema}`);
  if (!Array.isArray(doc.vectors) || doc.vectors.length === 0) throw new Error(`${name}: no vectors`);
  return doc.vectors;
}

/** Runs every vector of files ({name: text}); returns counts and the problems by vector id. */
export function runAll(keyclaim, engine, files) {
  const ids = new Set();
  const failures = {};
  let count = 0;
  let typed = 0;
  for (const [name, text] of Object.entries(files)) {
    for (const v of parseVectorFile(name, text)) {
      count++;
      if (ids.has(v.id)) (failures[v.id] ??= []).push('duplicate id');
      ids.add(v.id);
      const r = checkVector(keyclaim, engine, v);
      if (r.typed) typed++;
      if (r.problems.length) (failures[v.id] ??= []).push(...r.problems);
    }
  }
  return { count, typed, failures };
}
