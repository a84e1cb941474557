// The page's one door to the claim engine: the `keyclaim` package's browser build (bindings/ts),
// which loads the real WebAssembly module (dist/keyclaim.wasm) into the page. Everything else in
// the playground calls the engine through `Engine.call`, so that the bytes it shows are the
// module's own.
import { load } from "keyclaim";

/** A Matrix error, as the module (and a server) answers it. */
export interface MatrixError {
  errcode: string;
  error: string;
}

/** One call of an operation: its input and the envelope the module answered, both as text. */
export interface Call {
  op: string;
  input: string;
  output: string;
  /** How long the module took, in milliseconds (performance.now around the call). */
  ms: number;
}

/** What a call answered: the result's exact bytes (as text) and its parsed value, or an error. */
export type Answer = { ok: true; text: string; value: unknown } | { ok: false; error: MatrixError };

const decoder = new TextDecoder();
const RESULT_PREFIX = '{"result":';

export class Engine {
  /** Every call since the last `takeCalls`, for the "engine calls" view and the parity test. */
  private calls: Call[] = [];

  private constructor(private readonly invokeRaw: (op: string, input: string) => Uint8Array) {}

  /** Loads the module: the package's browser build fetches keyclaim.wasm from beside the script. */
  static async load(): Promise<Engine> {
    const engine = await load();
    return new Engine((op, input) => engine.invoke(op, input));
  }

  /**
   * Runs op on input (the JSON text of ABI.md section 8). The module's answer is canonical JSON
   * whose only member is "result" (or the Matrix error body), so the result's bytes are the
   * envelope without its 10-byte prefix and its final brace (ABI.md section 6).
   */
  call(op: string, input: string): Answer {
    const t0 = performance.now();
    const output = decoder.decode(this.invokeRaw(op, input));
    this.calls.push({ op, input, output, ms: performance.now() - t0 });
    if (output.startsWith(RESULT_PREFIX)) {
      const text = output.slice(RESULT_PREFIX.length, -1);
      return { ok: true, text, value: JSON.parse(text) };
    }
    const e = JSON.parse(output) as Partial<MatrixError>;
    return { ok: false, error: { errcode: String(e.errcode), error: String(e.error) } };
  }

  /** The calls made since the previous takeCalls. */
  takeCalls(): Call[] {
    const c = this.calls;
    this.calls = [];
    return c;
  }
}
