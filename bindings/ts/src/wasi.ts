// A small WASI preview 1 implementation: what the Go runtime inside keyclaim.wasm needs and no
// more (bindings/ABI.md section 2), on browser-and-Node globals only (performance, Date, crypto,
// Atomics). No files, no arguments, no environment. Every other import the module names answers
// ENOSYS, so a module built by a newer Go that imports one more function still instantiates.

const ESUCCESS = 0;
const EBADF = 8;
const EINVAL = 28;
const ENOSYS = 52;

/** Thrown by proc_exit: unwinds the guest's stack; the instance is dead afterwards. */
export class ProcExit extends Error {
  constructor(readonly code: number) {
    super(`the module exited with code ${code}`);
    this.name = 'ProcExit';
  }
}

/** The memory of the instance the imports serve; set once the instance exists. */
export interface MemoryRef {
  memory: WebAssembly.Memory | undefined;
}

type WasiFunction = (...args: never[]) => number | void;

// Sleeps for ms milliseconds. Atomics.wait really blocks (Node.js, workers); a browser's main
// thread refuses it, so there the wait spins on the clock (the Go runtime sleeps only when idle,
// which a call into keyclaim never is for long).
function sleepMs(ms: number): void {
  if (!(ms > 0)) return;
  try {
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
    return;
  } catch {
    // fall through: spin
  }
  const until = performance.now() + ms;
  while (performance.now() < until) {
    // spin
  }
}

function nowNs(clockId: number): bigint | undefined {
  switch (clockId) {
    case 0: // realtime
      return BigInt(Math.round((performance.timeOrigin + performance.now()) * 1e6));
    case 1: // monotonic
    case 2: // process CPU time: the monotonic clock is the closest a browser offers
    case 3: // thread CPU time
      return BigInt(Math.round(performance.now() * 1e6));
    default:
      return undefined;
  }
}

/**
 * The `wasi_snapshot_preview1` imports for one instance of `module`. `stderr` receives the text
 * the guest writes to fd 1 and 2 (the Go runtime's fatal errors).
 */
export function wasiImports(
  module: WebAssembly.Module,
  mem: MemoryRef,
  stderr: (text: string) => void,
): Record<string, WasiFunction> {
  const view = (): DataView => {
    if (!mem.memory) throw new Error('keyclaim: WASI call before the instance exists');
    return new DataView(mem.memory.buffer); // re-taken at every call: growth detaches buffers
  };
  const decoder = new TextDecoder();
  const zeroSizes = (countPtr: number, sizePtr: number): number => {
    const v = view();
    v.setUint32(countPtr >>> 0, 0, true);
    v.setUint32(sizePtr >>> 0, 0, true);
    return ESUCCESS;
  };

  const impl: Record<string, WasiFunction> = {
    args_get: () => ESUCCESS,
    args_sizes_get: zeroSizes,
    environ_get: () => ESUCCESS,
    environ_sizes_get: zeroSizes,
    clock_res_get: (id: number, resPtr: number) => {
      if (nowNs(id) === undefined) return EINVAL;
      view().setBigUint64(resPtr >>> 0, 1000n, true);
      return ESUCCESS;
    },
    clock_time_get: (id: number, _precision: bigint, resultPtr: number) => {
      const t = nowNs(id);
      if (t === undefined) return EINVAL;
      view().setBigUint64(resultPtr >>> 0, t, true);
      return ESUCCESS;
    },
    poll_oneoff: (inPtr: number, outPtr: number, nsubs: number, neventsPtr: number) => {
      // Subscriptions are 48 bytes: userdata u64 @0, tag u8 @8, then for a clock: id u32 @16,
      // timeout u64 @24, precision u64 @32, flags u16 @40 (1: absolute). Events are 32 bytes:
      // userdata u64 @0, error u16 @8, type u8 @10.
      let v = view();
      inPtr >>>= 0;
      outPtr >>>= 0;
      let waitNs: bigint | undefined;
      let nevents = 0;
      for (let i = 0; i < nsubs >>> 0; i++) {
        const s = inPtr + i * 48;
        if (v.getUint8(s + 8) !== 0) continue;
        const id = v.getUint32(s + 16, true);
        let timeout = v.getBigUint64(s + 24, true);
        if (v.getUint16(s + 40, true) & 1) {
          const now = nowNs(id) ?? 0n;
          timeout = timeout > now ? timeout - now : 0n;
        }
        if (waitNs === undefined || timeout < waitNs) waitNs = timeout;
      }
      if (waitNs !== undefined) sleepMs(Number(waitNs) / 1e6);
      v = view();
      for (let i = 0; i < nsubs >>> 0; i++) {
        const s = inPtr + i * 48;
        const e = outPtr + nevents * 32;
        const tag = v.getUint8(s + 8);
        v.setBigUint64(e, v.getBigUint64(s, true), true);
        v.setUint16(e + 8, tag === 0 ? ESUCCESS : EBADF, true); // no files: fd events fail
        v.setUint8(e + 10, tag);
        nevents++;
      }
      v.setUint32(neventsPtr >>> 0, nevents, true);
      return ESUCCESS;
    },
    sched_yield: () => ESUCCESS,
    random_get: (bufPtr: number, len: number) => {
      const buf = new Uint8Array(mem.memory!.buffer, bufPtr >>> 0, len >>> 0);
      for (let i = 0; i < buf.length; i += 65536) {
        crypto.getRandomValues(buf.subarray(i, Math.min(i + 65536, buf.length)));
      }
      return ESUCCESS;
    },
    fd_write: (fd: number, iovs: number, iovsLen: number, nwrittenPtr: number) => {
      if (fd !== 1 && fd !== 2) return EBADF;
      const v = view();
      let text = '';
      let n = 0;
      for (let i = 0; i < iovsLen >>> 0; i++) {
        const p = v.getUint32((iovs >>> 0) + i * 8, true);
        const l = v.getUint32((iovs >>> 0) + i * 8 + 4, true);
        text += decoder.decode(new Uint8Array(v.buffer, p, l));
        n += l;
      }
      v.setUint32(nwrittenPtr >>> 0, n, true);
      stderr(text);
      return ESUCCESS;
    },
    fd_fdstat_get: (fd: number, statPtr: number) => {
      if (fd > 2) return EBADF;
      // fdstat: filetype u8 @0 (2: character device), flags u16 @2, rights u64 @8 and @16.
      const v = view();
      const p = statPtr >>> 0;
      for (let i = 0; i < 24; i++) v.setUint8(p + i, 0);
      v.setUint8(p, 2);
      v.setBigUint64(p + 8, fd === 0 ? 2n : 64n, true); // fd_read or fd_write
      return ESUCCESS;
    },
    fd_fdstat_set_flags: (fd: number) => (fd > 2 ? EBADF : ESUCCESS),
    fd_prestat_get: () => EBADF, // no preopened directories
    fd_prestat_dir_name: () => EBADF,
    fd_close: () => EBADF,
    fd_read: () => EBADF,
    proc_exit: (code: number) => {
      throw new ProcExit(code);
    },
  };

  const imports: Record<string, WasiFunction> = {};
  for (const imp of WebAssembly.Module.imports(module)) {
    if (imp.module !== 'wasi_snapshot_preview1' || imp.kind !== 'function') continue;
    imports[imp.name] = impl[imp.name] ?? (() => ENOSYS);
  }
  return imports;
}
