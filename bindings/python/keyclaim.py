"""A minimal Python host of keyclaim's WebAssembly module on wasmtime, written from
bindings/ABI.md alone: WASI preview 1 from wasmtime (real clocks and randomness), one instance,
the call sequence of ABI section 5, trackers as handles (section 9)."""

import json

import wasmtime

ABI_VERSION = 1
OPERATIONS = (
    "parse_claim", "plan_fanout", "select_keys", "complete_client",
    "complete_federation", "classify_claim", "tracker_run", "complete_upstream",
)


class KeyclaimError(Exception):
    """An error envelope answered by the module: {"errcode", "error"}."""

    def __init__(self, errcode, message):
        super().__init__(f"{errcode}: {message}")
        self.errcode = errcode


class Keyclaim:
    """One instance of the module; one call at a time (ABI section 11)."""

    def __init__(self, wasm: bytes):
        engine = wasmtime.Engine()
        module = wasmtime.Module(engine, wasm)  # compile once; a host keeps it per process
        linker = wasmtime.Linker(engine)
        linker.define_wasi()
        self._store = wasmtime.Store(engine)
        self._store.set_wasi(wasmtime.WasiConfig())  # no args, env or files; real clocks
        instance = linker.instantiate(self._store, module)
        self._x = instance.exports(self._store)
        self._x["_initialize"](self._store)  # once, before anything else (ABI section 3)
        self._memory = self._x["memory"]
        version = self._x["keyclaim_abi_version"](self._store)
        if version != ABI_VERSION:
            raise RuntimeError(f"module ABI version {version}, this host implements {ABI_VERSION}")

    def invoke(self, op: str, data) -> bytes:
        """Runs an operation on data (str or bytes of UTF-8 JSON); returns the envelope's bytes."""
        if op not in OPERATIONS:
            raise ValueError(f"unknown operation {op}")
        fn = self._x["keyclaim_" + op]
        return self._call(lambda p, n: fn(self._store, p, n), data)

    def call(self, op: str, data):
        """Like invoke, but returns the parsed result, or raises KeyclaimError."""
        return unwrap(self.invoke(op, data))

    def tracker_new(self, config="") -> int:
        fn = self._x["keyclaim_tracker_new"]
        return unwrap(self._call(lambda p, n: fn(self._store, p, n), config))["handle"]

    def tracker_step(self, handle: int, step: str, data) -> bytes:
        if step not in ("plan", "observe"):
            raise ValueError(f"unknown tracker step {step}")
        fn = self._x["keyclaim_tracker_" + step]
        return self._call(lambda p, n: fn(self._store, handle, p, n), data)

    def tracker_free(self, handle: int) -> bool:
        return self._x["keyclaim_tracker_free"](self._store, handle) == 0

    # ABI section 5: alloc, write, call, split the result as unsigned (wasmtime hands an i64 over
    # as a signed int), copy the output, free both buffers.
    def _call(self, fn, data) -> bytes:
        raw = data.encode() if isinstance(data, str) else bytes(data)
        ptr = 0
        if raw:
            ptr = self._x["keyclaim_alloc"](self._store, len(raw)) & 0xFFFFFFFF
            if ptr == 0:
                raise KeyclaimError("M_TOO_LARGE", f"input of {len(raw)} bytes is above the module's limit")
            self._memory.write(self._store, raw, ptr)
        try:
            r = fn(ptr, len(raw)) & 0xFFFFFFFFFFFFFFFF
            out_ptr, out_len = r >> 32, r & 0xFFFFFFFF
            out = bytes(self._memory.read(self._store, out_ptr, out_ptr + out_len))
            self._x["keyclaim_free"](self._store, out_ptr)
            return out
        finally:
            if ptr:
                self._x["keyclaim_free"](self._store, ptr)


def unwrap(envelope: bytes):
    v = json.loads(envelope)
    if "result" in v:
        return v["result"]
    raise KeyclaimError(v["errcode"], v["error"])


def canonical(v) -> str:
    """Matrix canonical JSON: members sorted by code point (Python's str order), no white space,
    strings escaping only '"', '\\' and U+0000-U+001F (the short forms \\b \\f \\n \\r \\t), integers."""
    if v is None or isinstance(v, bool):
        return json.dumps(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        raise ValueError(f"not a canonical JSON number: {v}")
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ",".join(canonical(x) for x in v) + "]"
    return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + canonical(v[k]) for k in sorted(v)) + "}"
