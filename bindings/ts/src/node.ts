// The Node.js entry point (package.json exports, condition "node"): the module is read from the
// package (or from the file, URL or bytes given) and compiled once per process.
import { readFile } from 'node:fs/promises';
import { DEFAULT_MAX_MEMORY_MIB, engineFromModule, type Engine, type LoadOptions } from './engine.js';
import { capMemory } from './memcap.js';

export * from './api.js';

const defaultModules = new Map<number, Promise<WebAssembly.Module>>();

async function bytesOf(src: string | URL | Uint8Array | ArrayBuffer): Promise<Uint8Array> {
  if (src instanceof Uint8Array) return src;
  if (src instanceof ArrayBuffer) return new Uint8Array(src);
  const url = src instanceof URL ? src : /^(file|https?):/.test(src) ? new URL(src) : undefined;
  if (url === undefined || url.protocol === 'file:') return new Uint8Array(await readFile(url ?? src));
  const res = await fetch(url);
  if (!res.ok) throw new Error(`keyclaim: fetching ${url} answered ${res.status}`);
  return new Uint8Array(await res.arrayBuffer());
}

async function compile(src: string | URL | Uint8Array | ArrayBuffer, maxMiB: number): Promise<WebAssembly.Module> {
  const bytes = await bytesOf(src);
  return WebAssembly.compile((maxMiB > 0 ? capMemory(bytes, maxMiB * 1024 * 1024) : bytes) as BufferSource);
}

/**
 * Compiles keyclaim.wasm (the package's own, or options.module) and starts an engine on it.
 * Refuses a module of another ABI version.
 */
export async function load(options: LoadOptions = {}): Promise<Engine> {
  const maxMiB = options.maxMemoryMiB ?? DEFAULT_MAX_MEMORY_MIB;
  let module: WebAssembly.Module;
  if (options.module instanceof WebAssembly.Module) {
    module = options.module;
  } else if (options.module !== undefined) {
    module = await compile(options.module, maxMiB);
  } else {
    let p = defaultModules.get(maxMiB);
    if (p === undefined) {
      p = compile(new URL('./keyclaim.wasm', import.meta.url), maxMiB);
      defaultModules.set(maxMiB, p);
      p.catch(() => defaultModules.delete(maxMiB));
    }
    module = await p;
  }
  return engineFromModule(module, options);
}
