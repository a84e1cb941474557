"""complete_client through the installed keyclaim package: the typed API (a dict in, with the
remote answer as the bytes received; a dict out) against the raw escape hatch (the JSON document
in, the envelope bytes out) on the same Engine, interleaved call by call. The inputs are those of
bindings/go's and bindings/node's benchmarks: every device remote, answered by its server with a
signed key per device, ten devices per user. `make bench-python` runs it.

Usage: python bench.py [calls per size]"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from typing import Any, Dict, List

from importlib.metadata import version

import keyclaim

KEY = "zKbLg+NrIjpnagy+pIY6uPL4ZwEG2v+8F9lmgsnlZzs"
SIG = "FLWxXqGbwrb8SM3Y795eB6OA8bwBcoMZFXBqnTn58AYWZSqiD45tlBVcDa2L7RwdKXebW/VzDlnfVJ+9jok1Bw"


def complete_client_input(n: int) -> Dict[str, Any]:
    request: Dict[str, Any] = {"one_time_keys": {}}
    answer: Dict[str, Any] = {"failures": {}, "one_time_keys": {}}
    for d in range(n):
        user, dev = f"@user{d // 10:05d}:remote.example", f"DEVICE{d % 10:02d}"
        request["one_time_keys"].setdefault(user, {})[dev] = "signed_curve25519"
        answer["one_time_keys"].setdefault(user, {})[dev] = {
            f"signed_curve25519:AAAA{d:04d}": {"key": KEY, "signatures": {user: {f"ed25519:{dev}": SIG}}}}
    request["timeout"] = 10000
    return {"server_name": "example.org", "request": request,
            "remote": {"remote.example": {"status": 200, "body": json.dumps(answer).encode()}}}


def main() -> None:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    engine = keyclaim.Engine(os.environ.get("KEYCLAIM_WASM") or None, pool_size=1)
    print(f"python {platform.python_version()}, wasmtime {version('wasmtime')}, keyclaim "
          f"{keyclaim.__version__}; {calls} calls per size and API after 20 to warm up, interleaved; medians")
    for n in (1, 100, 1000):
        data = complete_client_input(n)
        raw_input = keyclaim._json.encode_input("complete_client", data)  # encoded once, outside the timing
        env = engine.invoke("complete_client", raw_input)
        assert env.startswith(b'{"result":'), env[:200]
        typed = engine.complete_client(data)
        assert len(typed["one_time_keys"]) == (n + 9) // 10 and not typed["failures"]
        for _ in range(20):
            engine.invoke("complete_client", raw_input)
            engine.complete_client(data)
        t_raw: List[float] = []
        t_typed: List[float] = []
        c_raw: List[float] = []
        c_typed: List[float] = []
        for _ in range(calls):
            t0, c0 = time.perf_counter(), time.thread_time()
            out_raw = engine.invoke("complete_client", raw_input)
            t1, c1 = time.perf_counter(), time.thread_time()
            out_typed = engine.complete_client(data)
            t2, c2 = time.perf_counter(), time.thread_time()
            del out_raw, out_typed  # freed outside the timing, both alike
            t_raw.append(t1 - t0)
            t_typed.append(t2 - t1)
            c_raw.append(c1 - c0)
            c_typed.append(c2 - c1)
        med = [statistics.median(x) * 1e6 for x in (t_raw, t_typed, c_raw, c_typed)]
        print(f"complete_client devices={n}: wall raw {med[0]:.0f} µs, typed {med[1]:.0f} µs, "
              f"typed/raw {med[1] / med[0]:.2f}x; CPU raw {med[2]:.0f} µs, typed {med[3]:.0f} µs, "
              f"typed/raw {med[3] / med[2]:.2f}x")

if __name__ == "__main__":
    main()
