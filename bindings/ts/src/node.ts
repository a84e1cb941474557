// The Node.js entry point (package.json exports, condition "node"): the module is read from the
// package (or from the file, URL or bytes given) and compiled once per process.
import { readFile } from 'node:fs/promises';
import { loadWith, type Engine, type LoadOptions } from './engine.js';
import { capMemory } from './memcap.js';

export * from './api.js';

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
 * Compiles keyclaim.wasm (the package's own, or options.module: a file path, a file: or http(s)
 * URL, the bytes, or a compiled module) and starts an engine on it. Refuses a module of another
 * ABI version.
 */
export function load(options: LoadOptions = {}): Promise<Engine> {
  return loadWith(options, new URL('./keyclaim.wasm', import.meta.url), compile);
}
