"""The host of keyclaim.wasm on wasmtime (bindings/ABI.md): the module compiled once per process,
a pool of instances each serving one call at a time, trackers pinned to an instance."""

from __future__ import annotations

import ctypes
import hashlib
import os
import threading
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union, cast

import wasmtime

from . import _json
from ._errors import EngineClosedError, KeyclaimError, ModuleError, TrackerLostError, TrapError
from ._types import (
    ClassifyClaimInput, ClassifyClaimResult, CompleteClientInput, CompleteClientResult,
    CompleteFederationInput, CompleteFederationResult, CompleteUpstreamInput,
    CompleteUpstreamResult, ObserveInput, ObserveResult, ParseClaimInput, ClaimRequest,
    PlanFanoutInput, PlanFanoutResult, PlanInput, PlanResult, SelectKeysInput, SelectKeysResult,
    TrackerConfig, TrackerRunInput, TrackerRunResult,
)

__all__ = ["ABI_VERSION", "MAX_INPUT_BYTES", "OPERATIONS", "Engine", "Tracker", "Stats"]

#: The version of bindings/ABI.md this package implements; another module is refused.
ABI_VERSION = 1
#: The largest input the module takes (keyclaim_alloc answers 0 above it).
MAX_INPUT_BYTES = 64 << 20
#: The operations, in the order of ABI section 8.
OPERATIONS: Tuple[str, ...] = (
    "parse_claim", "plan_fanout", "select_keys", "complete_client", "complete_federation",
    "classify_claim", "tracker_run", "complete_upstream",
)
_EXPORTS = ("memory", "_initialize", "keyclaim_abi_version", "keyclaim_alloc", "keyclaim_free",
            "keyclaim_tracker_new", "keyclaim_tracker_plan", "keyclaim_tracker_observe",
            "keyclaim_tracker_free") + tuple("keyclaim_" + op for op in OPERATIONS)
# An instance keeps one input buffer between calls for inputs up to this size (ABI section 5
# lets the host reuse it), so an ordinary call is two calls into the module instead of four.
_KEEP_INPUT = 256 << 10
_U32 = 0xFFFFFFFF
_U64 = 0xFFFFFFFFFFFFFFFF

#: What an operation's input may be: a (typed) dict, or the JSON document as str or bytes.
Input = Union[Mapping[str, Any], str, bytes, bytearray, memoryview]
# wasmtime raises Trap for a trap and WasmtimeError (ExitTrap) when the guest calls proc_exit,
# which the Go runtime does when it dies (out of memory).
_WASM_FAILURES = (wasmtime.Trap, wasmtime.WasmtimeError)

# The direct path into wasmtime's C API. wasmtime-py's Func.__call__ looks the function's type up,
# converts each argument and allocates on every call: about 30 µs, a third of a small operation.
# Our exports' types are fixed by the ABI and checked once per instance (_check_type), so a call
# can go straight to wasmtime_func_call_unchecked with an argument array kept per function. This
# uses wasmtime-py's internals (its _ffi module, Func._func, Store._context), which is why the
# dependency is pinned to one major version; without them the public API is used.
try:
    from wasmtime import _ffi as _wffi

    _call_unchecked: Any = _wffi.wasmtime_func_call_unchecked
    _ValRaw: Any = _wffi.wasmtime_val_raw
    _TrapPtr: Any = ctypes.POINTER(_wffi.wasm_trap_t)
    _memory_data: Any = _wffi.wasmtime_memory_data
    _memory_size: Any = _wffi.wasmtime_memory_data_size
    _FAST = True
except (ImportError, AttributeError):  # pragma: no cover - another wasmtime-py
    _FAST = False

# The ABI's export types (ABI section 4): parameters and result.
_SIGNATURES: Dict[str, Tuple[Tuple[str, ...], Tuple[str, ...]]] = {
    "keyclaim_alloc": (("i32",), ("i32",)),
    "keyclaim_free": (("i32",), ()),
    "keyclaim_tracker_new": (("i32", "i32"), ("i64",)),
    "keyclaim_tracker_plan": (("i32", "i32", "i32"), ("i64",)),
    "keyclaim_tracker_observe": (("i32", "i32", "i32"), ("i64",)),
    "keyclaim_tracker_free": (("i32",), ("i32",)),
    **{"keyclaim_" + op: (("i32", "i32"), ("i64",)) for op in OPERATIONS},
}

#: A bound export: integer arguments in, its integer result (0 when it has none) out.
_Call = Callable[..., int]


def _bind(store: wasmtime.Store, name: str, func: wasmtime.Func) -> _Call:
    """func as a _Call, after checking its type against the ABI."""
    params, results = _SIGNATURES[name]
    ty = func.type(store)
    got = (tuple(str(t) for t in ty.params), tuple(str(t) for t in ty.results))
    if got != (params, results):
        raise ModuleError(f"keyclaim: the module's {name} has type {got[0]} -> {got[1]}, the ABI "
                          f"says {params} -> {results}")
    i64 = results == ("i64",)
    if not _FAST:
        def public(*args: int) -> int:
            r = func(store, *args)
            return int(r) if r is not None else 0
        return public
    try:
        ctx = store._context()
        fref = ctypes.byref(func._func)
    except AttributeError:  # pragma: no cover - another wasmtime-py
        return lambda *args: int(func(store, *args) or 0)
    vals = (_ValRaw * max(len(params), len(results)))()
    n = len(vals)

    def direct(*args: int) -> int:
        for i, a in enumerate(args):
            vals[i].i32 = a  # ctypes stores the low 32 bits: a pointer above 2 GiB is fine
        trap = _TrapPtr()
        err = _call_unchecked(ctx, fref, vals, n, ctypes.byref(trap))
        if err:
            raise wasmtime.WasmtimeError._from_ptr(err)  # ExitTrap when the guest exited
        if trap:
            raise wasmtime.Trap._from_ptr(trap)
        return int(vals[0].i64 if i64 else vals[0].i32) if results else 0

    direct.__wrapped__ = func  # type: ignore[attr-defined]
    return direct


class _Compiled:
    """A module compiled once: the wasmtime Engine, Module and a pre-linked instance factory."""

    def __init__(self, wasm: bytes, cache: Union[bool, str]) -> None:
        config = wasmtime.Config()
        if cache:
            try:
                config.cache = cache
            except wasmtime.WasmtimeError:  # no usable cache directory: compile every time
                config = wasmtime.Config()
        self.engine = wasmtime.Engine(config)
        try:
            self.module = wasmtime.Module(self.engine, wasm)
        except wasmtime.WasmtimeError as e:
            raise ModuleError(f"keyclaim: not a usable WebAssembly module: {e}") from e
        linker = wasmtime.Linker(self.engine)
        linker.define_wasi()
        try:
            self.pre = linker.instantiate_pre(self.module)
        except wasmtime.WasmtimeError as e:
            raise ModuleError(f"keyclaim: the module's imports cannot be provided: {e}") from e


_compiled_lock = threading.Lock()
_compiled: Dict[Tuple[str, Union[bool, str]], _Compiled] = {}


def _compile(wasm: bytes, cache: Union[bool, str]) -> _Compiled:
    """The module compiled, once per process for the same bytes (compiling takes seconds; with
    the cache, a new process reads wasmtime's on-disk cache instead)."""
    key = (hashlib.sha256(wasm).hexdigest(), cache)
    with _compiled_lock:
        c = _compiled.get(key)
        if c is None:
            c = _compiled[key] = _Compiled(wasm, cache)
        return c


class _Instance:
    """One instance in its own Store. Not thread-safe: the pool hands it to one caller at a time."""

    def __init__(self, compiled: _Compiled, max_memory: int, guest_stderr: bool) -> None:
        store = wasmtime.Store(compiled.engine)
        wasi = wasmtime.WasiConfig()  # real clocks and randomness; no args, env or files
        if guest_stderr:
            wasi.inherit_stderr()  # the Go runtime's fatal error text, if it ever dies
        store.set_wasi(wasi)
        store.set_limits(memory_size=max_memory)
        try:
            found = compiled.pre.instantiate(store).exports(store)
            exports = {name: found[name] for name in found}
        except _WASM_FAILURES as e:
            raise ModuleError(f"keyclaim: instantiating the module: {e}") from e
        init = exports.get("_initialize")
        version_fn = exports.get("keyclaim_abi_version")
        if not isinstance(init, wasmtime.Func) or not isinstance(version_fn, wasmtime.Func):
            raise ModuleError("keyclaim: not a keyclaim module: no _initialize or "
                              "keyclaim_abi_version export")
        try:
            init(store)  # once, before anything else (ABI section 3); wasmtime does not call it
            version = version_fn(store)
        except _WASM_FAILURES as e:
            raise ModuleError(f"keyclaim: initialising the module: {e}") from e
        if version != ABI_VERSION:
            raise ModuleError(
                f"keyclaim: the module implements keyclaim ABI version {version}, this package "
                f"(keyclaim for Python) implements version {ABI_VERSION}: use a module and a "
                f"package of the same ABI version")
        missing = [name for name in _EXPORTS if name not in exports]
        if missing:
            raise ModuleError(f"keyclaim: the module lacks the exports {', '.join(missing)}")
        mem = exports["memory"]
        if not isinstance(mem, wasmtime.Memory):
            raise ModuleError("keyclaim: the module's memory export is not a memory")
        self.store = store
        self.memory = mem

        def fn(name: str) -> _Call:
            f = exports[name]
            if not isinstance(f, wasmtime.Func):
                raise ModuleError(f"keyclaim: the module's {name} is not a function")
            return _bind(store, name, f)

        self.alloc = fn("keyclaim_alloc")
        self.free = fn("keyclaim_free")
        self.ops: Dict[str, _Call] = {op: fn("keyclaim_" + op) for op in OPERATIONS}
        self.tracker_new = fn("keyclaim_tracker_new")
        self.tracker_steps: Dict[str, _Call] = {
            "plan": fn("keyclaim_tracker_plan"), "observe": fn("keyclaim_tracker_observe")}
        self.tracker_free = fn("keyclaim_tracker_free")
        # The memory's size and address, asked anew after every call: a call may grow (and so
        # move) the memory.
        self._size: Callable[[], int] = lambda: int(mem.data_len(store))
        self._addr: Callable[[], int] = lambda: ctypes.addressof(mem.data_ptr(store).contents)
        if _FAST:
            ctx, mref = store._context(), ctypes.byref(mem._memory)
            self._size = lambda: int(_memory_size(ctx, mref))
            self._addr = lambda: ctypes.cast(_memory_data(ctx, mref), ctypes.c_void_p).value or 0
        self.buf = 0  # the kept input buffer (a pointer) and its size
        self.buf_cap = 0
        self.broken = False
        self.pooled = False

    def memory_size(self) -> int:
        return self._size()

    def _base(self) -> int:
        return self._addr()

    def call(self, fn: _Call, args: Tuple[int, ...], data: bytes) -> bytes:
        """ABI section 5: write data into a buffer, call fn(*args, ptr, len), split the i64
        result as unsigned, copy the output out, free it. A trap breaks the instance."""
        n = len(data)
        if n > MAX_INPUT_BYTES:
            raise KeyclaimError("M_TOO_LARGE", f"input of {n} bytes exceeds the module's limit "
                                               f"of {MAX_INPUT_BYTES} bytes")
        try:
            ptr, temp = 0, False
            if n:
                if n <= self.buf_cap:
                    ptr = self.buf
                else:
                    size = n
                    if n <= _KEEP_INPUT:
                        if self.buf:
                            self.free(self.buf)
                            self.buf = self.buf_cap = 0
                        size = min(max(4096, 1 << (n - 1).bit_length()), _KEEP_INPUT)
                    ptr = self.alloc(size) & _U32  # an i32 arrives signed
                    if ptr == 0:
                        raise KeyclaimError("M_TOO_LARGE", f"the module refused a buffer of "
                                                           f"{size} bytes")
                    if n <= _KEEP_INPUT:
                        self.buf, self.buf_cap = ptr, size
                    else:
                        temp = True
                if ptr + n > self.memory_size():
                    raise TrapError(f"keyclaim_alloc returned a buffer outside memory: {ptr}")
                ctypes.memmove(self._base() + ptr, data, n)
            r = fn(*args, ptr, n) & _U64  # an i64 arrives signed
            out_ptr, out_len = r >> 32, r & _U32
            if out_ptr + out_len > self.memory_size():
                raise TrapError(f"the module answered a buffer outside memory: {out_ptr}+{out_len}")
            out = ctypes.string_at(self._base() + out_ptr, out_len)  # a copy
            self.free(out_ptr)
            if temp:
                self.free(ptr)
            return out
        except _WASM_FAILURES as e:
            self.broken = True
            raise TrapError(f"keyclaim: the instance trapped and was discarded: {e}") from e
        except TrapError:
            self.broken = True
            raise


@dataclass(frozen=True)
class Stats:
    """A snapshot of an Engine's instances."""

    instances: int  #: instances in the pool, idle or serving a call (at most pool_size)
    idle: int  #: pooled instances waiting for a call
    trackers: int  #: open Trackers, each holding an instance outside the pool
    created: int  #: instances created since the Engine was made
    recycled: int  #: instances discarded after a trap or for their memory size


def _read_module(module: Union[bytes, bytearray, memoryview, str, os.PathLike[str], None]) -> bytes:
    if module is None:
        from importlib import resources

        try:
            return resources.files("keyclaim").joinpath("keyclaim.wasm").read_bytes()
        except FileNotFoundError:
            raise ModuleError(
                "keyclaim: this installation has no keyclaim.wasm (a wheel built without "
                "`make wasm` first?): pass Engine(module=path_or_bytes)") from None
    if isinstance(module, (bytes, bytearray, memoryview)):
        return bytes(module)
    with open(module, "rb") as f:
        return f.read()


class Engine:
    """keyclaim's module on wasmtime: one per process, shared by every thread.

    ``module`` is the module's bytes or a path to it; by default the keyclaim.wasm shipped in
    this package. The module is compiled once per process (and, with ``cache``, kept in
    wasmtime's on-disk cache across processes; a str is a wasmtime cache configuration file).
    Calls run on a pool of at most ``pool_size`` instances (default: the number of CPUs), each
    serving one call at a time, so that threads run in parallel (wasmtime releases the GIL while
    WebAssembly runs). Every instance's memory is capped at ``max_memory_mib``: a call needing
    more traps (:class:`TrapError`) and its instance is discarded. An instance whose memory grew
    past ``recycle_memory_mib`` is replaced after its call. ``guest_stderr`` passes what the
    module writes to stderr (only the Go runtime's fatal errors) to this process's stderr.
    """

    def __init__(
        self,
        module: Union[bytes, bytearray, memoryview, str, os.PathLike[str], None] = None,
        *,
        pool_size: Optional[int] = None,
        max_memory_mib: int = 256,
        recycle_memory_mib: int = 64,
        cache: Union[bool, str] = True,
        guest_stderr: bool = True,
    ) -> None:
        if pool_size is None:
            pool_size = os.cpu_count() or 1
        if pool_size < 1:
            raise ValueError("keyclaim: pool_size must be at least 1")
        if not 4 <= max_memory_mib <= 4096:
            raise ValueError("keyclaim: max_memory_mib must be between 4 and 4096")
        if recycle_memory_mib < 1:
            raise ValueError("keyclaim: recycle_memory_mib must be at least 1")
        self._compiled = _compile(_read_module(module), cache)
        self._pool_size = pool_size
        self._max_memory = max_memory_mib << 20
        self._recycle = recycle_memory_mib << 20
        self._guest_stderr = guest_stderr
        # re-entrant: Tracker.__del__ may run (garbage collection) while this thread holds it
        self._cond = threading.Condition(threading.RLock())
        self._idle: List[_Instance] = []
        self._live = 0  # pooled instances, idle or busy
        self._closed = False
        self._created = 0
        self._recycled = 0
        self._trackers = 0
        self._release(self._acquire())  # one instance now: checks the ABI version and exports

    # -- the pool

    def _new_instance(self) -> _Instance:
        inst = _Instance(self._compiled, self._max_memory, self._guest_stderr)
        with self._cond:
            self._created += 1
        return inst

    def _acquire(self) -> _Instance:
        with self._cond:
            while True:
                if self._closed:
                    raise EngineClosedError()
                if self._idle:
                    return self._idle.pop()
                if self._live < self._pool_size:
                    self._live += 1
                    break
                self._cond.wait()
        try:
            inst = self._new_instance()
        except BaseException:
            with self._cond:
                self._live -= 1
                self._cond.notify()
            raise
        inst.pooled = True
        return inst

    def _pin(self) -> _Instance:
        """An instance outside the pool for a Tracker: an idle one, or a new one. Trackers never
        wait for the pool, so a thread holding one can always make other calls."""
        with self._cond:
            if self._closed:
                raise EngineClosedError()
            self._trackers += 1
            if self._idle:
                inst = self._idle.pop()
                self._live -= 1
                inst.pooled = False
                self._cond.notify()
                return inst
        try:
            return self._new_instance()
        except BaseException:
            with self._cond:
                self._trackers -= 1
            raise

    def _release(self, inst: _Instance) -> None:
        """Back to the pool; or discarded after a trap, past the memory bound, or once closed."""
        too_big = not inst.broken and inst.memory_size() > self._recycle
        with self._cond:
            if inst.broken or too_big or self._closed:
                if not self._closed:
                    self._recycled += 1
                if inst.pooled:
                    self._live -= 1
                    self._cond.notify()
                return
            if not inst.pooled:
                if self._live >= self._pool_size:
                    return  # the pool is full: drop it
                self._live += 1
                inst.pooled = True
            self._idle.append(inst)
            self._cond.notify()

    def _unpin(self, inst: Optional[_Instance]) -> None:
        with self._cond:
            self._trackers -= 1
        if inst is not None:
            self._release(inst)

    def _drop_pinned(self) -> None:
        """A Tracker was garbage-collected unclosed: its instance (and tracker) just go away."""
        with self._cond:
            self._trackers -= 1

    def stats(self) -> Stats:
        with self._cond:
            return Stats(instances=self._live, idle=len(self._idle), trackers=self._trackers,
                         created=self._created, recycled=self._recycled)

    def close(self) -> None:
        """Drops every idle instance; later calls raise EngineClosedError. Calls in flight finish;
        open Trackers keep their instance until they are closed."""
        with self._cond:
            self._closed = True
            self._live -= len(self._idle)
            self._idle.clear()
            self._cond.notify_all()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the raw escape hatch

    def invoke(self, op: str, data: Union[bytes, str]) -> bytes:
        """Runs operation ``op`` on the JSON document ``data`` and returns the module's envelope
        unchanged: ``{"result":...}`` or ``{"errcode":...,"error":...}``, canonical JSON, byte for
        byte what the native engine answers. Raises only when no envelope was obtained:
        KeyclaimError for an unknown op or an input above 64 MiB, TrapError after a trap."""
        if op not in OPERATIONS:
            raise KeyclaimError("M_UNKNOWN", f"unknown operation {op!r}")
        raw = _json.encode_input(op, data)
        inst = self._acquire()
        try:
            return inst.call(inst.ops[op], (), raw)
        finally:
            self._release(inst)

    def _typed(self, op: str, data: Input) -> Any:
        return _json.result(self.invoke(op, _json.encode_input(op, data)))

    # -- the typed operations (ABI section 8); each raises KeyclaimError for an error answer

    def parse_claim(self, data: ParseClaimInput | Input) -> ClaimRequest:
        """8.1: validates a claim request body; the canonical request."""
        return cast(ClaimRequest, self._typed("parse_claim", data))

    def plan_fanout(self, data: PlanFanoutInput | Input) -> PlanFanoutResult:
        """8.2: the local users, and the federation claim body of each remote server."""
        return cast(PlanFanoutResult, self._typed("plan_fanout", data))

    def select_keys(self, data: SelectKeysInput | Input) -> SelectKeysResult:
        """8.3: claims from an in-memory key inventory."""
        return cast(SelectKeysResult, self._typed("select_keys", data))

    def complete_client(self, data: CompleteClientInput | Input) -> CompleteClientResult:
        """8.4: the complete answer to a client from local keys and remote answers."""
        return cast(CompleteClientResult, self._typed("complete_client", data))

    def complete_federation(self, data: CompleteFederationInput | Input) -> CompleteFederationResult:
        """8.5: the answer to another server's claim."""
        return cast(CompleteFederationResult, self._typed("complete_federation", data))

    def classify_claim(self, data: ClassifyClaimInput | Input) -> ClassifyClaimResult:
        """8.6: what a claim answer means for each requested device (client side)."""
        return cast(ClassifyClaimResult, self._typed("classify_claim", data))

    def tracker_run(self, data: TrackerRunInput | Input) -> TrackerRunResult:
        """8.7: a fresh tracker driven through steps in one call."""
        return cast(TrackerRunResult, self._typed("tracker_run", data))

    def complete_upstream(self, data: CompleteUpstreamInput | Input) -> CompleteUpstreamResult:
        """8.8: completes an existing homeserver's claim answer (proxy mode)."""
        return cast(CompleteUpstreamResult, self._typed("complete_upstream", data))

    def tracker(self, config: TrackerConfig | Input | None = None) -> Tracker:
        """A new retry Tracker (ABI section 9); same as ``Tracker(engine, config)``."""
        return Tracker(self, config)


class Tracker:
    """A client-side retry tracker living in one instance (ABI section 9): devices without keys
    and failing servers are backed off; :meth:`plan` gives the next claim request, :meth:`observe`
    records its answer.

    It holds its instance, outside the pool, until :meth:`close` (or the end of a ``with``
    block): always close it. Its methods are thread-safe and run one at a time. If its instance
    traps, the tracker's state is lost and every later call raises TrackerLostError.
    """

    def __init__(self, engine: Engine, config: TrackerConfig | Input | None = None) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self._inst: Optional[_Instance] = None
        self._lost = False
        raw = b"" if config is None else _json.encode_input("tracker_new", config)
        inst = engine._pin()
        try:
            env = inst.call(inst.tracker_new, (), raw)
            res = _json.result(env)
            handle = res.get("handle") if isinstance(res, dict) else None
            if not isinstance(handle, int) or handle < 1:
                raise ModuleError(f"keyclaim: keyclaim_tracker_new answered no tracker handle: {env[:200]!r}")
        except BaseException:
            engine._unpin(inst)
            raise
        self._inst = inst
        self._handle = int(handle)

    @property
    def handle(self) -> int:
        """The tracker's handle in its instance."""
        return self._handle

    @property
    def closed(self) -> bool:
        return self._inst is None

    def invoke(self, step: str, data: Union[bytes, str]) -> bytes:
        """Runs the step ``"plan"`` or ``"observe"`` on the JSON document ``data``; the module's
        envelope unchanged."""
        with self._lock:
            inst = self._inst
            if self._lost:
                raise TrackerLostError("keyclaim: the tracker's instance trapped: its state is lost")
            if inst is None:
                raise EngineClosedError("keyclaim: the tracker is closed")
            fn = inst.tracker_steps.get(step)
            if fn is None:
                raise KeyclaimError("M_UNKNOWN", f"unknown tracker step {step!r}")
            raw = _json.encode_input(step, data)
            try:
                return inst.call(fn, (self._handle,), raw)
            except TrapError as e:
                if inst.broken:
                    self._inst, self._lost = None, True
                    self._engine._unpin(inst)
                    raise TrackerLostError(f"keyclaim: the tracker is lost: {e.message}") from e
                raise

    def plan(self, data: PlanInput | Input) -> PlanResult:
        """The devices backed off at ``now_ms`` and the next claim request for the others."""
        return cast(PlanResult, _json.result(self.invoke("plan", _json.encode_input("plan", data))))

    def observe(self, data: ObserveInput | Input) -> ObserveResult:
        """Records a claim answer: each device's outcome and the number of entries tracked."""
        return cast(ObserveResult,
                    _json.result(self.invoke("observe", _json.encode_input("observe", data))))

    def close(self) -> None:
        """Frees the tracker and gives its instance back. Closing twice does nothing."""
        with self._lock:
            inst, self._inst = self._inst, None
            if inst is None:
                if self._lost:
                    self._lost = False  # counted out of the engine when it was lost
                return
            try:
                inst.tracker_free(self._handle)
            except _WASM_FAILURES:
                inst.broken = True
            self._engine._unpin(inst)

    free = close

    def __del__(self) -> None:
        # Not closed: drop the instance with the tracker in it (never back to the pool, and no
        # call into it from the garbage collector), and say so, as an unclosed file does.
        if getattr(self, "_inst", None) is not None:
            self._inst = None
            self._engine._drop_pinned()
            warnings.warn(f"unclosed keyclaim Tracker {self._handle}", ResourceWarning, stacklevel=1)

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
