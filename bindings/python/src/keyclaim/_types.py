"""The inputs and outputs of the module's operations, as TypedDicts (bindings/ABI.md section 8).

Inputs may also be given as plain dicts, or as the JSON document itself (str or bytes). Bodies
(``body``) may be a str (the body's text), bytes (the exact bytes received: valid UTF-8 travels as
``body``, anything else as ``body_base64``) or a JSON value (a dict or list, encoded for you).
Outputs are what the module answers, parsed with :mod:`json`.
"""

from __future__ import annotations

import sys
from typing import Any, Dict, List, Mapping, Sequence, Union

if sys.version_info >= (3, 11):
    from typing import Literal, NotRequired, TypedDict
else:  # pragma: no cover - Python 3.10
    from typing_extensions import Literal, NotRequired, TypedDict

__all__ = [
    "Body", "Key", "SignedKey", "DeviceAlgorithms", "ClaimedKeys", "ClaimRequest", "ClaimBody",
    "Limits", "ParseClaimInput", "PlanFanoutInput", "PlanFanoutResult", "OneTimeKeyEntry",
    "FallbackKeyEntry", "DeviceInventory", "Inventory", "SelectKeysInput", "SelectKeysResult",
    "HostFailure", "RemoteAnswer", "RemoteFailure", "RemoteOutcome", "Mode", "Failure",
    "CompleteClientInput", "CompleteClientResult", "CompleteFederationInput",
    "CompleteFederationResult", "Outcome", "ClassifyClaimInput", "ClassifyClaimResult",
    "TrackerConfig", "PlanInput", "PlanResult", "ObserveInput", "ObserveResult", "TrackerStep",
    "TrackerStepResult", "TrackerRunInput", "TrackerRunResult", "CompleteUpstreamInput",
    "CompleteUpstreamResult", "Operation",
]

#: An HTTP body: its text, its exact bytes, or a JSON value to encode (ABI section 7).
Body = Union[str, bytes, bytearray, memoryview, Mapping[str, Any], Sequence[Any]]

#: A signed key: an object with a string ``key`` (and usually ``signatures``).
SignedKey = Dict[str, Any]
#: A claimed key value: an unsigned key (a string) or a signed key object.
Key = Union[str, SignedKey]

#: ``{user_id: {device_id: algorithm}}``: what a claim asks for.
DeviceAlgorithms = Dict[str, Dict[str, str]]
#: ``{user_id: {device_id: {key_id: KEY}}}``: keys claimed (``{}`` for a device with none).
ClaimedKeys = Dict[str, Dict[str, Dict[str, Key]]]

Mode = Literal["msc4072", "legacy"]

#: The names of the module's operations (one typed method of :class:`keyclaim.Engine` each).
Operation = Literal[
    "parse_claim", "plan_fanout", "select_keys", "complete_client", "complete_federation",
    "classify_claim", "tracker_run", "complete_upstream",
]


class ClaimRequest(TypedDict):
    """REQ: a claim request as a client sends it; ``timeout`` in ms (default 10,000)."""

    one_time_keys: DeviceAlgorithms
    timeout: NotRequired[int]


class ClaimBody(TypedDict):
    """The body of a federation claim (``POST /_matrix/federation/v1/user/keys/claim``)."""

    one_time_keys: DeviceAlgorithms


# 8.1 parse_claim


class Limits(TypedDict, total=False):
    """parse_claim limits; 0 or absent is the default (4 MiB, 50,000, 10,000, 60,000)."""

    max_body_bytes: int
    max_pairs: int
    default_timeout_ms: int
    max_timeout_ms: int


class ParseClaimInput(TypedDict, total=False):
    """Input of parse_claim: exactly one of ``body`` and ``body_base64`` is required."""

    body: Body
    body_base64: str
    flavour: Literal["client", "federation"]
    server_name: str
    query_timeout: str
    limits: Limits


# 8.2 plan_fanout


class PlanFanoutInput(TypedDict):
    server_name: str
    request: ClaimRequest


class PlanFanoutResult(TypedDict):
    """The local users, and per remote server the exact body of its federation claim."""

    local: ClaimBody
    remote: Dict[str, ClaimBody]


# 8.3 select_keys


class OneTimeKeyEntry(TypedDict):
    key_id: str
    batch: int
    key: Key


class FallbackKeyEntry(TypedDict):
    key_id: str
    key: Key
    used: NotRequired[bool]


class DeviceInventory(TypedDict, total=False):
    one_time_keys: List[OneTimeKeyEntry]
    fallback_keys: List[FallbackKeyEntry]


#: ``{user_id: {device_id: DeviceInventory}}``
Inventory = Dict[str, Dict[str, DeviceInventory]]


class SelectKeysInput(TypedDict):
    inventory: NotRequired[Inventory]
    requests: List[ClaimRequest]


class SelectKeysResult(TypedDict):
    inventory: Inventory
    results: List[ClaimedKeys]


# 8.4 complete_client, 8.5 complete_federation


class HostFailure(TypedDict):
    """A failure the host met before any answer (unreachable, timed out, backed off)."""

    status: int
    message: str
    errcode: NotRequired[str]


class RemoteAnswer(TypedDict):
    """A remote server's HTTP answer: its status and one of ``body`` and ``body_base64``."""

    status: int
    body: NotRequired[Body]
    body_base64: NotRequired[str]


class RemoteFailure(TypedDict):
    failure: HostFailure


RemoteOutcome = Union[RemoteAnswer, RemoteFailure]


class Failure(TypedDict):
    """A failed server in an answer: ``errcode`` only when a valid one was known."""

    status: int
    message: str
    errcode: NotRequired[str]


class CompleteClientInput(TypedDict):
    server_name: str
    request: ClaimRequest
    mode: NotRequired[Mode]
    local: NotRequired[ClaimedKeys]
    remote: NotRequired[Dict[str, RemoteOutcome]]


class CompleteClientResult(TypedDict):
    failures: Dict[str, Failure]
    one_time_keys: ClaimedKeys


class CompleteFederationInput(TypedDict):
    server_name: str
    request: ClaimRequest
    mode: NotRequired[Mode]
    local: NotRequired[ClaimedKeys]


class CompleteFederationResult(TypedDict):
    one_time_keys: ClaimedKeys


# 8.6 classify_claim


class Outcome(TypedDict):
    """``claimed`` (with ``key`` and ``key_id``), ``no_keys`` or ``server_failed``."""

    outcome: Literal["claimed", "no_keys", "server_failed"]
    key: NotRequired[Key]
    key_id: NotRequired[str]


class ClassifyClaimInput(TypedDict):
    request: ClaimRequest
    body: NotRequired[Body]
    body_base64: NotRequired[str]


class ClassifyClaimResult(TypedDict):
    outcomes: Dict[str, Dict[str, Outcome]]


# 8.7 tracker_run and section 9 trackers


class TrackerConfig(TypedDict, total=False):
    """All optional: own server, max_entries (10,000), backoff base (15 s) and cap (15 min)."""

    server_name: str
    max_entries: int
    base_backoff_ms: int
    max_backoff_ms: int


class PlanInput(TypedDict):
    now_ms: int
    request: ClaimRequest


class PlanResult(TypedDict):
    """The devices backed off (with their retry time in ms) and the next claim request."""

    deferred: Dict[str, Dict[str, int]]
    one_time_keys: DeviceAlgorithms


class ObserveInput(TypedDict):
    now_ms: int
    request: ClaimRequest
    body: NotRequired[Body]
    body_base64: NotRequired[str]


class ObserveResult(TypedDict):
    outcomes: Dict[str, Dict[str, Outcome]]
    tracked: int


class TrackerStep(TypedDict):
    op: Literal["plan", "observe"]
    input: Union[PlanInput, ObserveInput]


TrackerStepResult = Union[PlanResult, ObserveResult]


class TrackerRunInput(TypedDict):
    config: NotRequired[TrackerConfig]
    steps: List[TrackerStep]


TrackerRunResult = List[TrackerStepResult]


# 8.8 complete_upstream


class CompleteUpstreamInput(TypedDict):
    server_name: str
    request: ClaimRequest
    mode: NotRequired[Mode]
    body: NotRequired[Body]
    body_base64: NotRequired[str]


CompleteUpstreamResult = CompleteClientResult
