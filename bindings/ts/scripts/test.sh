#!/usr/bin/env bash
# make test-ts: installs the package the way a user would and tests it there. Builds the package
# (tsc, with dist/keyclaim.wasm from `make wasm`), packs it (npm pack), installs the tarball into
# a scratch project under var/ts-test together with the test tools pinned in package.json
# (typescript, @types/node, playwright-core), and runs test/*.test.mjs there with node --test:
# they import the package by name. Installs Debian's chromium first if it is missing.
# Usage: scripts/test.sh [test|bench] (bench runs test/bench.mjs in the same scratch project).
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
pkg=$root/bindings/ts
var=$root/var/ts-test
what=${1:-test}

if [ -z "${KEYCLAIM_CHROMIUM:-}" ] && ! command -v chromium >/dev/null && [ ! -x /usr/lib/chromium/chromium ]; then
  echo "== installing Debian's chromium (for the browser tests)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

cd "$pkg"
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
rm -rf "$var/pack" && mkdir -p "$var/pack" "$var/project"
npm pack --silent --pack-destination "$var/pack" >/dev/null   # prepack: npm run build
tarball=$(ls "$var/pack"/keyclaim-*.tgz)

cd "$var/project"
node -e '
  const dev = require(process.argv[1]).devDependencies;
  const deps = { keyclaim: "file:" + process.argv[2] };
  for (const name of ["typescript", "@types/node", "playwright-core"]) deps[name] = dev[name];
  require("fs").writeFileSync("package.json", JSON.stringify({ name: "keyclaim-scratch", private: true, type: "module", dependencies: deps }, null, 2) + "\n");
' "$pkg/package.json" "$tarball"
rm -rf package-lock.json node_modules/keyclaim test
npm install --prefer-offline --no-audit --no-fund --loglevel=error
cp -r "$pkg/test" test
export KEYCLAIM_REPO=$root
if [ "$what" = bench ]; then
  node test/bench.mjs "${@:2}"
else
  node --test test/*.test.mjs
fi
