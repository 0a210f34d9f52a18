"""The house's arrows point one way: read from the source's own imports, so a wrong one fails here first.

The store keeps data only (no wire shapes, no translation, no I/O policy above it); the engine calls no door,
service, run or upstream client; and the serving code never imports the tooling in ``devtools/``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "responses_bridge"
POLICY = {"adapters", "services", "run", "runtime", "upstream", "devtools", "serve", "cli"}
FORBIDDEN = {"store": POLICY | {"protocol", "engine"}, "engine": POLICY}


def room(module: str) -> str:
    """``responses_bridge.store.sqlite`` -> ``store``; a top-level module is its own room."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def imports_of(path: Path) -> set[str]:
    """Every ``responses_bridge`` module (or name inside one) the file imports, relative imports resolved."""
    module_parts = ["responses_bridge", *path.relative_to(PACKAGE).with_suffix("").parts]
    package = module_parts if path.name == "__init__.py" else module_parts[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join([*base, *([node.module] if node.module else [])])
            found.update([target, *(f"{target}.{alias.name}" for alias in node.names)])
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("responses_bridge.")}


SOURCES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_arrows_point_one_way(path: Path) -> None:
    here = room("responses_bridge." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts))
    targets = {room(name) for name in imports_of(path)} - {here}
    assert not targets & FORBIDDEN.get(here, set()), f"{path.name} imports {sorted(targets & FORBIDDEN[here])}"
    if here not in ("devtools", "cli"):
        assert "devtools" not in targets, f"serving code {path.relative_to(PACKAGE)} imports devtools/"


def test_the_walk_sees_imports() -> None:
    """The checker itself: it must find the arrows that do exist, or every test above passes vacuously."""
    assert "responses_bridge.devtools.procs" in imports_of(PACKAGE / "devtools" / "demo.py")
    assert "responses_bridge.store.base" in imports_of(PACKAGE / "store" / "sqlite.py")
    assert room("responses_bridge.envoy_config") == "envoy_config"
