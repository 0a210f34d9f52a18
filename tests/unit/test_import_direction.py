"""The house's arrows point one way: read from the source's own imports, so a wrong one fails here first.

The store keeps data only (no wire shapes, no translation, no I/O policy above it); the engine calls no door,
service, run or upstream client; the run (the turn loop and the tools it drives) uses no service (shared shapes
live in ``protocol/``); services use no door; the two doors (``adapters/http``, ``adapters/extproc``) never import
each other; and the serving code never imports the tooling in ``devtools/``.

Inside the layers split by capability (``services/``, ``engine/``, ``protocol/``, and ``run/tools``), a folder per
capability, and the capabilities' own arrows: the Agents API above everything; the core Responses path above the
tools and files, never importing agents or containers; tools above containers; containers above files; tenancy
beneath all. A module at a split layer's root is shared by the capabilities and imports none of them. No folder
of those layers holds more than ~20 modules.
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
# capability -> the capabilities its modules may import (its own always; a layer's shared root modules too)
MAY_IMPORT = {
    "tenancy": set(),
    "files": {"tenancy"},
    "containers": {"files", "tenancy"},
    "tools": {"containers", "files", "tenancy"},
    "responses": {"tools", "files", "tenancy"},
    "agents": {"responses", "tools", "containers", "files", "tenancy"},
}
SPLIT_LAYERS = ("services", "engine", "protocol", "run")
SHARED_ROOTS = ("services", "engine", "protocol")  # split whole: what is at their root is shared by the capabilities
FOLDER_MODULES = 20  # "no folder over ~20 modules": a folder past it is split by capability, not left to grow


def room(module: str) -> str:
    """``responses_bridge.store.sqlite`` -> ``store``; a top-level module is its own room."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def capability(module: str) -> str | None:
    """``responses_bridge.services.agents.turns`` -> ``agents``; None outside a capability's folder (a layer's
    shared root modules, the layers not split)."""
    parts = module.split(".")
    if len(parts) > 2 and parts[1] in SPLIT_LAYERS and parts[2] in MAY_IMPORT:
        return parts[2]
    return None


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


def module_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(["responses_bridge", *(parts[:-1] if parts[-1] == "__init__" else parts)])


@pytest.mark.parametrize("path", [path for path in SOURCES if capability(module_of(path))],
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_capabilities_import_down(path: Path) -> None:
    here = capability(module_of(path))
    assert here is not None
    wrong = {capability(name) for name in imports_of(path)} - MAY_IMPORT[here] - {here, None}
    assert not wrong, f"{path.relative_to(PACKAGE)} ({here}) imports {sorted(wrong)}"


@pytest.mark.parametrize("path", [path for path in SOURCES if path.relative_to(PACKAGE).parts[0] in SHARED_ROOTS
                                  and capability(module_of(path)) is None],
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_layers_shared_modules_import_none_of_its_capabilities(path: Path) -> None:
    layer = module_of(path).split(".")[1]
    reached = sorted({capability(name) for name in imports_of(path) if name.split(".")[1] == layer} - {None})
    assert not reached, f"{path.relative_to(PACKAGE)} is shared by the capabilities of {layer}/ but imports {reached}"


def test_no_folder_of_a_split_layer_is_a_warehouse() -> None:
    crowded = {}
    for layer in SHARED_ROOTS:
        for folder in [PACKAGE / layer, *(PACKAGE / layer).rglob("*/")]:
            if folder.is_dir() and folder.name != "__pycache__":
                modules = [p for p in folder.glob("*.py") if p.name != "__init__.py"]
                if len(modules) > FOLDER_MODULES:
                    crowded[str(folder.relative_to(PACKAGE))] = len(modules)
    assert not crowded, f"split these by capability: {crowded}"


def test_the_capability_arrows_form_no_circle() -> None:
    """Each capability is placed below the ones that may import it: a rule allowing a circle would fail here."""
    placed: list[str] = []
    waiting = dict(MAY_IMPORT)
    while waiting:
        ready = [name for name, below in waiting.items() if below <= set(placed)]
        assert ready, f"a circle among {sorted(waiting)}"
        placed += ready
        for name in ready:
            del waiting[name]
    assert placed[0] == "tenancy" and placed[-1] == "agents"
    assert "agents" not in set().union(*(MAY_IMPORT[name] for name in MAY_IMPORT if name != "agents"))
    assert not {"agents", "containers"} & MAY_IMPORT["responses"]


def test_the_capability_rules_see_the_folders() -> None:
    """The checker itself: the capability of a module in each folder, none at a layer's root, and an arrow that
    exists found, or the tests above would pass vacuously."""
    assert capability("responses_bridge.services.agents.turns") == "agents"
    assert capability("responses_bridge.services.agents.environments.mcp") == "agents"
    assert capability("responses_bridge.engine.responses.translator.Translator") == "responses"
    assert capability("responses_bridge.run.tools.shell") == "tools"
    assert capability("responses_bridge.services.pagination") is None
    assert capability("responses_bridge.store.sqlite.files.files") is None
    turns = imports_of(PACKAGE / "services" / "agents" / "turns.py")
    assert {"responses", "agents"} <= {capability(name) for name in turns}
    assert "tools" in {capability(name) for name in imports_of(PACKAGE / "engine" / "responses" / "output_builder.py")}


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
    assert "responses_bridge.demo.procs" in imports_of(PACKAGE / "devtools" / "demo.py")
    assert "responses_bridge.store.records" in imports_of(PACKAGE / "store" / "sqlite" / "responses.py")
    assert room("responses_bridge.envoy_config") == "envoy_config"
