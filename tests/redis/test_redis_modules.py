"""The Redis integration's modules: one message for a missing extra, arrows one way."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import opencode_addons
import pytest

PACKAGE = Path(opencode_addons.__file__).parent
MODULES = ("redis_streams", "redis_connection", "redis_replicator", "redis_reader")


@pytest.mark.parametrize("module", MODULES)
def test_a_missing_extra_names_it_whichever_module_comes_first(module: str) -> None:
    code = (
        "import sys\n"
        "sys.modules['redis'] = None  # what an environment without redis-py gives\n"
        "try:\n"
        f"    import opencode_addons.{module}\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == (
        "opencode_addons.redis_streams needs redis-py with hiredis: "
        "pip install 'opencode-addons[redis]'"
    )


def _imports(module: str) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse((PACKAGE / f"{module}.py").read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_only_the_connection_module_imports_redis_py_and_arrows_go_one_way() -> None:
    imports = {module: _imports(module) for module in MODULES}
    for module, names in imports.items():
        assert not any(n.startswith("opencode_addons.orchestrator") for n in names), module
        if module != "redis_connection":
            assert not any(n == "redis" or n.startswith("redis.") for n in names), module
    assert {"redis", "redis.asyncio"} <= imports["redis_connection"]
    assert not any(n.startswith("opencode_addons.redis_") for n in imports["redis_connection"])
    assert "opencode_addons.redis_reader" not in imports["redis_replicator"]
    assert "opencode_addons.redis_replicator" not in imports["redis_reader"]
    for module in ("redis_replicator", "redis_reader"):
        assert "opencode_addons.redis_connection" in imports[module]
