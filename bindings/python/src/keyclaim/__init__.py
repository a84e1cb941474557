"""keyclaim: Matrix one-time-key claiming (MSC4072) from Python, on keyclaim's WebAssembly module.

    import keyclaim
    engine = keyclaim.Engine()           # the module shipped in this package, compiled once
    answer = engine.complete_client({...})

One Engine serves every thread of a process (a pool of instances). The typed methods take a dict
(see the TypedDicts of this module) or the JSON document, and return the parsed result or raise
KeyclaimError; ``engine.invoke(op, data)`` returns the module's envelope bytes unchanged. See
bindings/ABI.md for the operations and README.md for examples.
"""

from ._engine import ABI_VERSION, MAX_INPUT_BYTES, OPERATIONS, Engine, Input, Stats, Tracker
from ._errors import (
    HTTP_STATUS, EngineClosedError, KeyclaimError, ModuleError, TrackerLostError, TrapError,
)
from ._types import *  # noqa: F401,F403  (the TypedDicts of every input and output)
from ._types import __all__ as _types_all

__version__ = "0.1.0"

__all__ = [
    "ABI_VERSION", "MAX_INPUT_BYTES", "OPERATIONS", "Engine", "Input", "Stats", "Tracker",
    "HTTP_STATUS", "EngineClosedError", "KeyclaimError", "ModuleError", "TrackerLostError",
    "TrapError", *_types_all,
]
