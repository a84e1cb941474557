"""Every vector of core/testdata/vectors through the installed package: the raw envelope of
Engine.invoke byte for byte, the typed method of its operation (result re-encoded canonically,
or KeyclaimError with the errcode), the typed method again with every body passed as bytes, and
tracker_run vectors step by step through a Tracker. The same corpus runs natively, on wazero,
on V8 and on Rust's wasmtime."""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, List

import pytest

import keyclaim

from conftest import canonical, encode, load_vectors

VECTORS = load_vectors()
MEMBERS = {"id", "description", "source", "op", "input", "expect", "expect_error", "file"}


def test_corpus_is_whole() -> None:
    assert len({v["file"] for v in VECTORS}) >= 9
    assert len(VECTORS) >= 250
    assert len({v["id"] for v in VECTORS}) == len(VECTORS), "duplicate vector id"
    assert {v["op"] for v in VECTORS} == set(keyclaim.OPERATIONS)


def want(v: Dict[str, Any]) -> bytes:
    return ('{"result":' + canonical(v["expect"]) + "}").encode("utf-8")


def check_error(out: bytes, code: str) -> None:
    e = json.loads(out)
    assert sorted(e) == ["errcode", "error"], out
    assert e["errcode"] == code, out
    assert isinstance(e["error"], str) and e["error"], out


def typed(engine: keyclaim.Engine, op: str) -> Callable[[Any], Any]:
    fn: Callable[[Any], Any] = getattr(engine, op)
    return fn


def bodies_as_bytes(v: Any) -> Any:
    """v with every "body" string that UTF-8 can carry turned into bytes (the exact bytes a host
    would have received)."""
    if isinstance(v, dict):
        out = {}
        for k, x in v.items():
            if k == "body" and isinstance(x, str):
                try:
                    out[k] = x.encode("utf-8")
                    continue
                except UnicodeEncodeError:  # a lone surrogate: no bytes give it, keep the str
                    pass
            out[k] = bodies_as_bytes(x)
        return out
    if isinstance(v, list):
        return [bodies_as_bytes(x) for x in v]
    return v


@pytest.mark.parametrize("v", VECTORS, ids=[v["id"] for v in VECTORS])
def test_vector(engine: keyclaim.Engine, v: Dict[str, Any]) -> None:
    assert set(v) <= MEMBERS
    assert ("expect" in v) != ("expect_error" in v)
    op = v["op"]
    # 1. raw: the envelope unchanged, byte for byte
    raw = engine.invoke(op, encode(v["input"]))
    assert isinstance(raw, bytes)
    if "expect_error" in v:
        check_error(raw, v["expect_error"])
    else:
        assert raw == want(v)
    # 2. typed, with the input as a dict and as bytes; 3. typed with bodies as bytes
    for data in (v["input"], encode(v["input"]).encode(), bodies_as_bytes(v["input"])):
        if "expect_error" in v:
            with pytest.raises(keyclaim.KeyclaimError) as info:
                typed(engine, op)(data)
            assert info.value.errcode == v["expect_error"]
            assert info.value.message == json.loads(raw)["error"]
        else:
            got = typed(engine, op)(data)
            assert ('{"result":' + canonical(got) + "}").encode() == raw
    if op == "tracker_run":
        tracker_steps(engine, v)


def tracker_steps(engine: keyclaim.Engine, v: Dict[str, Any]) -> None:
    """The same steps through a Tracker (vectors README, "tracker_run vectors")."""
    config, steps = v["input"].get("config"), v["input"]["steps"]
    try:
        tracker = engine.tracker(config)
    except keyclaim.KeyclaimError as e:
        assert e.errcode == v.get("expect_error")
        assert steps == [], "the tracker was refused, yet there are steps"
        return
    with tracker:
        if "expect_error" in v:
            assert steps, "no step to fail with " + v["expect_error"]
        for i, s in enumerate(steps):
            last = i == len(steps) - 1
            raw = tracker.invoke(s["op"], encode(s["input"]))
            if "expect" in v:
                assert raw == ('{"result":' + canonical(v["expect"][i]) + "}").encode(), f"step {i}"
            elif last:
                check_error(raw, v["expect_error"])
            else:
                assert raw.startswith(b'{"result":'), f"step {i} failed before the last: {raw!r}"
    assert tracker.closed


@pytest.mark.parametrize("v", [v for v in VECTORS if v["op"] == "tracker_run" and "expect" in v],
                         ids=lambda v: str(v["id"]))
def test_tracker_typed_steps(engine: keyclaim.Engine, v: Dict[str, Any]) -> None:
    """tracker_run vectors through Tracker.plan and Tracker.observe (typed), bodies as bytes."""
    with engine.tracker(v["input"].get("config")) as tracker:
        got: List[Any] = []
        for s in bodies_as_bytes(v["input"]["steps"]):
            step = tracker.plan if s["op"] == "plan" else tracker.observe
            got.append(step(s["input"]))
    assert canonical(got) == canonical(v["expect"])
