// The browser entry point (package.json exports, conditions "browser" and "default"): the module
// is fetched and compiled while it streams (WebAssembly.compileStreaming), from the package's
// keyclaim.wasm next to this file unless options.module names another URL or gives the bytes.
import { loadWith, type Engine, type LoadOptions } from './engine.js';
import { capMemory, capMemoryStream } from './memcap.js';

export * from './api.js';

async function compile(src: string | URL | Uint8Array | ArrayBuffer, maxMiB: number): Promise<WebAssembly.Module> {
  const cap = maxMiB * 1024 * 1024;
  if (src instanceof Uint8Array || src instanceof ArrayBuffer) {
    const bytes = src instanceof Uint8Array ? src : new Uint8Array(src);
    return WebAssembly.compile((cap > 0 ? capMemory(bytes, cap) : bytes) as BufferSource);
  }
  const url = new URL(String(src), globalThis.location?.href);
  const res = await fetch(url);
  if (!res.ok || res.body === null) throw new Error(`keyclaim: fetching ${url} answered ${res.status}`);
  const body = cap > 0 ? res.body.pipeThrough(capMemoryStream(cap)) : res.body;
  // A Response of our own: compileStreaming needs the application/wasm type, whatever the server said.
  return WebAssembly.compileStreaming(new Response(body, { headers: { 'Content-Type': 'application/wasm' } }));
}

/**
 * Fetches and compiles keyclaim.wasm (the package's own, next to this file; or options.module: a
 * URL, the bytes, or a compiled module) and starts an engine on it. Refuses a module of another
 * ABI version.
 */
export function load(options: LoadOptions = {}): Promise<Engine> {
  return loadWith(options, new URL('./keyclaim.wasm', import.meta.url), compile);
}
