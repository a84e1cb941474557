// The README's examples, extracted from the installed package's README.md, compiled with tsc
// (strict) and run as written.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
const readme = readFileSync(join(dirname(require.resolve('keyclaim/package.json')), 'README.md'), 'utf8');

function example(name) {
  const m = readme.match(new RegExp(`<!-- example: ${name} -->\\n\`\`\`ts\\n([\\s\\S]*?)\`\`\`\\n`));
  assert.ok(m, `README has no "${name}" example`);
  const lines = m[1].trimEnd().split('\n');
  assert.ok(lines.length <= 12, `the ${name} example has ${lines.length} lines`);
  return m[1];
}

const dir = join(here, 'examples');
mkdirSync(dir, { recursive: true });
writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify({
  compilerOptions: {
    target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', lib: ['ES2022', 'esnext.disposable'],
    types: ['node'], strict: true, noUncheckedIndexedAccess: true, outDir: 'out', skipLibCheck: false,
  },
  include: ['*.ts'],
}));
writeFileSync(join(dir, 'package.json'), '{"type":"module"}');
for (const name of ['homeserver', 'client']) writeFileSync(join(dir, `${name}.ts`), example(name));
// Types only, never run: the compile fails if `new Engine()` type-checks (engines come from load()).
writeFileSync(join(dir, 'types.ts'), 'import { Engine } from "keyclaim";\n// @ts-expect-error the constructor is private\nexport const e = new Engine();\n');
const tsc = join(dirname(require.resolve('typescript/package.json')), 'bin', 'tsc');
let compiled;
const compile = () => (compiled ??= execFileSync(process.execPath, [tsc, '-p', dir], { encoding: 'utf8' }));

const run = (name) => {
  compile();
  return execFileSync(process.execPath, [join(dir, 'out', `${name}.js`)], { encoding: 'utf8' });
};

test('README homeserver example: compiles and completes the claim', () => {
  const out = run('homeserver');
  assert.equal(out, `[ 'remote.example' ] {"failures":{},"one_time_keys":{"@alice:example.org":{"ALICEDEV":{"signed_curve25519:AAAAHg":"j3fR3HemM16M7CWhoI4Sk5ZsdmdfQHsKL1xuSft6MSw"}},"@bob:remote.example":{"BOBDEV":{"signed_curve25519:AAAAAQ":{"key":"bobkey"}}}}}\n`);
});

test('README client example: compiles, classifies and backs the failed server off', () => {
  const out = run('client').split('\n');
  assert.equal(out[0], "{ CAROLDEV: { outcome: 'server_failed' } }");
  const m = out[1].match(/^\{ '@carol:down\.example': \{ CAROLDEV: (\d+) \} \}$/);
  assert.ok(m, out[1]);
  const retryIn = Number(m[1]) - Date.now();
  assert.ok(retryIn > 10_000 && retryIn <= 15_000, `retry in ${retryIn} ms`);
});
