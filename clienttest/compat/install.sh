#!/usr/bin/env bash
# Installs the client libraries of the compatibility matrix (README.md here), idempotently:
# quick when everything is in place (each step is skipped while its input file is unchanged).
#   - a venv per Python library under var/compat/ (matrix-nio 0.26.0 with vodozemac, 0.25.2 with
#     python-olm, mautrix-python with python-olm; python-olm builds libolm with cmake and a C++
#     compiler, installed with apt-get when missing);
#   - the npm package of matrix-sdk-crypto in clienttest/ (npm ci, shared with make test-client);
#   - the mautrix-go harness, built with the goolm tag from its own Go module into var/compat/bin.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
dir=var/compat
mkdir -p "$dir/bin"

# A stamp per step: the step runs again only when its input changed (or the output is missing).
fresh() { # fresh STAMP INPUT...: true when STAMP records exactly the inputs' current checksum
  local sum; sum=$(cat "${@:2}" | sha256sum | cut -d' ' -f1)
  [[ -f $1 && $(cat "$1") == "$sum" ]]
}
stamp() { cat "${@:2}" | sha256sum | cut -d' ' -f1 >"$1"; }

need_apt=()
command -v cmake >/dev/null || need_apt+=(cmake)
command -v g++ >/dev/null || need_apt+=(g++)
command -v make >/dev/null || need_apt+=(make)
python3 -c 'import ensurepip, venv' 2>/dev/null || need_apt+=(python3-venv)
python3 -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' ||
  need_apt+=(python3-dev)
if ((${#need_apt[@]})); then
  echo "install-compat: apt-get install ${need_apt[*]} (python-olm builds libolm and a C extension)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

venv() { # venv NAME REQUIREMENTS
  local v=$dir/$1 req=$2
  if [[ -x $v/bin/python ]] && fresh "$v/.installed" "$req"; then return; fi
  echo "install-compat: $v from $req"
  [[ -x $v/bin/python ]] || python3 -m venv "$v"
  "$v/bin/python" -m pip install -q --disable-pip-version-check -r "$req"
  stamp "$v/.installed" "$req"
}
venv nio-0.26.0 clienttest/compat/nio/requirements-0.26.0.txt
venv nio-0.25.2 clienttest/compat/nio/requirements-0.25.2.txt
venv mautrix-python clienttest/compat/mautrixpy/requirements.txt

if [[ ! -d clienttest/node_modules/@matrix-org/matrix-sdk-crypto-wasm ]] || ! fresh "$dir/.npm" clienttest/package-lock.json; then
  echo "install-compat: npm ci in clienttest/"
  (cd clienttest && npm ci --no-audit --no-fund)
  stamp "$dir/.npm" clienttest/package-lock.json
fi

# go build is itself incremental: a no-op when nothing changed.
(cd clienttest/compat/mautrixgo && go build -tags goolm -trimpath -o "$root/$dir/bin/mautrixgo-harness" .)
echo "install-compat: the libraries are in place"
