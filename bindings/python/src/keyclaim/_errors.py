"""Errors: a Matrix error answered by the module, and the host's own failures."""

from __future__ import annotations

__all__ = [
    "KeyclaimError", "TrapError", "TrackerLostError", "EngineClosedError", "ModuleError",
    "HTTP_STATUS",
]

#: The HTTP status a server would answer for each errcode (ABI section 6).
HTTP_STATUS = {
    "M_NOT_JSON": 400,
    "M_BAD_JSON": 400,
    "M_INVALID_PARAM": 400,
    "M_TOO_LARGE": 413,
    "M_UNKNOWN": 500,
}


class KeyclaimError(Exception):
    """A Matrix error: ``errcode`` (match on it) and ``message`` (for people).

    Raised by the typed methods for an error envelope ``{"errcode", "error"}`` of the module, and
    by the host for an input it cannot pass (``M_TOO_LARGE`` above 64 MiB, ``M_UNKNOWN`` for an
    unknown operation). ``status`` is the HTTP status a server would answer with.
    """

    def __init__(self, errcode: str, message: str) -> None:
        super().__init__(errcode, message)
        self.errcode = errcode
        self.message = message

    @property
    def status(self) -> int:
        return HTTP_STATUS.get(self.errcode, 500)

    def to_json(self) -> dict[str, str]:
        """The Matrix error body, ``{"errcode": ..., "error": ...}``."""
        return {"errcode": self.errcode, "error": self.message}

    def __str__(self) -> str:
        return f"{self.errcode}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.errcode!r}, {self.message!r})"


class TrapError(KeyclaimError):
    """The instance serving the call trapped (e.g. it hit the memory cap): no answer was
    obtained. The instance was discarded; the next call gets a fresh one. ``errcode`` is
    ``M_UNKNOWN``."""

    def __init__(self, message: str) -> None:
        super().__init__("M_UNKNOWN", message)


class TrackerLostError(KeyclaimError):
    """The tracker's instance trapped, so its state is gone: create a new Tracker."""

    def __init__(self, message: str) -> None:
        super().__init__("M_UNKNOWN", message)


class EngineClosedError(KeyclaimError):
    """The Engine (or the Tracker) was closed."""

    def __init__(self, message: str = "the keyclaim engine is closed") -> None:
        super().__init__("M_UNKNOWN", message)


class ModuleError(Exception):
    """The module cannot be used: not a WebAssembly module, an export missing, or an ABI version
    this package does not implement."""
