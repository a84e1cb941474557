"""The shared vectors (core/testdata/vectors) through the module on wasmtime (Cranelift): every
answer must be byte for byte what the vector expects (vectors README, "Comparison rules"), as on
native Go, wazero and V8. The module is dist/keyclaim.wasm (`make wasm`), or KEYCLAIM_WASM."""

import json
import os
import pathlib
import unittest

from keyclaim import OPERATIONS, Keyclaim, KeyclaimError, canonical

ROOT = pathlib.Path(__file__).resolve().parents[2]
WASM = pathlib.Path(os.environ.get("KEYCLAIM_WASM", ROOT / "dist" / "keyclaim.wasm"))
VECTORS = ROOT / "core" / "testdata" / "vectors"
MEMBERS = {"id", "description", "source", "op", "input", "expect", "expect_error"}


def want_result(expect) -> str:
    return '{"result":' + canonical(expect) + "}"


def encode(v) -> str:
    # ASCII-only text: escapes keep every string exactly (lone surrogates included)
    return json.dumps(v, separators=(",", ":"))


class VectorTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.k = Keyclaim(WASM.read_bytes())

    def check_error(self, out: str, code: str):
        v = json.loads(out)
        self.assertEqual(sorted(v), ["errcode", "error"], out)
        self.assertEqual(v["errcode"], code, out)
        self.assertTrue(isinstance(v["error"], str) and v["error"], out)

    def test_vectors(self):
        files = sorted(p for p in VECTORS.glob("*.json") if p.name != "pending_bugs.json")
        self.assertGreaterEqual(len(files), 9)
        count = 0
        for f in files:
            doc = json.loads(f.read_text(encoding="utf-8"))
            self.assertEqual(doc["schema"], 1, f.name)
            for v in doc["vectors"]:
                count += 1
                with self.subTest(id=v["id"], file=f.name):
                    self.run_vector(v)
        self.assertGreaterEqual(count, 250)
        print(f"{count} vectors on wasmtime")

    def run_vector(self, v):
        self.assertLessEqual(set(v), MEMBERS)
        self.assertIn(v["op"], OPERATIONS)
        self.assertNotEqual("expect" in v, "expect_error" in v)
        out = self.k.invoke(v["op"], encode(v["input"])).decode()
        if "expect_error" in v:
            self.check_error(out, v["expect_error"])
        else:
            self.assertEqual(out, want_result(v["expect"]))
        if v["op"] != "tracker_run":
            return
        # The same steps through a tracker handle (vectors README, "tracker_run vectors").
        config, steps = v["input"].get("config"), v["input"]["steps"]
        try:
            handle = self.k.tracker_new("" if config is None else encode(config))
        except KeyclaimError as e:
            self.assertEqual(e.errcode, v.get("expect_error"))
            self.assertEqual(steps, [], "the tracker was refused, yet there are steps")
            return
        try:
            if "expect_error" in v:
                self.assertTrue(steps, "no step to fail with " + v["expect_error"])
            for i, s in enumerate(steps):
                got = self.k.tracker_step(handle, s["op"], encode(s["input"])).decode()
                if "expect" in v:
                    self.assertEqual(got, want_result(v["expect"][i]), f"step {i}")
                elif i == len(steps) - 1:
                    self.check_error(got, v["expect_error"])
                else:
                    self.assertTrue(got.startswith('{"result":'), f"step {i} failed before the last: {got}")
        finally:
            self.assertTrue(self.k.tracker_free(handle))


if __name__ == "__main__":
    unittest.main()
