"""Puts the module into the package at build time: keyclaim.wasm is built by `make wasm` into
dist/ at the repository's root and never committed. KEYCLAIM_WASM names another build. An sdist
carries the module it was built with, so a wheel built from the sdist finds it beside the code."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

TARGET = "keyclaim/keyclaim.wasm"


class WasmHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        root = Path(self.root)
        env = os.environ.get("KEYCLAIM_WASM", "")
        if not env and (root / "src" / TARGET).is_file():
            return  # an unpacked sdist: the module is there and packed like the code
        candidates = [env, str(root.parent.parent / "dist" / "keyclaim.wasm")]
        for c in candidates:
            if c and Path(c).is_file():
                dest = "src/" + TARGET if self.target_name == "sdist" else TARGET
                build_data["force_include"][str(Path(c).resolve())] = dest
                return
        raise RuntimeError(
            "keyclaim: no keyclaim.wasm to put in the package: run `make wasm` at the repository's "
            "root first (it writes dist/keyclaim.wasm), or set KEYCLAIM_WASM to a module")
