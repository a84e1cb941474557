"""JSON in and out of the module: inputs to UTF-8 bytes (bodies as text, bytes or values), and
envelopes to results or KeyclaimError."""

from __future__ import annotations

import base64
import json
from typing import Any, Mapping, Union

import msgspec

from ._errors import KeyclaimError

_PREFIX = b'{"result":'
_dumps_utf8 = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
_dumps_ascii = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), allow_nan=False).encode
_encode = msgspec.json.encode
_decode = msgspec.json.decode


def dumps(value: Any) -> bytes:
    """Compact JSON in UTF-8 (msgspec, five times faster than json for large inputs). What
    msgspec refuses is left to json: a str holding a lone surrogate (which UTF-8 cannot carry) is
    written as a \\u escape, so every Python str reaches the module unchanged."""
    try:
        return _encode(value)
    except (TypeError, UnicodeEncodeError):
        pass
    try:
        return _dumps_utf8(value).encode("utf-8")
    except UnicodeEncodeError:
        return _dumps_ascii(value).encode("ascii")


def loads(doc: Union[bytes, memoryview]) -> Any:
    """Parses the module's canonical JSON (msgspec: integers of any size exact, as json; a number
    beyond a double's range, which msgspec refuses, is left to json)."""
    try:
        return _decode(doc)
    except msgspec.DecodeError:
        return json.loads(bytes(doc))


def _body(member: Mapping[str, Any]) -> Mapping[str, Any]:
    """member with its "body" made what the module reads (ABI section 7): text stays text,
    bytes go as text when they are UTF-8 and as body_base64 otherwise, a JSON value is encoded."""
    body = member.get("body")
    if body is None or isinstance(body, str):
        return member
    out = dict(member)
    if isinstance(body, (bytes, bytearray, memoryview)):
        raw = bytes(body)
        try:
            out["body"] = raw.decode("utf-8")
        except UnicodeDecodeError:
            if "body_base64" in out:  # both given: the module answers M_BAD_JSON
                out["body"] = raw.decode("utf-8", "replace")
            else:
                del out["body"]
                out["body_base64"] = base64.b64encode(raw).decode("ascii")
    else:
        out["body"] = dumps(body).decode("utf-8")
    return out


def _bodies(op: str, data: Mapping[str, Any]) -> Mapping[str, Any]:
    """data with every body member of operation op normalised by _body."""
    if op == "complete_client":
        remote = data.get("remote")
        if isinstance(remote, Mapping) and any(
            isinstance(a, Mapping) and not isinstance(a.get("body"), (str, type(None)))
            for a in remote.values()
        ):
            data = dict(data)
            data["remote"] = {s: _body(a) if isinstance(a, Mapping) else a for s, a in remote.items()}
        return data
    if op == "tracker_run":
        steps = data.get("steps")
        if isinstance(steps, list) and any(
            isinstance(s, Mapping) and isinstance(s.get("input"), Mapping)
            and not isinstance(s["input"].get("body"), (str, type(None)))
            for s in steps
        ):
            data = dict(data)
            data["steps"] = [
                dict(s, input=_body(s["input"]))
                if isinstance(s, Mapping) and isinstance(s.get("input"), Mapping) else s
                for s in steps
            ]
        return data
    return _body(data)


def encode_input(op: str, data: Any) -> bytes:
    """The input document of op: bytes and str are the JSON document itself; a mapping is
    encoded, its bodies first made what the module reads."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    if isinstance(data, str):
        # A lone surrogate cannot be UTF-8: surrogatepass sends the ill-formed bytes, and the
        # module answers M_NOT_JSON, as it would for the same bytes from a network.
        return data.encode("utf-8", "surrogatepass")
    if isinstance(data, Mapping):
        return dumps(_bodies(op, data))
    raise TypeError(
        f"keyclaim: the input of {op} must be a dict (mapping), a JSON str or bytes, "
        f"not {type(data).__name__}")


def result(envelope: bytes) -> Any:
    """The parsed result of an envelope, or KeyclaimError for an error envelope."""
    if envelope.startswith(_PREFIX):
        # canonical JSON with one member: the result is everything between prefix and "}"
        return loads(memoryview(envelope)[len(_PREFIX):-1])  # no copy of a large answer
    v = json.loads(envelope)
    raise KeyclaimError(v["errcode"], v["error"])
