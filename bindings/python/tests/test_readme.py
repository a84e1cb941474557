"""The README's examples, as written: README.md shows examples/homeserver.py and
examples/client.py verbatim, and each runs against the installed package with the answer the
README promises. (make test-python also type-checks them with mypy --strict.)"""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import PACKAGE_DIR

EXPECTED = {
    "homeserver.py": (
        "{'failures': {}, 'one_time_keys': {"
        "'@alice:example.org': {'ALICEDEV': {'signed_curve25519:AAAAHg': 'j3fR3HemM16M7CWhoI4Sk5ZsdmdfQHsKL1xuSft6MSw'}}, "
        "'@bob:remote.example': {'BOBDEV': {'signed_curve25519:AAAAAQ': {'key': 'bobkey'}}}}}\n"
    ),
    "client.py": (
        "{'@carol:down.example': {'CAROLDEV': {'outcome': 'server_failed'}}, "
        "'@dan:example.org': {'DANDEV': {'outcome': 'no_keys'}}}\n"
        "{'@carol:down.example': {'CAROLDEV': 15000}, '@dan:example.org': {'DANDEV': 15000}} {}\n"
    ),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_readme_example(name: str, tmp_path: object) -> None:
    source = (PACKAGE_DIR / "examples" / name).read_text(encoding="utf-8")
    readme = (PACKAGE_DIR / "README.md").read_text(encoding="utf-8")
    assert "```python\n" + source + "```\n" in readme, f"README.md does not show examples/{name} as it is"
    out = subprocess.run([sys.executable, "-c", source], cwd=str(tmp_path), capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout == EXPECTED[name]
