"""The host's contract (bindings/ABI.md sections 3, 5, 10, 11): the installed package, bodies in
every form, errors, the ABI version check, traps and recycling, trackers, and one Engine shared by
many threads."""

from __future__ import annotations

import base64
import json
import pathlib
import threading
from typing import Any, Dict, List, Tuple

import pytest
import wasmtime

import keyclaim

from conftest import PACKAGE_DIR, big_claim_body, canonical, encode, load_vectors, module_arg

SMALL = '{"body":"{\\"one_time_keys\\":{}}"}'
SMALL_WANT = b'{"result":{"one_time_keys":{},"timeout":10000}}'
REQ: keyclaim.ClaimRequest = {"one_time_keys": {
    "@alice:example.org": {"ALICEDEV": "signed_curve25519"},
    "@bob:remote.example": {"BOBDEV": "signed_curve25519"}}}


def test_installed_package_is_tested() -> None:
    """The package under test is the installed wheel, not the source tree, and it ships the module
    and its type information."""
    installed = pathlib.Path(keyclaim.__file__).resolve().parent
    assert PACKAGE_DIR not in installed.parents, f"testing the source tree: {installed}"
    assert "site-packages" in installed.parts
    assert (installed / "py.typed").is_file()
    wasm = (installed / "keyclaim.wasm").read_bytes()
    assert wasm[:4] == b"\0asm"


def test_default_module_path_and_bytes(engine: keyclaim.Engine) -> None:
    if module_arg() is None:
        shipped = pathlib.Path(keyclaim.__file__).resolve().parent / "keyclaim.wasm"
    else:
        shipped = pathlib.Path(module_arg())
    for module in (None, shipped, str(shipped), shipped.read_bytes()):
        e = keyclaim.Engine(module, pool_size=1)
        assert e.invoke("parse_claim", SMALL) == SMALL_WANT
        e.close()
        with pytest.raises(keyclaim.EngineClosedError):
            e.invoke("parse_claim", SMALL)


def test_invoke_returns_the_envelope(engine: keyclaim.Engine) -> None:
    assert engine.invoke("parse_claim", SMALL) == SMALL_WANT
    assert engine.invoke("parse_claim", SMALL.encode()) == SMALL_WANT
    out = engine.invoke("parse_claim", '{"body":"{"}')
    assert json.loads(out)["errcode"] == "M_NOT_JSON"
    # an empty input is legal at the ABI: the module answers it (M_NOT_JSON), it does not trap
    assert json.loads(engine.invoke("parse_claim", b""))["errcode"] == "M_NOT_JSON"
    # non-ASCII survives both ways, raw UTF-8 in canonical output
    out = engine.invoke("parse_claim", json.dumps({"body": json.dumps(
        {"one_time_keys": {"@é:example.org": {"DÉV": "signed_curve25519"}}})}))
    assert out == '{"result":{"one_time_keys":{"@é:example.org":{"DÉV":"signed_curve25519"}},"timeout":10000}}'.encode()


def test_errors(engine: keyclaim.Engine) -> None:
    with pytest.raises(keyclaim.KeyclaimError) as info:
        engine.invoke("no_such_op", "{}")
    assert info.value.errcode == "M_UNKNOWN"
    with pytest.raises(keyclaim.KeyclaimError) as info:
        engine.parse_claim({"flavour": "federation", "server_name": "example.org",
                            "body": {"one_time_keys": {"@bob:remote.example": {"B": "signed_curve25519"}}}})
    e = info.value
    assert (e.errcode, e.status) == ("M_INVALID_PARAM", 400)
    assert e.message == 'user "@bob:remote.example" is not local to this server ("example.org")'
    assert str(e) == "M_INVALID_PARAM: " + e.message
    assert e.to_json() == {"errcode": "M_INVALID_PARAM", "error": e.message}
    with pytest.raises(keyclaim.KeyclaimError) as info:
        engine.parse_claim({"body": "{}", "limits": {"max_body_bytes": 1}})
    assert (info.value.errcode, info.value.status) == ("M_TOO_LARGE", 413)
    with pytest.raises(keyclaim.KeyclaimError) as info:  # a member the operation does not know
        engine.plan_fanout({"server_name": "example.org", "request": REQ, "extra": 1})
    assert info.value.errcode == "M_BAD_JSON"
    with pytest.raises(TypeError):
        engine.parse_claim(42)  # type: ignore[arg-type]


def test_input_above_64_mib_is_refused_before_the_module(engine: keyclaim.Engine) -> None:
    big = b" " * (keyclaim.MAX_INPUT_BYTES + 1)
    with pytest.raises(keyclaim.KeyclaimError) as info:
        engine.invoke("parse_claim", big)
    assert info.value.errcode == "M_TOO_LARGE"
    assert engine.invoke("parse_claim", SMALL) == SMALL_WANT


def test_bodies_as_text_bytes_and_values(engine: keyclaim.Engine) -> None:
    text = json.dumps({"one_time_keys": {"@a:example.org": {"D": "signed_curve25519"}}})
    want = {"one_time_keys": {"@a:example.org": {"D": "signed_curve25519"}}, "timeout": 10000}
    for body in (text, text.encode(), bytearray(text.encode()), memoryview(text.encode()), json.loads(text)):
        assert engine.parse_claim({"body": body}) == want
    # bytes that are not UTF-8 go as body_base64: the module judges the exact bytes
    for bad in (b"\xff", b'{"one_time_keys":{"\xc3":{}}}'):
        with pytest.raises(keyclaim.KeyclaimError) as info:
            engine.parse_claim({"body": bad})
        assert info.value.errcode == "M_NOT_JSON"
        assert engine.invoke("parse_claim", encode({"body_base64": base64.b64encode(bad).decode()})) == \
            b'{"errcode":"' + info.value.errcode.encode() + b'","error":' + \
            json.dumps(info.value.message, ensure_ascii=False).encode() + b"}"
    # a remote answer of a complete_client, as bytes that are not UTF-8: a 502 failure
    got = engine.complete_client({"server_name": "example.org", "request": REQ,
                                  "remote": {"remote.example": {"status": 200, "body": b"\xfe"}}})
    assert got["failures"]["remote.example"]["status"] == 502
    assert "@bob:remote.example" not in got["one_time_keys"]
    # a remote answer as a value, and a tracker_run step body as bytes
    got = engine.complete_client({"server_name": "example.org", "request": REQ, "remote": {
        "remote.example": {"status": 200, "body": {"one_time_keys": {"@bob:remote.example": {
            "BOBDEV": {"signed_curve25519:AAAAAQ": "bobkey"}}}}}}})
    assert got == {"failures": {}, "one_time_keys": {
        "@alice:example.org": {"ALICEDEV": {}},
        "@bob:remote.example": {"BOBDEV": {"signed_curve25519:AAAAAQ": "bobkey"}}}}
    run = engine.tracker_run({"steps": [{"op": "observe", "input": {
        "now_ms": 0, "request": REQ, "body": b'{"one_time_keys":{}}'}}]})
    assert run == [{"outcomes": {"@alice:example.org": {"ALICEDEV": {"outcome": "no_keys"}},
                                 "@bob:remote.example": {"BOBDEV": {"outcome": "no_keys"}}},
                    "tracked": 2}]


def test_lone_surrogate_in_a_dict_input(engine: keyclaim.Engine) -> None:
    """A dict holding a lone surrogate (UTF-8 cannot carry it) is sent with \\u escapes, so the
    typed call gets exactly what the JSON text with that escape gets (the module refuses a lone
    surrogate escape: M_NOT_JSON)."""
    data = {"server_name": "example.org", "request": {"one_time_keys": {
        "@a:example.org": {"DEV\ud800": "signed_curve25519"}}}}
    raw = json.loads(engine.invoke("plan_fanout", encode(data)))
    assert raw["errcode"] == "M_NOT_JSON", raw
    with pytest.raises(keyclaim.KeyclaimError) as info:
        engine.plan_fanout(data)
    assert info.value.to_json() == raw
    # a JSON str holding one is ill-formed UTF-8 at the module: M_NOT_JSON, as from a network
    with pytest.raises(keyclaim.KeyclaimError) as info:
        engine.parse_claim('{"body":"\ud800"}')
    assert info.value.errcode == "M_NOT_JSON"


def test_abi_version_refused() -> None:
    """A module answering another ABI version is refused with a clear error."""
    wat = """(module
      (memory (export "memory") 1)
      (func (export "_initialize"))
      (func (export "keyclaim_abi_version") (result i32) i32.const 2))"""
    with pytest.raises(keyclaim.ModuleError, match="ABI version 2.*implements version 1"):
        keyclaim.Engine(wasmtime.wat2wasm(wat))
    with pytest.raises(keyclaim.ModuleError, match="not a keyclaim module"):
        keyclaim.Engine(wasmtime.wat2wasm('(module (memory (export "memory") 1))'))
    with pytest.raises(keyclaim.ModuleError, match="lacks the exports .*keyclaim_alloc"):
        keyclaim.Engine(wasmtime.wat2wasm("""(module
          (memory (export "memory") 1)
          (func (export "_initialize"))
          (func (export "keyclaim_abi_version") (result i32) i32.const 1))"""))
    with pytest.raises(keyclaim.ModuleError, match="not a usable WebAssembly module"):
        keyclaim.Engine(b"not wasm")


def test_initialize_is_called() -> None:
    """Without _initialize every export traps ("called before runtime initialization"), so a
    working call proves the host ran it; and it ran it once: a fresh instance's first tracker
    handle is 1."""
    e = keyclaim.Engine(module_arg(), pool_size=1)
    with e.tracker() as t:
        assert t.handle == 1


def test_trap_discards_the_instance_and_the_next_call_succeeds() -> None:
    e = keyclaim.Engine(module_arg(), pool_size=1, max_memory_mib=24)
    big = encode({"limits": {"max_body_bytes": 67108864, "max_pairs": 10000000},
                  "body": big_claim_body(200_000)})
    with pytest.raises(keyclaim.TrapError) as info:
        e.invoke("parse_claim", big)
    assert info.value.errcode == "M_UNKNOWN"
    st = e.stats()
    assert (st.recycled, st.instances, st.created) == (1, 0, 1), st
    assert e.invoke("parse_claim", SMALL) == SMALL_WANT
    st = e.stats()
    assert (st.instances, st.created) == (1, 2), st


def test_trap_loses_the_tracker_not_the_engine() -> None:
    e = keyclaim.Engine(module_arg(), pool_size=1, max_memory_mib=24)
    tracker = e.tracker()
    big = '{"now_ms":0,"request":' + big_claim_body(200_000) + "}"
    with pytest.raises(keyclaim.TrackerLostError):
        tracker.plan(big)
    with pytest.raises(keyclaim.TrackerLostError):
        tracker.plan({"now_ms": 0, "request": {"one_time_keys": {}}})
    tracker.close()
    tracker.close()
    assert e.stats().trackers == 0
    assert e.invoke("parse_claim", SMALL) == SMALL_WANT


def test_instance_recycled_past_the_memory_bound() -> None:
    e = keyclaim.Engine(module_arg(), pool_size=1, recycle_memory_mib=8)
    body = big_claim_body(40_000)
    got = e.parse_claim({"limits": {"max_body_bytes": 67108864, "max_pairs": 10000000}, "body": body})
    assert canonical(got["one_time_keys"]) == canonical(json.loads(body)["one_time_keys"])
    st = e.stats()
    assert (st.recycled, st.instances) == (1, 0), st
    assert e.invoke("parse_claim", SMALL) == SMALL_WANT
    st = e.stats()
    assert (st.created, st.instances) == (2, 1), st


def test_input_buffer_kept_and_large_inputs(engine: keyclaim.Engine) -> None:
    """Inputs of every size in any order get the right answer: the instance's kept input buffer
    (up to 256 KiB) is reused, grown, and bypassed for larger inputs."""
    answers = {}
    for n in (1, 5_000, 3, 30_000, 10, 2, 30_000):
        body = big_claim_body(n)
        out = engine.parse_claim({"limits": {"max_pairs": 10000000, "max_body_bytes": 67108864}, "body": body})
        assert canonical(out["one_time_keys"]) == canonical(json.loads(body)["one_time_keys"])
        answers[n] = out
    assert engine.invoke("parse_claim", SMALL) == SMALL_WANT


def test_tracker_lifecycle(engine: keyclaim.Engine) -> None:
    before = engine.stats().trackers
    with engine.tracker({"server_name": "example.org"}) as t:
        assert engine.stats().trackers == before + 1
        assert not t.closed
        plan = t.plan({"now_ms": 0, "request": REQ})
        assert dict(plan) == {"deferred": {}, "one_time_keys": REQ["one_time_keys"]}
        seen = t.observe({"now_ms": 1, "request": REQ, "body": {"one_time_keys": {}, "failures": {
            "remote.example": {"status": 504, "message": "timed out"}}}})
        assert seen["tracked"] == 2
        assert seen["outcomes"]["@bob:remote.example"]["BOBDEV"] == {"outcome": "server_failed"}
        with pytest.raises(keyclaim.KeyclaimError):
            t.invoke("jump", "{}")
    assert t.closed and engine.stats().trackers == before
    with pytest.raises(keyclaim.EngineClosedError):
        t.plan({"now_ms": 0, "request": REQ})
    with pytest.raises(keyclaim.KeyclaimError) as info:
        keyclaim.Tracker(engine, {"max_entries": -1})
    assert info.value.errcode == "M_INVALID_PARAM"
    assert engine.stats().trackers == before


def test_trackers_do_not_starve_the_pool() -> None:
    e = keyclaim.Engine(module_arg(), pool_size=1)
    trackers = [e.tracker() for _ in range(3)]  # each pins an instance outside the pool
    assert e.invoke("parse_claim", SMALL) == SMALL_WANT
    assert e.stats().trackers == 3
    for t in trackers:
        t.free()
    st = e.stats()
    assert st.trackers == 0 and st.instances == 1, st


def test_one_engine_many_threads() -> None:
    """Sixteen threads share one Engine of four instances, each running every vector's input
    in its own order at the same time: every answer equals the single-threaded one."""
    e = keyclaim.Engine(module_arg(), pool_size=4)
    work: List[Tuple[str, str]] = [(v["op"], encode(v["input"])) for v in load_vectors()]
    single = [e.invoke(op, data) for op, data in work]
    threads = 16
    barrier = threading.Barrier(threads)
    results: Dict[int, List[Tuple[int, bytes]]] = {}
    errors: List[BaseException] = []

    def run(k: int) -> None:
        try:
            order = list(range(len(work)))[k::1] + list(range(k))
            barrier.wait()
            out = []
            for i in order[: len(work)]:
                op, data = work[i]
                out.append((i, e.invoke(op, data)))
                if i % 7 == k % 7:  # trackers pinned and freed alongside
                    with e.tracker() as t:
                        t.plan('{"now_ms":0,"request":{"one_time_keys":{}}}')
            results[k] = out
        except BaseException as ex:  # reported below
            errors.append(ex)

    pool = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert not errors, errors
    assert len(results) == threads
    for out in results.values():
        assert len(out) == len(work)
        for i, got in out:
            assert got == single[i], work[i]
    st = e.stats()
    assert 2 <= st.instances <= 4 and st.trackers == 0, st  # calls overlapped on several instances


def test_typed_one_engine_many_threads() -> None:
    """Typed calls from many threads: results equal the single-threaded ones."""
    e = keyclaim.Engine(module_arg(), pool_size=3)
    inputs: List[Any] = [
        {"server_name": "example.org", "request": {"one_time_keys": {
            f"@u{k}:example.org": {f"D{d}": "signed_curve25519" for d in range(k % 5 + 1)},
            f"@r{k}:remote{k % 3}.example": {"X": "signed_curve25519"}}},
         "local": {f"@u{k}:example.org": {"D0": {f"signed_curve25519:{k}": f"key{k}"}}},
         "remote": {f"remote{k % 3}.example": {"status": 200, "body": b'{"one_time_keys":{}}'}}}
        for k in range(40)]
    single = [e.complete_client(x) for x in inputs]
    got: Dict[int, Any] = {}

    def run(k: int) -> None:
        got[k] = [e.complete_client(x) for x in inputs[k % 4::4]]

    pool = [threading.Thread(target=run, args=(k,)) for k in range(12)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    for k in range(12):
        assert got[k] == single[k % 4::4]


def test_engine_context_manager() -> None:
    with keyclaim.Engine(module_arg(), pool_size=1) as e:
        assert e.invoke("parse_claim", SMALL) == SMALL_WANT
    with pytest.raises(keyclaim.EngineClosedError):
        e.parse_claim(SMALL)


def test_numbers_in_keys_exact(engine: keyclaim.Engine) -> None:
    """A key object's numbers come back as the module wrote them: an integer beyond 64 bits is
    an exact int in the typed result, as in the raw envelope."""
    big = 123456789012345678901234567890
    data = {"server_name": "example.org", "request": {"one_time_keys": {
        "@a:example.org": {"D": "signed_curve25519"}}},
        "local": {"@a:example.org": {"D": {"signed_curve25519:A": {"key": "k", "n": big, "m": -7}}}}}
    raw = engine.invoke("complete_client", encode(data))
    assert b'"n":123456789012345678901234567890' in raw
    got = engine.complete_client(data)
    key = got["one_time_keys"]["@a:example.org"]["D"]["signed_curve25519:A"]
    assert key == {"key": "k", "m": -7, "n": big} and isinstance(key, dict) and type(key["n"]) is int
    assert ('{"result":' + canonical(got) + "}").encode() == raw


def test_memory_flat_over_many_calls() -> None:
    """With WASI's real clocks the guest's garbage collector keeps up (under a fake clock it
    stalls and memory grows without bound, ABI section 2): memory stays flat over 3,000 calls."""
    e = keyclaim.Engine(module_arg(), pool_size=1)
    data = encode({"server_name": "example.org", "request": {"one_time_keys": {
        f"@u{k}:example.org": {"D": "signed_curve25519"} for k in range(50)}}})
    for _ in range(300):
        e.invoke("complete_federation", data)
    before = e._idle[0].memory_size()
    for _ in range(3000):
        e.invoke("complete_federation", data)
    after = e._idle[0].memory_size()
    assert e.stats().created == 1
    assert after <= before + (1 << 20), (before, after)


def test_unclosed_tracker_is_dropped_with_a_warning() -> None:
    e = keyclaim.Engine(module_arg(), pool_size=1)
    t = e.tracker()
    assert e.stats().trackers == 1
    with pytest.warns(ResourceWarning, match="unclosed keyclaim Tracker"):
        del t
        import gc
        gc.collect()
    assert e.stats().trackers == 0
    assert e.invoke("parse_claim", SMALL) == SMALL_WANT


def test_asyncio_to_thread() -> None:
    """The README's asyncio pattern: calls run in threads, concurrently, with the right answers."""
    import asyncio

    e = keyclaim.Engine(module_arg(), pool_size=2)
    inputs = [{"server_name": "example.org", "request": {"one_time_keys": {
        f"@u{k}:example.org": {"D": "signed_curve25519"}}}} for k in range(20)]

    async def main() -> List[Any]:
        return list(await asyncio.gather(*(asyncio.to_thread(e.complete_federation, x) for x in inputs)))

    got = asyncio.run(main())
    assert got == [{"one_time_keys": {f"@u{k}:example.org": {"D": {}}}} for k in range(20)]


def test_export_of_the_wrong_type_refused() -> None:
    """Every export's type is checked against ABI section 4 before the first call."""
    funcs = ['(func (export "_initialize"))',
             '(func (export "keyclaim_abi_version") (result i32) i32.const 1)',
             '(func (export "keyclaim_alloc") (param i64) (result i32) i32.const 0)',
             '(func (export "keyclaim_free") (param i32))',
             '(func (export "keyclaim_tracker_new") (param i32 i32) (result i64) i64.const 0)',
             '(func (export "keyclaim_tracker_plan") (param i32 i32 i32) (result i64) i64.const 0)',
             '(func (export "keyclaim_tracker_observe") (param i32 i32 i32) (result i64) i64.const 0)',
             '(func (export "keyclaim_tracker_free") (param i32) (result i32) i32.const 0)']
    funcs += [f'(func (export "keyclaim_{op}") (param i32 i32) (result i64) i64.const 0)'
              for op in keyclaim.OPERATIONS]
    wat = '(module (memory (export "memory") 1) ' + " ".join(funcs) + ")"
    with pytest.raises(keyclaim.ModuleError, match="keyclaim_alloc has type"):
        keyclaim.Engine(wasmtime.wat2wasm(wat))


def test_public_wasmtime_path_answers_the_same(engine: keyclaim.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Calls go straight to wasmtime's C API where wasmtime-py's internals allow it, else through
    its public API: both answer every vector identically, and both survive a trap."""
    from keyclaim import _engine

    monkeypatch.setattr(_engine, "_FAST", False)
    public = keyclaim.Engine(module_arg(), pool_size=1, max_memory_mib=24)
    for v in load_vectors():
        data = encode(v["input"])
        assert public.invoke(v["op"], data) == engine.invoke(v["op"], data), v["id"]
    with public.tracker() as t:
        assert t.plan({"now_ms": 0, "request": REQ})["one_time_keys"] == REQ["one_time_keys"]
    with pytest.raises(keyclaim.TrapError):
        public.invoke("parse_claim", encode({"limits": {"max_body_bytes": 67108864, "max_pairs": 10000000},
                                             "body": big_claim_body(200_000)}))
    assert public.invoke("parse_claim", SMALL) == SMALL_WANT


def test_one_tracker_many_threads(engine: keyclaim.Engine) -> None:
    """A Tracker's methods are thread-safe: observe calls from many threads at once all land
    (each one's device is remembered), then plan sees every one of them backed off."""
    users = [f"@u{k}:example.org" for k in range(24)]
    with engine.tracker({"server_name": "example.org"}) as t:
        def observe(user: str) -> None:
            t.observe({"now_ms": 0, "request": {"one_time_keys": {user: {"D": "signed_curve25519"}}},
                       "body": b'{"one_time_keys":{}}'})

        pool = [threading.Thread(target=observe, args=(u,)) for u in users]
        for th in pool:
            th.start()
        for th in pool:
            th.join()
        plan = t.plan({"now_ms": 1, "request": {"one_time_keys": {u: {"D": "signed_curve25519"} for u in users}}})
    assert plan["one_time_keys"] == {}
    assert plan["deferred"] == {u: {"D": 15000} for u in users}


def test_pointers_above_2_gib_read_unsigned() -> None:
    """An i32 pointer and an i64 result with the top bit set arrive as negative ints from
    wasmtime; the host must read them unsigned. A stand-in module (not keyclaim: a WAT module
    with the ABI's exports) puts its buffers above 2 GiB and answers from there."""
    funcs = ['(func (export "_initialize"))',
             '(func (export "keyclaim_abi_version") (result i32) i32.const 1)',
             '(func (export "keyclaim_alloc") (param i32) (result i32) i32.const 0x80000100)',
             '(func (export "keyclaim_free") (param i32))',
             '(func (export "keyclaim_tracker_new") (param i32 i32) (result i64) i64.const 0x8000000000000011)',
             '(func (export "keyclaim_tracker_plan") (param i32 i32 i32) (result i64) i64.const 0x8000000000000011)',
             '(func (export "keyclaim_tracker_observe") (param i32 i32 i32) (result i64) i64.const 0x8000000000000011)',
             '(func (export "keyclaim_tracker_free") (param i32) (result i32) i32.const 0)']
    # parse_claim echoes its input's length into the answer's last byte, to show the input went
    # to the pointer alloc gave (read unsigned) and was read back from there.
    funcs += [f'(func (export "keyclaim_{op}") (param i32 i32) (result i64) i64.const 0x8000000000000011)'
              for op in keyclaim.OPERATIONS if op != "parse_claim"]
    funcs.append('(func (export "keyclaim_parse_claim") (param i32 i32) (result i64) '
                 '(i32.store8 (i32.const 0x8000000e) (i32.load8_u (local.get 0))) '
                 'i64.const 0x8000000000000011)')
    wat = ('(module (memory (export "memory") 32770) '
           '(data (i32.const 0x80000000) "{\\"result\\":\\"high\\"}") ' + " ".join(funcs) + ")")
    e = keyclaim.Engine(wasmtime.wat2wasm(wat), pool_size=1, max_memory_mib=4096)
    assert e.invoke("plan_fanout", "{}") == b'{"result":"high"}'
    assert e.invoke("parse_claim", "X") == b'{"result":"higX"}'  # the input's byte, read back
    with pytest.raises(keyclaim.ModuleError, match="no tracker handle"):
        e.tracker()  # tracker_new answered {"result":"high"}
    assert e.stats().trackers == 0
    assert e.invoke("plan_fanout", "{}") == b'{"result":"high"}'


def test_every_buffer_freed() -> None:
    """The host calls _initialize once, before the ABI version, and frees every output and every
    input buffer except the one it keeps for reuse. A stand-in module (WAT, the ABI's exports) counts live buffers at address 0: alloc and each
    answer add one, free takes one away."""
    inc = "(i32.store (i32.const 0) (i32.add (i32.load (i32.const 0)) (i32.const 1)))"
    answer = f"{inc} i64.const 0x0000020000000002"  # out_ptr 512, 2 bytes: {{}}
    # _initialize counts its calls at address 4; the ABI version is 1 only once it has run
    funcs = ['(func (export "_initialize") (i32.store (i32.const 4) (i32.add (i32.load (i32.const 4)) (i32.const 1))))',
             '(func (export "keyclaim_abi_version") (result i32) (i32.load (i32.const 4)))',
             f'(func (export "keyclaim_alloc") (param i32) (result i32) {inc} i32.const 1024)',
             '(func (export "keyclaim_free") (param i32) (if (local.get 0) (then '
             '(i32.store (i32.const 0) (i32.sub (i32.load (i32.const 0)) (i32.const 1))))))',
             f'(func (export "keyclaim_tracker_new") (param i32 i32) (result i64) {answer})',
             f'(func (export "keyclaim_tracker_plan") (param i32 i32 i32) (result i64) {answer})',
             f'(func (export "keyclaim_tracker_observe") (param i32 i32 i32) (result i64) {answer})',
             '(func (export "keyclaim_tracker_free") (param i32) (result i32) i32.const 0)']
    funcs += [f'(func (export "keyclaim_{op}") (param i32 i32) (result i64) {answer})' for op in keyclaim.OPERATIONS]
    wat = '(module (memory (export "memory") 10) (data (i32.const 512) "{}") ' + " ".join(funcs) + ")"
    e = keyclaim.Engine(wasmtime.wat2wasm(wat), pool_size=1)
    for n in (10, 5000, 300_000, 10, 0, 300_000, 100_000, 200_000, 1):
        assert e.invoke("complete_client", b"x" * n) == b"{}"
    inst = e._idle[0]
    live = int.from_bytes(inst.memory.read(inst.store, 0, 4), "little")
    assert live == 1, f"{live} buffers live, want only the kept input buffer"
    assert int.from_bytes(inst.memory.read(inst.store, 4, 8), "little") == 1, "_initialize not called once"


def test_number_beyond_a_double_in_a_key(engine: keyclaim.Engine) -> None:
    """A key object's 1e400 is kept as written by the module; the typed result reads it as json
    does (inf), where the fast parser refuses it."""
    data = ('{"server_name":"example.org","request":{"one_time_keys":{"@a:example.org":{"D":"signed_curve25519"}}},'
            '"local":{"@a:example.org":{"D":{"signed_curve25519:A":{"key":"k","x":1e400}}}}}')
    raw = engine.invoke("complete_client", data)
    assert b'"x":1e400' in raw
    key = engine.complete_client(data)["one_time_keys"]["@a:example.org"]["D"]["signed_curve25519:A"]
    assert key == {"key": "k", "x": float("inf")}
