"""The house's arrows point one way: read from the source's own imports, so a wrong one fails here first.

The store keeps data only (no wire shapes, no translation, no I/O policy above it); the engine calls no door,
service, run or upstream client; the run (the turn loop and the tools it drives) uses no service (shared shapes
live in ``protocol/``); services use no door; the two doors (``adapters/http``, ``adapters/extproc``) never import
each other; and the serving code never imports the tooling in ``devtools/``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "responses_bridge"
POLICY = {"adapters", "services", "run", "runtime", "upstream", "devtools", "serve", "cli"}
FORBIDDEN = {"store": POLICY | {"protocol", "engine"}, "engine": POLICY, "run": {"services", "adapters"},
             "services": {"adapters"}}
DOORS = ("adapters.http", "adapters.extproc")


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


def door(module: str) -> str | None:
    """``responses_bridge.adapters.http.app`` -> ``adapters.http``; None outside the two doors."""
    parts = module.split(".")
    name = ".".join(parts[1:3])
    return name if name in DOORS else None


@pytest.mark.parametrize("path", [path for path in SOURCES if path.parts[-3:-1] in (("adapters", "http"),
                                                                                     ("adapters", "extproc"))],
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_doors_do_not_import_each_other(path: Path) -> None:
    here = door("responses_bridge." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts))
    others = {door(name) for name in imports_of(path)} - {here, None}
    assert not others, f"{path.relative_to(PACKAGE)} imports {sorted(others)}"


def test_the_rules_catch_what_they_forbid(tmp_path: Path) -> None:
    """Each rule, shown a file that breaks it, fails: the rules are not vacuous."""
    assert "services" in FORBIDDEN["run"] and "adapters" in FORBIDDEN["services"]
    assert room("responses_bridge.services.responses.background") in FORBIDDEN[room("responses_bridge.run.drive")]
    assert door("responses_bridge.adapters.extproc.servicer") != door("responses_bridge.adapters.http.app")
    assert door("responses_bridge.adapters.upstream_client") is None


def test_the_walk_sees_imports() -> None:
    """The checker itself: it must find the arrows that do exist, or every test above passes vacuously."""
    assert "responses_bridge.devtools.procs" in imports_of(PACKAGE / "devtools" / "demo.py")
    assert "responses_bridge.store.records" in imports_of(PACKAGE / "store" / "sqlite" / "responses.py")
    assert room("responses_bridge.envoy_config") == "envoy_config"
