"""Shared fixtures. The tests run against the INSTALLED package (make test-python builds the wheel,
installs it into a fresh virtual environment and runs pytest from outside the source tree).
KEYCLAIM_WASM tests another build of the module; KEYCLAIM_REPO names the repository (default: the
one these tests sit in), for the shared vectors."""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Dict, Iterator, List

import pytest

import keyclaim

HERE = pathlib.Path(__file__).resolve().parent
PACKAGE_DIR = HERE.parent  # bindings/python
REPO = pathlib.Path(os.environ.get("KEYCLAIM_REPO", PACKAGE_DIR.parents[1]))
VECTORS = REPO / "core" / "testdata" / "vectors"


def module_arg() -> Any:
    """The module the tests load: KEYCLAIM_WASM, else the one shipped in the package."""
    return os.environ.get("KEYCLAIM_WASM") or None


@pytest.fixture(scope="session")
def engine() -> Iterator[keyclaim.Engine]:
    e = keyclaim.Engine(module_arg())
    yield e
    e.close()


def canonical(v: Any) -> str:
    """Matrix canonical JSON (vectors README, "Comparison rules"): members sorted by code point
    (Python's str order), no white space, strings escaping only '"', '\\' and U+0000-U+001F (the
    short forms \\b \\f \\n \\r \\t, else \\u00xx), integers only."""
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


def encode(v: Any) -> str:
    """ASCII-only JSON: escapes keep every string exactly (lone surrogates included)."""
    return json.dumps(v, separators=(",", ":"))


def load_vectors() -> List[Dict[str, Any]]:
    files = sorted(p for p in VECTORS.glob("*.json") if p.name != "pending_bugs.json")
    out: List[Dict[str, Any]] = []
    for f in files:
        doc = json.loads(f.read_text(encoding="utf-8"))
        assert doc["schema"] == 1, f.name
        for v in doc["vectors"]:
            v["file"] = f.name
            out.append(v)
    return out


def big_claim_body(n: int, server: str = "example.org") -> str:
    """A claim body of n devices, 10 per user (as bindings/go's bigClaimBody)."""
    users = []
    for u in range((n + 9) // 10):
        devices = ",".join(f'"DEVICE{d:02d}":"signed_curve25519"' for d in range(min(10, n - u * 10)))
        users.append(f'"@user{u:06d}:{server}":{{{devices}}}')
    return '{"one_time_keys":{' + ",".join(users) + "}}"
