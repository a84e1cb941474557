// A pretty-printer for two JSON answers side by side: each line of one answer that the other
// lacks (or holds with another value) is marked, with a gutter sign as well as a colour. A large
// answer is folded: members without a difference collapse to one line ("{…}"), and long runs of
// them to a count, so that a 1,000-device answer shows its differences in a few hundred lines
// (every byte is still in the "Exact bytes" view).

const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

type J = null | boolean | number | string | J[] | { [k: string]: J };

const isObj = (v: unknown): v is Record<string, J> => typeof v === "object" && v !== null && !Array.isArray(v);
const has = (o: unknown, k: string) => isObj(o) && Object.prototype.hasOwnProperty.call(o, k);

const SURROGATE = /[\uD800-\uDFFF]/;

/** The members of v in code point order, as canonical JSON orders them. */
function sortedKeys(v: Record<string, J>): string[] {
  const keys = Object.keys(v);
  if (!keys.some((k) => SURROGATE.test(k))) return keys.sort(); // UTF-16 order is code point order
  return keys.sort((a, b) => {
    const x = [...a], y = [...b];
    for (let i = 0; i < Math.min(x.length, y.length); i++) {
      const d = x[i].codePointAt(0)! - y[i].codePointAt(0)!;
      if (d !== 0) return d;
    }
    return x.length - y.length;
  });
}

export interface Pretty {
  html: string;
  /** How many entries (members or values) are marked. */
  marked: number;
}

/** Folding starts above this many lines; a run of this many unchanged members becomes a count. */
const FOLD_ABOVE = 400;
const RUN = 4;

/** The number of lines value prints as, unfolded. */
function size(v: J): number {
  if (!isObj(v)) return 1;
  let n = 2;
  for (const k in v) n += size(v[k]);
  return n;
}

/** Whether value differs anywhere from other (other absent when !present). */
function differs(v: J, o: J | undefined, present: boolean): boolean {
  if (!present) return true;
  if (isObj(v) && Object.keys(v).length > 0) {
    for (const k in v) if (differs(v[k], has(o, k) ? (o as Record<string, J>)[k] : undefined, has(o, k))) return true;
    return false;
  }
  return JSON.stringify(v) !== JSON.stringify(o);
}

/**
 * Renders value as indented JSON lines; a member absent from other is marked "only" (sign +),
 * a leaf whose value differs in other is marked "changed" (sign ~).
 */
export function prettyDiff(value: unknown, other: unknown): Pretty {
  const lines: string[] = [];
  let marked = 0;
  const fold = size(value as J) > FOLD_ABOVE;
  const line = (depth: number, text: string, mark: "" | "only" | "changed" | "fold", count: boolean) => {
    if (mark && mark !== "fold" && count) marked++;
    const sign = mark === "only" ? "+" : mark === "changed" ? "~" : " ";
    lines.push(`<span class="ln${mark ? " " + mark : ""}"><span class="sign" aria-hidden="true">${sign}</span>${"  ".repeat(depth)}${text}</span>`);
  };
  const key = (k: string) => `<span class="k">${esc(JSON.stringify(k))}</span>: `;
  // state: "cmp" compares with o; "only" is inside a member other lacks.
  const walk = (v: J, o: J | undefined, present: boolean, depth: number, prefix: string, comma: string, state: "cmp" | "only") => {
    const missing = state === "cmp" && !present;
    const whole = missing || state === "only" ? "only" : "";
    if (isObj(v) && Object.keys(v).length > 0) {
      const keys = sortedKeys(v);
      line(depth, `${prefix}{`, whole, missing);
      let run: string[] = [];
      const flush = () => {
        if (run.length >= RUN) {
          line(depth + 1, `<span class="folded">… ${run.length} members without a difference</span>${run.at(-1) === keys.at(-1) ? "" : ","}`, "fold", false);
        } else {
          for (const k of run) line(depth + 1, `${key(k)}<span class="folded">{…}</span>${k === keys.at(-1) ? "" : ","}`, "fold", false);
        }
        run = [];
      };
      keys.forEach((k, i) => {
        const oh = has(o, k);
        const ov = oh ? (o as Record<string, J>)[k] : undefined;
        if (fold && state === "cmp" && isObj(v[k]) && Object.keys(v[k] as object).length > 0 && !differs(v[k], ov, oh)) {
          run.push(k);
          return;
        }
        flush();
        walk(v[k], ov, oh, depth + 1, key(k), i < keys.length - 1 ? "," : "", missing ? "only" : state);
      });
      flush();
      line(depth, `}${comma}`, whole, false);
      return;
    }
    const changed = state === "cmp" && present && JSON.stringify(v) !== JSON.stringify(o);
    line(depth, `${prefix}<span class="v">${esc(JSON.stringify(v))}</span>${comma}`, whole || (changed ? "changed" : ""), missing || changed);
  };
  walk(value as J, other as J, true, 0, "", "", "cmp");
  return { html: lines.join(""), marked };
}
