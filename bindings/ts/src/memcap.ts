// A hard cap on an instance's memory. keyclaim.wasm defines its own memory with no maximum, and
// JavaScript cannot limit a memory the module defines; so the cap is written into the module:
// its memory section gets a maximum (in 64 KiB pages) before compilation. A call that needs more
// then fails to grow memory, the Go runtime dies ("out of memory"), the call throws, and the
// engine discards that instance (ABI section 10). wazero's WithMemoryLimitPages does the same.

const PAGE = 65536;

function readLeb(b: Uint8Array, pos: number): [value: number, next: number] {
  let result = 0;
  let shift = 0;
  for (;;) {
    const byte = b[pos++];
    if (byte === undefined) throw new RangeError('truncated');
    result += (byte & 0x7f) * 2 ** shift;
    shift += 7;
    if ((byte & 0x80) === 0) return [result, pos];
    if (shift > 35) throw new Error('keyclaim: malformed WebAssembly module (LEB128)');
  }
}

function leb(n: number): number[] {
  const out: number[] = [];
  do {
    let byte = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) byte |= 0x80;
    out.push(byte);
  } while (n > 0);
  return out;
}

/**
 * Looks for the memory section in the first bytes of a module. Returns undefined if more bytes
 * are needed, or [end of the part to replace, its replacement] ([0, empty] when nothing needs
 * changing: no memory section, or one already within the cap).
 */
function patchPrefix(b: Uint8Array, maxPages: number): [end: number, replacement: Uint8Array] | undefined {
  try {
    if (b.length < 8) return undefined;
    if (b[0] !== 0 || b[1] !== 0x61 || b[2] !== 0x73 || b[3] !== 0x6d) {
      throw new Error('keyclaim: not a WebAssembly module');
    }
    let pos = 8;
    for (;;) {
      if (pos >= b.length) return undefined;
      const id = b[pos]!;
      const [size, body] = readLeb(b, pos + 1);
      if (id !== 0 && id > 5) return [0, new Uint8Array()]; // past where memory would be
      if (id !== 5) {
        pos = body + size;
        continue;
      }
      if (body + size > b.length) return undefined;
      const [count, limits] = readLeb(b, body);
      if (count !== 1) return [0, new Uint8Array()];
      const flags = b[limits]!;
      if (flags !== 0 && flags !== 1) return [0, new Uint8Array()]; // shared or 64-bit: leave it
      const [min, afterMin] = readLeb(b, limits + 1);
      let max = maxPages;
      if (flags === 1) {
        const [declared] = readLeb(b, afterMin);
        if (declared <= maxPages) return [0, new Uint8Array()];
      }
      if (min > max) max = min; // the cap cannot be below what the module needs to start
      const content = [...leb(1), 1, ...leb(min), ...leb(max)];
      const section = [5, ...leb(content.length), ...content];
      const out = new Uint8Array(pos + section.length);
      out.set(b.subarray(0, pos));
      out.set(section, pos);
      return [body + size, out];
    }
  } catch (e) {
    if (e instanceof RangeError) return undefined;
    throw e;
  }
}

/** The module's bytes with its memory capped at maxBytes (rounded down to whole pages). */
export function capMemory(bytes: Uint8Array, maxBytes: number): Uint8Array {
  const r = patchPrefix(bytes, Math.floor(maxBytes / PAGE));
  if (r === undefined) return bytes; // no memory section before the end: compilation judges it
  const [end, replacement] = r;
  if (end === 0) return bytes;
  const out = new Uint8Array(replacement.length + bytes.length - end);
  out.set(replacement);
  out.set(bytes.subarray(end), replacement.length);
  return out;
}

/** The same as a stream transform, so that a fetched module still compiles while it streams. */
export function capMemoryStream(maxBytes: number): TransformStream<Uint8Array, Uint8Array> {
  let head: Uint8Array | undefined = new Uint8Array();
  const maxPages = Math.floor(maxBytes / PAGE);
  return new TransformStream<Uint8Array, Uint8Array>({
    transform(chunk, controller) {
      if (head === undefined) {
        controller.enqueue(chunk);
        return;
      }
      const joined = new Uint8Array(head.length + chunk.length);
      joined.set(head);
      joined.set(chunk, head.length);
      const r = patchPrefix(joined, maxPages);
      if (r === undefined) {
        head = joined;
        return;
      }
      head = undefined;
      const [end, replacement] = r;
      if (end > 0) controller.enqueue(replacement);
      controller.enqueue(joined.subarray(end));
    },
    flush(controller) {
      if (head !== undefined && head.length > 0) controller.enqueue(head);
    },
  });
}
