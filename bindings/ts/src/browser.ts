// The browser entry point (package.json exports, conditions "browser" and "default"): the module
// is fetched and compiled while it streams (WebAssembly.compileStreaming), from the package's
// keyclaim.wasm next to this file unless options.module names another URL or gives the bytes.
import { DEFAULT_MAX_MEMORY_MIB, engineFromModule, type Engine, type LoadOptions } from './engine.js';
import { capMemory, capMemoryStream } from './memcap.js';

export * from './api.js';

const defaultModules = new Map<number, Promise<WebAssembly.Module>>();

async function compileUrl(url: string | URL, maxMiB: number): Promise<WebAssembly.Module> {
  const res = await fetch(url);
  if (!res.ok || res.body === null) throw new Error(`keyclaim: fetching ${String(url)} answered ${res.status}`);
  const body = maxMiB > 0 ? res.body.pipeThrough(capMemoryStream(maxMiB * 1024 * 1024)) : res.body;
  // A Response of our own: compileStreaming needs the application/wasm type, whatever the server said.
  return WebAssembly.compileStreaming(new Response(body, { headers: { 'Content-Type': 'application/wasm' } }));
}

/**
 * Fetches and compiles keyclaim.wasm (the package's own, or options.module: a URL, or the bytes)
 * and starts an engine on it. Refuses a module of another ABI version.
 */
export async function load(options: LoadOptions = {}): Promise<Engine> {
  const maxMiB = options.maxMemoryMiB ?? DEFAULT_MAX_MEMORY_MIB;
  const src = options.module;
  let module: WebAssembly.Module;
  if (src instanceof WebAssembly.Module) {
    module = src;
  } else if (src instanceof Uint8Array || src instanceof ArrayBuffer) {
    const bytes = src instanceof Uint8Array ? src : new Uint8Array(src);
    module = await WebAssembly.compile((maxMiB > 0 ? capMemory(bytes, maxMiB * 1024 * 1024) : bytes) as BufferSource);
  } else if (src !== undefined) {
    module = await compileUrl(new URL(String(src), globalThis.location?.href), maxMiB);
  } else {
    let p = defaultModules.get(maxMiB);
    if (p === undefined) {
      p = compileUrl(new URL('./keyclaim.wasm', import.meta.url), maxMiB);
      defaultModules.set(maxMiB, p);
      p.catch(() => defaultModules.delete(maxMiB));
    }
    module = await p;
  }
  return engineFromModule(module, options);
}
