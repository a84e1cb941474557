// A pretty-printer for two JSON answers side by side: each line of one answer that the other
// lacks (or holds with another value) is marked, with a gutter sign as well as a colour.

const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

type J = null | boolean | number | string | J[] | { [k: string]: J };

const isObj = (v: unknown): v is Record<string, J> => typeof v === "object" && v !== null && !Array.isArray(v);

/** Compares code points, as canonical JSON orders members. */
function byCodePoint(a: string, b: string): number {
  const x = [...a], y = [...b];
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const d = x[i].codePointAt(0)! - y[i].codePointAt(0)!;
    if (d !== 0) return d;
  }
  return x.length - y.length;
}

export interface Pretty {
  html: string;
  /** How many entries (members or values) are marked. */
  marked: number;
}

/**
 * Renders value as indented JSON lines; a member absent from other is marked "only" (sign +),
 * a leaf whose value differs in other is marked "changed" (sign ~). other undefined marks nothing.
 */
export function prettyDiff(value: unknown, other: unknown, compare = true): Pretty {
  const lines: string[] = [];
  let marked = 0;
  const line = (depth: number, text: string, mark: "" | "only" | "changed", count: boolean) => {
    if (mark && count) marked++;
    const sign = mark === "only" ? "+" : mark === "changed" ? "~" : " ";
    lines.push(`<span class="ln${mark ? " " + mark : ""}"><span class="sign" aria-hidden="true">${sign}</span>${"  ".repeat(depth)}${text}</span>`);
  };
  // state: "cmp" compares with o; "none" compares nothing; "only" is inside a member other lacks.
  const walk = (v: J, o: J | undefined, has: boolean, depth: number, prefix: string, comma: string, state: "cmp" | "none" | "only") => {
    const missing = state === "cmp" && !has;
    const inner = missing ? "only" : state;
    const whole = missing || state === "only" ? "only" : "";
    if (isObj(v) && Object.keys(v).length > 0) {
      const keys = Object.keys(v).sort(byCodePoint);
      line(depth, `${prefix}{`, whole, missing);
      keys.forEach((k, i) => {
        const oh = isObj(o) && Object.prototype.hasOwnProperty.call(o, k);
        walk(v[k], oh ? (o as Record<string, J>)[k] : undefined, oh, depth + 1, `<span class="k">${esc(JSON.stringify(k))}</span>: `, i < keys.length - 1 ? "," : "", inner);
      });
      line(depth, `}${comma}`, whole, false);
      return;
    }
    const differs = state === "cmp" && has && JSON.stringify(v) !== JSON.stringify(o);
    line(depth, `${prefix}<span class="v">${esc(JSON.stringify(v))}</span>${comma}`, whole || (differs ? "changed" : ""), missing || differs);
  };
  walk(value as J, other as J, true, 0, "", "", compare ? "cmp" : "none");
  return { html: lines.join(""), marked };
}
