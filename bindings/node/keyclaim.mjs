// A minimal Node.js host of keyclaim's WebAssembly module, written from bindings/ABI.md alone:
// node:wasi for the WASI preview 1 imports (real clocks and randomness), one instance, the call
// sequence of ABI.md section 5, trackers as handles (section 9). No dependencies.
import { WASI } from 'node:wasi';

export const ABI_VERSION = 1;
export const OPERATIONS = ['parse_claim', 'plan_fanout', 'select_keys', 'complete_client',
  'complete_federation', 'classify_claim', 'tracker_run', 'complete_upstream'];

/** An error envelope answered by the module: {"errcode","error"}. */
export class KeyclaimError extends Error {
  constructor(errcode, message) {
    super(`${errcode}: ${message}`);
    this.errcode = errcode;
  }
}

/**
 * One instance of the module. Not safe for re-entrant use: one call at a time (ABI section 11),
 * which is what a single JavaScript thread gives anyway.
 */
export class Keyclaim {
  /** Compiles and instantiates the module (bytes of dist/keyclaim.wasm). */
  static async load(wasmBytes) {
    const wasi = new WASI({ version: 'preview1', args: [], env: {}, returnOnExit: true });
    const module = await WebAssembly.compile(wasmBytes);
    const instance = await WebAssembly.instantiate(module, { wasi_snapshot_preview1: wasi.wasiImport });
    wasi.initialize(instance); // calls _initialize, once (ABI section 3)
    const k = new Keyclaim(instance.exports);
    const v = k.exports.keyclaim_abi_version();
    if (v !== ABI_VERSION) throw new Error(`module ABI version ${v}, this host implements ${ABI_VERSION}`);
    return k;
  }

  constructor(exports) {
    this.exports = exports;
  }

  /** Runs an operation on input (a string or bytes of UTF-8 JSON); returns the envelope's bytes. */
  invoke(op, input) {
    if (!OPERATIONS.includes(op)) throw new Error(`unknown operation ${op}`);
    return this.#call((p, n) => this.exports[`keyclaim_${op}`](p, n), input);
  }

  /** Like invoke, but returns the parsed result, or throws KeyclaimError for an error envelope. */
  call(op, input) {
    return unwrap(this.invoke(op, input));
  }

  /** Creates a retry tracker from its configuration; returns its handle. */
  trackerNew(config = '') {
    return unwrap(this.#call((p, n) => this.exports.keyclaim_tracker_new(p, n), config)).handle;
  }

  /** Runs the tracker step "plan" or "observe"; returns the envelope's bytes. */
  trackerStep(handle, step, input) {
    const f = { plan: this.exports.keyclaim_tracker_plan, observe: this.exports.keyclaim_tracker_observe }[step];
    if (!f) throw new Error(`unknown tracker step ${step}`);
    return this.#call((p, n) => f(handle, p, n), input);
  }

  /** Forgets a tracker; false if the handle was not live. */
  trackerFree(handle) {
    return this.exports.keyclaim_tracker_free(handle) === 0;
  }

  // ABI section 5: alloc, write, call, split the result as unsigned, copy through a fresh view of
  // memory (the call may have grown it), free both buffers.
  #call(fn, input) {
    const bytes = typeof input === 'string' ? new TextEncoder().encode(input) : input;
    const e = this.exports;
    let ptr = 0;
    if (bytes.length > 0) {
      ptr = e.keyclaim_alloc(bytes.length) >>> 0; // an i32 arrives signed: a pointer above 2 GiB would be negative
      if (ptr === 0) throw new KeyclaimError('M_TOO_LARGE', `input of ${bytes.length} bytes is above the module's limit`);
      new Uint8Array(e.memory.buffer, ptr, bytes.length).set(bytes);
    }
    try {
      const r = BigInt.asUintN(64, fn(ptr, bytes.length));
      const outPtr = Number(r >> 32n), outLen = Number(r & 0xffffffffn);
      const out = new Uint8Array(e.memory.buffer, outPtr, outLen).slice();
      e.keyclaim_free(outPtr);
      return out;
    } finally {
      if (ptr !== 0) e.keyclaim_free(ptr);
    }
  }
}

/** Parses an envelope: the result, or a thrown KeyclaimError. */
export function unwrap(envelope) {
  const v = JSON.parse(new TextDecoder().decode(envelope));
  if ('result' in v) return v.result;
  throw new KeyclaimError(v.errcode, v.error);
}

/**
 * Matrix canonical JSON (spec appendices): members sorted by Unicode code point, no white space,
 * strings escaping only '"', '\' and U+0000-U+001F (JSON.stringify's rules for strings), integers.
 */
export function canonical(v) {
  if (v === null || typeof v === 'boolean') return JSON.stringify(v);
  if (typeof v === 'number') {
    if (!Number.isSafeInteger(v)) throw new Error(`not a canonical JSON number: ${v}`);
    return String(v);
  }
  if (typeof v === 'string') return JSON.stringify(v);
  if (Array.isArray(v)) return '[' + v.map(canonical).join(',') + ']';
  const keys = Object.keys(v).sort(byCodePoint);
  return '{' + keys.map((k) => JSON.stringify(k) + ':' + canonical(v[k])).join(',') + '}';
}

// UTF-8 byte order, which is code point order (UTF-16 code unit order differs above U+FFFF).
function byCodePoint(a, b) {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}
