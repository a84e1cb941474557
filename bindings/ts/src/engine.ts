// The engine: instances of keyclaim.wasm, the call sequence of bindings/ABI.md section 5, typed
// operations, trackers. Shared by the Node.js and browser entry points, which differ only in how
// they obtain and compile the module.
import { wasiImports, ProcExit, type MemoryRef } from './wasi.js';
import type {
  Body,
  ClaimRequest,
  ClassifyClaimInput,
  ClassifyClaimResult,
  CompleteClientInput,
  CompleteClientResult,
  CompleteFederationInput,
  CompleteFederationResult,
  CompleteUpstreamInput,
  CompleteUpstreamResult,
  Operation,
  ParseClaimInput,
  ParseClaimResult,
  PlanFanoutInput,
  PlanFanoutResult,
  RawInput,
  SelectKeysInput,
  SelectKeysResult,
  TrackerConfig,
  TrackerObserveInput,
  TrackerObserveResult,
  TrackerPlanInput,
  TrackerPlanResult,
  TrackerRunInput,
  TrackerRunResult,
} from './types.js';

/** The ABI version (bindings/ABI.md section 12) this package implements. */
export const ABI_VERSION = 1;

/** The operations of ABI section 8, in the order of the module's exports. */
export const OPERATIONS: readonly Operation[] = [
  'parse_claim',
  'plan_fanout',
  'select_keys',
  'complete_client',
  'complete_federation',
  'classify_claim',
  'tracker_run',
  'complete_upstream',
];

const NOT_OPERATIONS = new Set(['abi_version', 'alloc', 'free', 'tracker_new', 'tracker_plan', 'tracker_observe', 'tracker_free']);
const MiB = 1024 * 1024;
/** Default hard cap of an instance's memory (ABI section 10; the Go host's default too). */
export const DEFAULT_MAX_MEMORY_MIB = 256;
/** Default bound past which an instance is replaced after a call. */
export const DEFAULT_RECYCLE_MEMORY_MIB = 64;
// An input buffer kept in the instance between calls, up to this size (ABI section 5 allows it).
const KEEP_INPUT_BYTES = 256 * 1024;

/** An error envelope answered by the module: `{"errcode", "error"}` (ABI section 6). */
export class KeyclaimError extends Error {
  /** The Matrix error code, e.g. `M_BAD_JSON`; match on this, not on the message. */
  readonly errcode: string;
  constructor(errcode: string, message: string) {
    super(message);
    this.name = 'KeyclaimError';
    this.errcode = errcode;
  }
}

/**
 * The module trapped (ran out of its memory cap, or failed inside): no answer. The instance was
 * discarded; the next call runs on a fresh one. `stderr` is what the Go runtime printed.
 */
export class KeyclaimTrap extends Error {
  readonly stderr: string;
  constructor(message: string, stderr: string, cause: unknown) {
    super(stderr ? `${message}: ${stderr.trim().split('\n')[0]}` : message, { cause });
    this.name = 'KeyclaimTrap';
    this.stderr = stderr;
  }
}

/** A tracker whose instance trapped: its state is gone (ABI section 9). */
export class TrackerLostError extends Error {
  constructor() {
    super('keyclaim: the tracker was lost: its instance trapped');
    this.name = 'TrackerLostError';
  }
}

/**
 * A compiled WebAssembly.Module, written so that the declarations need no `dom` lib: where the
 * WebAssembly global is not declared (Node.js types without `dom`), this is `never`.
 */
export type CompiledModule = typeof globalThis extends { WebAssembly: { Module: abstract new (...args: never[]) => infer M } } ? M : never;

/** Options of load(). */
export interface LoadOptions {
  /**
   * The module to load instead of the one shipped in the package: its bytes, a compiled
   * WebAssembly.Module, a URL, or (Node.js) a file path / (browser) a URL string.
   */
  module?: string | URL | Uint8Array | ArrayBuffer | CompiledModule;
  /**
   * Hard cap of an instance's memory in MiB (default 256): a call that needs more traps and its
   * instance is discarded. Written into the module before compiling, so it does not apply to a
   * module passed already compiled. 0 for no cap.
   */
  maxMemoryMiB?: number;
  /** An instance whose memory passed this many MiB after a call is replaced (default 64). */
  recycleMemoryMiB?: number;
  /** Receives what the module prints (the Go runtime's fatal errors). Default: kept for errors. */
  stderr?: (text: string) => void;
}

/** Counters of an engine's instances. */
export interface EngineStats {
  /** Instances created so far. */
  created: number;
  /** Instances replaced because their memory passed the bound. */
  recycled: number;
  /** Instances discarded after a trap. */
  trapped: number;
  /** Instances alive: the current one and any kept for their trackers. */
  instances: number;
  /** Memory of the current instance in bytes (0 when none). */
  memoryBytes: number;
}

type OpFn = (ptr: number, len: number) => bigint;
type StepFn = (handle: number, ptr: number, len: number) => bigint;

interface Exports {
  memory: WebAssembly.Memory;
  _initialize: () => void;
  keyclaim_abi_version: () => number;
  keyclaim_alloc: (len: number) => number;
  keyclaim_free: (ptr: number) => void;
  keyclaim_tracker_new: OpFn;
  keyclaim_tracker_plan: StepFn;
  keyclaim_tracker_observe: StepFn;
  keyclaim_tracker_free: (handle: number) => number;
  [name: `keyclaim_${string}`]: unknown;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const strictDecoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const RESULT_PREFIX = '{"result":';

/** @internal The WASI imports of one instance and what its guest printed. */
export interface Prepared {
  mem: MemoryRef;
  text: string;
  imports: WebAssembly.Imports;
}

/** @internal The imports for a new instance of module. */
export function prepare(module: WebAssembly.Module, stderr: ((text: string) => void) | undefined): Prepared {
  const p: Prepared = { mem: { memory: undefined }, text: '', imports: {} };
  const sink = (text: string): void => {
    p.text = (p.text + text).slice(-8192);
    stderr?.(text);
  };
  p.imports = { wasi_snapshot_preview1: wasiImports(module, p.mem, sink) };
  return p;
}

/**
 * @internal One instance of the module: one call at a time (ABI section 11), which one
 * JavaScript thread gives by construction; a re-entrant call (from an import callback) is refused.
 */
export class Instance {
  readonly x: Exports;
  dead = false;
  busy = false;
  trackers = 0;
  private inPtr = 0;
  private inCap = 0;
  private readonly p: Prepared;

  /** A new instance, synchronously (the engine's replacements after a trap or a recycle). */
  static create(module: WebAssembly.Module, stderr: ((text: string) => void) | undefined): Instance {
    const p = prepare(module, stderr);
    return new Instance(new WebAssembly.Instance(module, p.imports), p);
  }

  constructor(inst: WebAssembly.Instance, p: Prepared) {
    this.p = p;
    this.x = inst.exports as unknown as Exports;
    if (!(this.x.memory instanceof WebAssembly.Memory) || typeof this.x._initialize !== 'function' ||
        typeof this.x.keyclaim_abi_version !== 'function') {
      throw new Error('keyclaim: not a keyclaim module (it lacks memory, _initialize or keyclaim_abi_version)');
    }
    p.mem.memory = this.x.memory;
    this.x._initialize(); // once, before anything else (ABI section 3)
    const v = this.x.keyclaim_abi_version();
    if (v !== ABI_VERSION) {
      throw new Error(`keyclaim: the module implements ABI version ${v}; this package implements version ${ABI_VERSION} only: use a module built for it`);
    }
  }

  memoryBytes(): number {
    return this.x.memory.buffer.byteLength;
  }

  // ABI section 5. Writes input into guest memory (reusing a kept buffer), calls fn, and hands
  // the output's bytes (a view of guest memory, valid until the next call into this instance) to
  // read, then frees the output. Throws KeyclaimTrap (and marks the instance dead) on a trap.
  call<T>(fn: (ptr: number, len: number) => bigint, input: RawInput, read: (out: Uint8Array) => T): T {
    if (this.dead) throw new Error('keyclaim: call on a discarded instance');
    if (this.busy) throw new Error('keyclaim: re-entrant call into an instance (one call at a time)');
    this.busy = true;
    const x = this.x;
    let tmpPtr = 0;
    try {
      let ptr = 0;
      let len = 0;
      if (typeof input === 'string' && input.length * 3 <= this.inCap) {
        // Encode straight into the kept buffer: no intermediate copy.
        ptr = this.inPtr;
        len = encoder.encodeInto(input, new Uint8Array(x.memory.buffer, ptr, this.inCap)).written;
      } else {
        const bytes = typeof input === 'string' ? encoder.encode(input) : input;
        len = bytes.length;
        if (len > 0) {
          if (len <= this.inCap) {
            ptr = this.inPtr;
          } else {
            const p = x.keyclaim_alloc(len) >>> 0; // an i32 arrives signed
            if (p === 0) {
              throw new KeyclaimError('M_TOO_LARGE', `input of ${len} bytes is above the module's 64 MiB limit`);
            }
            if (len <= KEEP_INPUT_BYTES) {
              if (this.inPtr !== 0) x.keyclaim_free(this.inPtr);
              this.inPtr = p;
              this.inCap = len;
            } else {
              tmpPtr = p;
            }
            ptr = p;
          }
          new Uint8Array(x.memory.buffer, ptr, len).set(bytes);
        }
      }
      const r = BigInt.asUintN(64, fn(ptr, len)); // unsigned: an output above 2 GiB stays positive
      const outPtr = Number(r >> 32n);
      const outLen = Number(r & 0xffffffffn);
      // A view taken after the call: the call may have grown (and so detached) the memory.
      const result = read(new Uint8Array(x.memory.buffer, outPtr, outLen));
      x.keyclaim_free(outPtr);
      if (tmpPtr !== 0) x.keyclaim_free(tmpPtr);
      return result;
    } catch (e) {
      if (e instanceof KeyclaimError) {
        if (tmpPtr !== 0) x.keyclaim_free(tmpPtr);
        throw e;
      }
      this.dead = true;
      const what = e instanceof ProcExit ? `the module exited (code ${e.code})` : `the module trapped (${String(e)})`;
      throw new KeyclaimTrap(`keyclaim: ${what}; the instance was discarded`, this.p.text, e);
    } finally {
      this.busy = false;
    }
  }
}

const copyOut = (out: Uint8Array): Uint8Array => out.slice();

function parseEnvelope<T>(out: Uint8Array): T {
  const text = decoder.decode(out); // copies the bytes out of guest memory
  if (text.startsWith(RESULT_PREFIX)) return JSON.parse(text.slice(RESULT_PREFIX.length, -1)) as T;
  const v = JSON.parse(text) as { errcode?: unknown; error?: unknown };
  throw new KeyclaimError(String(v.errcode), String(v.error));
}

/** Parses an envelope (ABI section 6): the result, or a thrown KeyclaimError. */
export function unwrap<T = unknown>(envelope: Uint8Array | string): T {
  return parseEnvelope<T>(typeof envelope === 'string' ? encoder.encode(envelope) : envelope);
}

function base64(bytes: Uint8Array): string {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

// A body member as the module reads it (ABI section 7): text as is, bytes as text when they are
// valid UTF-8 and as body_base64 otherwise, any other value as its JSON.
function withBody(o: Obj): Obj {
  if (!('body' in o)) return o;
  const b = o.body as Body | undefined;
  if (typeof b === 'string') return o;
  const { body: _, ...rest } = o;
  let bytes: Uint8Array | undefined;
  if (b instanceof Uint8Array) bytes = b;
  else if (b instanceof ArrayBuffer) bytes = new Uint8Array(b);
  if (bytes === undefined) return { ...rest, body: JSON.stringify(b) };
  try {
    return { ...rest, body: strictDecoder.decode(bytes) };
  } catch {
    return { ...rest, body_base64: base64(bytes) };
  }
}

function mapValues(m: unknown, f: (v: Obj) => Obj): unknown {
  if (!isObj(m)) return m;
  let out: Obj | undefined;
  for (const [k, v] of Object.entries(m)) {
    if (!isObj(v)) continue;
    const w = f(v);
    if (w !== v) (out ??= { ...m })[k] = w;
  }
  return out ?? m;
}

// Serialises a typed input: where the operation carries HTTP bodies, each becomes body or
// body_base64. Strings and bytes are passed unchanged (raw JSON).
function encodeInput(op: Operation | 'tracker_observe' | 'tracker_new' | 'tracker_plan', input: unknown): RawInput {
  if (typeof input === 'string' || input instanceof Uint8Array) return input;
  if (input === undefined) return '';
  let v = input;
  if (isObj(v)) {
    switch (op) {
      case 'parse_claim':
      case 'classify_claim':
      case 'complete_upstream':
      case 'tracker_observe':
        v = withBody(v);
        break;
      case 'complete_client': {
        const remote = mapValues(v.remote, withBody);
        if (remote !== v.remote) v = { ...v, remote };
        break;
      }
      case 'tracker_run':
        if (Array.isArray(v.steps)) {
          let changed = false;
          const steps = v.steps.map((s: unknown) => {
            if (!isObj(s) || s.op !== 'observe' || !isObj(s.input)) return s;
            const i = withBody(s.input);
            if (i === s.input) return s;
            changed = true;
            return { ...s, input: i };
          });
          if (changed) v = { ...v, steps };
        }
        break;
      default:
    }
  }
  return JSON.stringify(v);
}

/**
 * A compiled keyclaim module and the instance(s) that run it. Every method is synchronous and
 * runs one call at a time: concurrent promises that share an engine take turns, on one thread.
 */
export class Engine {
  readonly #module: WebAssembly.Module;
  readonly #recycleBytes: number;
  readonly #stderr: ((text: string) => void) | undefined;
  #current: Instance | undefined;
  #stats = { created: 0, recycled: 0, trapped: 0 };
  #kept = new Set<Instance>(); // instances replaced while trackers still live in them

  /** @internal Makes an engine of a compiled module and its first instance (load() does). */
  static fromInstance(module: WebAssembly.Module, first: Instance, options: LoadOptions): Engine {
    return new Engine(module, first, options);
  }

  /** Use load(): private, so that `new Engine()` does not type-check. */
  private constructor(module: WebAssembly.Module, first: Instance, options: LoadOptions) {
    this.#module = module;
    this.#recycleBytes = (options.recycleMemoryMiB ?? DEFAULT_RECYCLE_MEMORY_MIB) * MiB;
    this.#stderr = options.stderr;
    this.#current = first;
    this.#stats.created++;
  }

  #instance(): Instance {
    if (this.#current === undefined) {
      this.#current = Instance.create(this.#module, this.#stderr);
      this.#stats.created++;
    }
    return this.#current;
  }

  // After a call: replace an instance that trapped or grew past the bound. One still holding
  // trackers is kept for them until they are freed (a trapped one is simply dropped).
  #after(inst: Instance): void {
    if (inst.dead) {
      this.#stats.trapped++;
      this.#kept.delete(inst);
      if (this.#current === inst) this.#current = undefined;
      return;
    }
    if (inst === this.#current && inst.memoryBytes() > this.#recycleBytes) {
      this.#stats.recycled++;
      this.#current = undefined;
      if (inst.trackers > 0) this.#kept.add(inst);
    }
  }

  #run<T>(inst: Instance, fn: (ptr: number, len: number) => bigint, input: RawInput, read: (out: Uint8Array) => T): T {
    try {
      return inst.call(fn, input, read);
    } finally {
      this.#after(inst);
    }
  }

  // An operation is any keyclaim_<op> export but the ABI's own (ABI section 12: a newer module
  // may add operations, which invoke then reaches).
  #op(op: Operation): (ptr: number, len: number) => bigint {
    const inst = this.#instance();
    const fn = inst.x[`keyclaim_${op}`];
    if (typeof fn !== 'function' || NOT_OPERATIONS.has(op)) {
      throw new KeyclaimError('M_UNKNOWN', `unknown operation ${JSON.stringify(op)}`);
    }
    return fn as OpFn;
  }

  /**
   * Runs an operation on raw JSON input (a string or UTF-8 bytes) and returns the module's
   * envelope bytes unchanged: `{"result":...}` or `{"errcode","error"}`, canonical JSON.
   */
  invoke(op: Operation | string, input: string | Uint8Array): Uint8Array {
    const fn = this.#op(op as Operation);
    return this.#run(this.#current!, fn, input, copyOut);
  }

  #typed<T>(op: Operation, input: unknown): T {
    const raw = encodeInput(op, input);
    const fn = this.#op(op);
    return this.#run(this.#current!, fn, raw, parseEnvelope<T>);
  }

  /** parse_claim (ABI 8.1): validates a claim request body. */
  parseClaim(input: ParseClaimInput | RawInput): ParseClaimResult {
    return this.#typed('parse_claim', input);
  }
  /** plan_fanout (ABI 8.2): splits a request between this server and the remote ones. */
  planFanout(input: PlanFanoutInput | RawInput): PlanFanoutResult {
    return this.#typed('plan_fanout', input);
  }
  /** select_keys (ABI 8.3): claims from an in-memory key inventory. */
  selectKeys(input: SelectKeysInput | RawInput): SelectKeysResult {
    return this.#typed('select_keys', input);
  }
  /** complete_client (ABI 8.4): the complete answer to a client from local keys and remote answers. */
  completeClient(input: CompleteClientInput | RawInput): CompleteClientResult {
    return this.#typed('complete_client', input);
  }
  /** complete_federation (ABI 8.5): the answer to another server. */
  completeFederation(input: CompleteFederationInput | RawInput): CompleteFederationResult {
    return this.#typed('complete_federation', input);
  }
  /** classify_claim (ABI 8.6): what a claim answer means for each requested device. */
  classifyClaim(input: ClassifyClaimInput | RawInput): ClassifyClaimResult {
    return this.#typed('classify_claim', input);
  }
  /** complete_upstream (ABI 8.8): completes an existing homeserver's answer (proxy mode). */
  completeUpstream(input: CompleteUpstreamInput | RawInput): CompleteUpstreamResult {
    return this.#typed('complete_upstream', input);
  }
  /** tracker_run (ABI 8.7): a fresh tracker driven through steps, in one call. */
  trackerRun(input: TrackerRunInput | RawInput): TrackerRunResult {
    return this.#typed('tracker_run', input);
  }

  /**
   * A retry tracker (ABI section 9) living in the current instance, which is kept for it until
   * free(). Throws KeyclaimError for a bad configuration.
   */
  tracker(config?: TrackerConfig | RawInput): Tracker {
    const inst = this.#instance();
    const raw = encodeInput('tracker_new', config);
    const { handle } = this.#run(inst, inst.x.keyclaim_tracker_new, raw, parseEnvelope<{ handle: number }>);
    inst.trackers++;
    return new Tracker(this, inst, handle);
  }

  /** @internal One tracker step on the tracker's instance. */
  step<T>(inst: Instance, handle: number, step: 'plan' | 'observe', input: RawInput, read: (out: Uint8Array) => T): T {
    if (inst.dead) throw new TrackerLostError();
    const fn = step === 'plan' ? inst.x.keyclaim_tracker_plan : inst.x.keyclaim_tracker_observe;
    try {
      return this.#run(inst, (p, n) => fn(handle, p, n), input, read);
    } catch (e) {
      if (e instanceof KeyclaimTrap) throw new TrackerLostError();
      throw e;
    }
  }

  /** @internal Frees a tracker; drops a replaced instance when its last tracker goes. */
  release(inst: Instance, handle: number): boolean {
    if (inst.dead) return false;
    const ok = inst.x.keyclaim_tracker_free(handle) === 0;
    inst.trackers--;
    if (inst.trackers === 0 && this.#kept.delete(inst)) inst.dead = true;
    return ok;
  }

  /** Counters of this engine's instances. */
  stats(): EngineStats {
    return {
      ...this.#stats,
      instances: (this.#current ? 1 : 0) + this.#kept.size,
      memoryBytes: this.#current?.memoryBytes() ?? 0,
    };
  }
}

// A tracker dropped without free() is freed when it is garbage-collected, so that it does not
// keep its handle (and, after a recycle, its whole instance) forever.
interface Held { engine: Engine; inst: Instance; handle: number }
const finalizer = typeof FinalizationRegistry === 'function'
  ? new FinalizationRegistry<Held>((h) => { h.engine.release(h.inst, h.handle); })
  : undefined;

/**
 * A retry tracker (ABI section 9): devices without keys and failed servers are backed off.
 * Lives in one instance of its engine; free() it when done (or `using t = engine.tracker()`).
 */
export class Tracker {
  readonly #engine: Engine;
  readonly #inst: Instance;
  #handle: number;

  /** @internal Use engine.tracker(). */
  constructor(engine: Engine, inst: Instance, handle: number) {
    this.#engine = engine;
    this.#inst = inst;
    this.#handle = handle;
    finalizer?.register(this, { engine, inst, handle }, this);
  }

  /** The handle in its instance (0 once freed). */
  get handle(): number {
    return this.#handle;
  }

  #live(): number {
    if (this.#handle === 0) throw new Error('keyclaim: tracker used after free()');
    return this.#handle;
  }

  /** plan: the devices backed off at nowMs and the keys of the next claim request. */
  plan(nowMs: number, request: ClaimRequest | RawInput): TrackerPlanResult;
  plan(input: TrackerPlanInput | RawInput): TrackerPlanResult;
  plan(a: number | TrackerPlanInput | RawInput, request?: ClaimRequest | RawInput): TrackerPlanResult {
    const input = typeof a === 'number'
      ? `{"now_ms":${JSON.stringify(a)},"request":${jsonText(request)}}`
      : encodeInput('tracker_plan', a);
    return this.#engine.step(this.#inst, this.#live(), 'plan', input, parseEnvelope<TrackerPlanResult>);
  }

  /** observe: records the claim answer (body) received at nowMs for request; its outcomes. */
  observe(nowMs: number, request: ClaimRequest | RawInput, body: Body): TrackerObserveResult;
  observe(input: TrackerObserveInput | RawInput): TrackerObserveResult;
  observe(a: number | TrackerObserveInput | RawInput, request?: ClaimRequest | RawInput, body?: Body): TrackerObserveResult {
    const input = typeof a === 'number'
      ? `{"now_ms":${JSON.stringify(a)},"request":${jsonText(request)},${JSON.stringify(withBody({ body })).slice(1)}`
      : encodeInput('tracker_observe', a);
    return this.#engine.step(this.#inst, this.#live(), 'observe', input, parseEnvelope<TrackerObserveResult>);
  }

  /** A raw step: the module's envelope bytes for `step` on raw JSON input, unchanged. */
  invoke(step: 'plan' | 'observe', input: string | Uint8Array): Uint8Array {
    return this.#engine.step(this.#inst, this.#live(), step, input, copyOut);
  }

  /** Forgets the tracker; false if it was already freed or lost. Safe to call twice. */
  free(): boolean {
    const h = this.#handle;
    if (h === 0) return false;
    this.#handle = 0;
    finalizer?.unregister(this);
    return this.#engine.release(this.#inst, h);
  }

  [Symbol.dispose](): void {
    this.free();
  }
}

// A request as JSON text: raw text or bytes unchanged, an object serialised.
function jsonText(r: ClaimRequest | RawInput | undefined): string {
  if (typeof r === 'string') return r;
  if (r instanceof Uint8Array) return decoder.decode(r);
  return JSON.stringify(r ?? null);
}

/** @internal Wraps a compiled module and its first instance (instantiated asynchronously, as
 * browsers require for a large module) in an Engine. */
export async function engineFromModule(module: WebAssembly.Module, options: LoadOptions): Promise<Engine> {
  const p = prepare(module, options.stderr);
  const first = await WebAssembly.instantiate(module, p.imports);
  return Engine.fromInstance(module, new Instance(first, p), options);
}

type Source = string | URL | Uint8Array | ArrayBuffer;
const defaultModules = new Map<string, Promise<WebAssembly.Module>>();

/**
 * @internal load() of both entry points: options.module compiled by `compile` (or taken as it is
 * when already compiled), or the package's own module at `defaultUrl`, compiled once per process
 * and memory cap.
 */
export async function loadWith(
  options: LoadOptions,
  defaultUrl: URL,
  compile: (src: Source, maxMiB: number) => Promise<WebAssembly.Module>,
): Promise<Engine> {
  const maxMiB = options.maxMemoryMiB ?? DEFAULT_MAX_MEMORY_MIB;
  const src = options.module as Source | WebAssembly.Module | undefined;
  let module: WebAssembly.Module;
  if (src instanceof WebAssembly.Module) {
    module = src;
  } else if (src !== undefined) {
    module = await compile(src, maxMiB);
  } else {
    const key = `${maxMiB} ${defaultUrl.href}`;
    let p = defaultModules.get(key);
    if (p === undefined) {
      p = compile(defaultUrl, maxMiB);
      defaultModules.set(key, p);
      p.catch(() => defaultModules.delete(key));
    }
    module = await p;
  }
  return engineFromModule(module, options);
}
