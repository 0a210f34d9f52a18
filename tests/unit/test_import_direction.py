"""The house's arrows point one way: read from the source's own imports, so a wrong one fails here first.

Every room of the package (a folder at its root, or a module there) sits on a tier, and a room imports only rooms
of the tiers below its own: the commands and the doors above the runtime, the runtime above the services, the
settings above the run they configure, the run above the engine, the engine above the sealing and the store, and
at the bottom the leaves every room may use (ids, masking, the extras' errors, the network's helpers). A new room
is placed here before it can exist. Beside the tiers, the rules that say what a room is: the store keeps data only
(no wire shapes, no translation, no I/O policy above it); the engine calls no door, service, run or upstream
client; the run uses no service (shared shapes live in ``protocol/``); services use no door; the two doors
(``adapters/http``, ``adapters/extproc``) never import each other; and nothing in the package imports the
checkout's tooling (``tools/``, outside ``src/``), the ``bench`` command's loader in cli.py aside.

Inside the layers split by capability (``services/``, ``engine/``, ``protocol/``, and ``run/tools``), a folder per
capability, and the capabilities' own arrows: the Agents API above everything; the core Responses path above the
tools and files, never importing agents or containers; tools above containers; containers above files; tenancy
beneath all. A module at a split layer's root is shared by the capabilities and imports none of them. The HTTP
door is split the same way: a folder per capability it serves, each using only its own capability's services and
what that capability may use, the door's plumbing at its root importing none of them (``app.py``, which assembles
the routes, aside).

The package reads as a table of contents: at most 12 modules at its root, no folder over 20 modules, and every
folder's ``__init__`` says what it holds.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "responses_bridge"
TOOLING = Path(__file__).resolve().parents[2] / "tools"
TIERS: tuple[frozenset[str], ...] = tuple(frozenset(tier.split()) for tier in (
    "__main__",                      # python -m responses_bridge
    "cli",                           # the command
    "serve",                         # serve, which starts everything
    "commands adapters",             # the other commands and their checks; the two doors
    "runtime",                       # the composition root the doors are given
    "runtime_sandbox demo",          # what the sandbox backs, opened; the demo and its fake model
    "services envoy_config probe",   # what holds state; Envoy's configuration; what a backend can do
    "config",                        # the settings, which name the run's tools, the sandbox's and the store's
    "run",                           # the turn loop and the tools it drives
    "engine",                        # translation, no I/O
    "sealing",                       # sealed blobs, their key kept in the store
    "sandbox store",                 # where code runs; where data is kept
    "fairness replicas",             # the shared pools' rule and the memory budget's mechanics; an upstream's replicas
    "observability process protocol",  # logs, metrics, traces; the process's loop and jobs; wire shapes
    "net ids redact extras settings_error __init__",  # the leaves
))
"""Top to bottom: a room imports only rooms of the tiers below its own (never one beside it)."""
ROOT_MODULES = 12
POLICY = {"adapters", "services", "run", "runtime", "commands", "demo", "serve", "cli"}
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
    "agents": {"batches", "responses", "tools", "containers", "files", "tenancy"},
    "batches": {"responses", "files", "tenancy"},
}
DOOR_FOLDERS = {  # the HTTP door's folders -> the door's folders each may import
    "websocket": set(), "upstream": set(), "files": set(), "containers": set(), "agents": set(),
    "responses": {"websocket"},  # GET /v1/responses upgraded is WebSocket mode
    "console": {"agents"},  # the console shows the sessions the agents' routes serve
    "batches": set(),
}
DOOR_SERVES = {"responses": "responses", "websocket": "responses", "upstream": "files", "files": "files",
               "containers": "containers", "agents": "agents", "console": "agents",
               "batches": "batches"}
"""The services capability each of the door's folders speaks for (the upstream folder's embeddings: files')."""
DOOR_ASSEMBLY = {"app"}  # the door's root module that assembles every folder's routes
SPLIT_LAYERS = ("services", "engine", "protocol", "run")
SHARED_ROOTS = ("services", "engine", "protocol")  # split whole: what is at their root is shared by the capabilities
FOLDER_MODULES = 20  # "no folder over ~20 modules": a folder past it is split by capability, not left to grow


def room(module: str) -> str:
    """``responses_bridge.store.sqlite`` -> ``store``; a top-level module is its own room."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def tier(name: str) -> int:
    return next(index for index, rooms in enumerate(TIERS) if name in rooms)


def capability(module: str) -> str | None:
    """``responses_bridge.services.agents.turns`` -> ``agents``; None outside a capability's folder (a layer's
    shared root modules, the layers not split)."""
    parts = module.split(".")
    if len(parts) > 2 and parts[1] in SPLIT_LAYERS and parts[2] in MAY_IMPORT:
        return parts[2]
    return None


def door_folder(module: str) -> str | None:
    """``responses_bridge.adapters.http.agents.vault_routes`` -> ``agents``; None at the door's root, elsewhere."""
    parts = module.split(".")
    return parts[3] if len(parts) > 4 and parts[1:3] == ["adapters", "http"] and parts[3] in DOOR_FOLDERS else None


def module_of(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package).with_suffix("").parts
    return ".".join(["responses_bridge", *(parts[:-1] if parts[-1] == "__init__" else parts)])


def all_imports(path: Path, package: Path = PACKAGE) -> set[str]:
    """Every module (or name inside one) the file imports, relative imports resolved."""
    module_parts = ["responses_bridge", *path.relative_to(package).with_suffix("").parts]
    parent = module_parts if path.name == "__init__.py" else module_parts[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = parent[: len(parent) - node.level + 1] if node.level else []
            target = ".".join([*base, *([node.module] if node.module else [])])
            found.update([target, *(f"{target}.{alias.name}" for alias in node.names)])
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def imports_of(path: Path, package: Path = PACKAGE) -> set[str]:
    """Every ``responses_bridge`` module (or name inside one) the file imports."""
    return {name for name in all_imports(path, package) if name.startswith("responses_bridge.")}


def wrong_arrows(path: Path, package: Path = PACKAGE) -> list[str]:
    """What the file imports that its room may not: a room beside or above its tier, or one the rules forbid."""
    here = room(module_of(path, package)) or path.stem
    targets = {room(name) for name in imports_of(path, package)} - {here}
    wrong = [f"{target} (tier {tier(target)}, {here} is on {tier(here)})" for target in sorted(targets)
             if tier(target) <= tier(here)]
    wrong += [f"{target} (forbidden to {here})" for target in sorted(targets & FORBIDDEN.get(here, set()))]
    return wrong


def wrong_door_arrows(path: Path, package: Path = PACKAGE) -> list[str]:
    """What a file of the HTTP door imports of the door's folders and of the services that it may not."""
    module = module_of(path, package)
    here = door_folder(module)
    wrong = []
    for name in imports_of(path, package):
        target = door_folder(name)
        if target is not None and target != here:
            if here is None and module.rsplit(".", 1)[-1] not in DOOR_ASSEMBLY:
                wrong.append(f"{name} (the door's root imports none of its folders)")
            elif here is not None and target not in DOOR_FOLDERS[here]:
                allowed = sorted(DOOR_FOLDERS[here]) or "none"
                wrong.append(f"{name} ({here}/ may import {allowed} of the door's folders)")
        if here is not None and name.split(".")[1] == "services":
            serves = DOOR_SERVES[here]
            used = capability(name)
            if used is not None and used not in MAY_IMPORT[serves] | {serves}:
                wrong.append(f"{name} ({here}/ speaks for services/{serves}/)")
    return wrong


def crowded_folders(package: Path = PACKAGE) -> dict[str, int]:
    return {str(folder.relative_to(package)): count for folder in [package, *package.rglob("*/")]
            if folder.is_dir() and folder.name != "__pycache__"
            for count in [len(list(folder.glob("*.py")))] if count > FOLDER_MODULES}


def tooling_imports(path: Path, package: Path = PACKAGE) -> set[str]:
    """The checkout's tooling (the top-level ``tools`` package) a module of the package imports."""
    return {name for name in all_imports(path, package) if name == "tools" or name.startswith("tools.")}


SOURCES = sorted(PACKAGE.rglob("*.py"))
FOLDERS = sorted({path.parent for path in SOURCES if path.parent != PACKAGE})


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_arrows_point_one_way(path: Path) -> None:
    assert not wrong_arrows(path), f"{path.relative_to(PACKAGE)} imports {wrong_arrows(path)}"
    if path != PACKAGE / "cli.py":
        assert not tooling_imports(path), f"{path.relative_to(PACKAGE)} imports the checkout's tools/"


def test_every_room_is_placed_on_one_tier() -> None:
    rooms = {path.stem if path.suffix == ".py" else path.name for path in PACKAGE.iterdir()
             if path.suffix == ".py" or (path.is_dir() and path.name != "__pycache__")}
    placed = [name for rooms_of_tier in TIERS for name in rooms_of_tier]
    assert len(placed) == len(set(placed)), "a room on two tiers"
    assert rooms == set(placed), f"place on a tier: {sorted(rooms - set(placed))}; gone: {sorted(set(placed) - rooms)}"


def test_the_package_root_is_a_table_of_contents() -> None:
    modules = sorted(path.name for path in PACKAGE.glob("*.py"))
    assert len(modules) <= ROOT_MODULES, f"{len(modules)} modules at the package's root: {modules}"


def test_no_folder_is_a_warehouse() -> None:
    """Nor in the checkout's tooling, which keeps the package's bar though it is not served."""
    crowded = {**crowded_folders(), **{f"tools/{name}": count for name, count in crowded_folders(TOOLING).items()}}
    assert not crowded, f"split these by capability: {crowded}"


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_folder_says_what_it_holds(folder: Path) -> None:
    """Each folder's ``__init__`` says what it holds; a room at the package's root also says what it may import."""
    if folder.name == "_pb":  # protoc's output
        return
    init = folder / "__init__.py"
    assert init.is_file(), f"{folder.relative_to(PACKAGE)} has no __init__.py"
    doc = ast.get_docstring(ast.parse(init.read_text())) or ""
    assert len(doc) > 40 and "TODO" not in doc, f"{init.relative_to(PACKAGE)}: say what the folder holds"
    if folder.parent == PACKAGE:
        assert "import" in doc.lower(), f"{init.relative_to(PACKAGE)}: say what the room may import"


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


@pytest.mark.parametrize("path", sorted((PACKAGE / "adapters" / "http").rglob("*.py")),
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_http_doors_folders_import_down(path: Path) -> None:
    assert not wrong_door_arrows(path), f"{path.relative_to(PACKAGE)} imports {wrong_door_arrows(path)}"


def test_the_capability_arrows_form_no_circle() -> None:
    """Each capability is placed below the ones that may import it: a rule allowing a circle would fail here."""
    for rules in (MAY_IMPORT, DOOR_FOLDERS):
        placed: list[str] = []
        waiting = dict(rules)
        while waiting:
            ready = [name for name, below in waiting.items() if below <= set(placed)]
            assert ready, f"a circle among {sorted(waiting)}"
            placed += ready
            for name in ready:
                del waiting[name]
    assert "agents" not in set().union(*(MAY_IMPORT[name] for name in MAY_IMPORT if name != "agents"))
    assert not {"agents", "containers"} & MAY_IMPORT["responses"]
    assert set(DOOR_SERVES) == set(DOOR_FOLDERS) and set(DOOR_SERVES.values()) <= set(MAY_IMPORT)


def test_the_capability_rules_see_the_folders() -> None:
    """The checker itself: the capability of a module in each folder, none at a layer's root, and an arrow that
    exists found, or the tests above would pass vacuously."""
    assert capability("responses_bridge.services.agents.turns") == "agents"
    assert capability("responses_bridge.services.agents.environments.mcp") == "agents"
    assert capability("responses_bridge.engine.responses.translator.Translator") == "responses"
    assert capability("responses_bridge.run.tools.shell") == "tools"
    assert capability("responses_bridge.services.pagination") is None
    assert capability("responses_bridge.store.sqlite.files") is None
    turns = imports_of(PACKAGE / "services" / "agents" / "turns.py")
    assert {"responses", "agents"} <= {capability(name) for name in turns}
    assert "tools" in {capability(name) for name in imports_of(PACKAGE / "engine" / "responses" / "output_builder.py")}
    assert door_folder("responses_bridge.adapters.http.agents.vault_routes") == "agents"
    assert door_folder("responses_bridge.adapters.http.params") is None
    routes = imports_of(PACKAGE / "adapters" / "http" / "responses" / "responses_routes.py")
    assert "websocket" in {door_folder(name) for name in routes}


def door(module: str) -> str | None:
    """``responses_bridge.adapters.http.app`` -> ``adapters.http``; None outside the two doors."""
    parts = module.split(".")
    name = ".".join(parts[1:3])
    return name if name in DOORS else None


@pytest.mark.parametrize("path", [path for path in SOURCES if door(module_of(path))],
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_doors_do_not_import_each_other(path: Path) -> None:
    here = door(module_of(path))
    others = {door(name) for name in imports_of(path)} - {here, None}
    assert not others, f"{path.relative_to(PACKAGE)} imports {sorted(others)}"


def plant(package: Path, relative: str, text: str = "") -> Path:
    """A module of a copy of the package's shape, for the checker to be shown a file that breaks a rule."""
    path = package / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_the_rules_catch_what_they_forbid(tmp_path: Path) -> None:
    """Each rule, shown a file that breaks it (a wrong arrow added on purpose), fails: the rules are not vacuous."""
    package = tmp_path / "responses_bridge"
    # the store reaching up to a door, and the run to a service: tiers and the forbidden rooms
    store = plant(package, "store/sqlite/responses.py", "from ...adapters.http import app\n")
    assert any("adapters" in arrow and "tier" in arrow for arrow in wrong_arrows(store, package))
    assert any("forbidden" in arrow for arrow in wrong_arrows(store, package))
    run = plant(package, "run/drive.py", "from ..services.responses.background import BackgroundService\n")
    assert wrong_arrows(run, package)
    # two rooms on one tier: neither imports the other
    assert wrong_arrows(plant(package, "commands/keys.py", "from ..adapters.http.errors import error\n"), package)
    # a leaf reaching up, however little
    assert wrong_arrows(plant(package, "net/errors.py", "from ..ids import new_id\n"), package)
    # the settings reaching the runtime that reads them: a circle the tiers cannot hold
    assert wrong_arrows(plant(package, "config/settings.py", "from ..runtime import Runtime\n"), package)
    # the right arrows pass
    assert not wrong_arrows(plant(package, "run/history.py", "from ..engine.sse import encode\nfrom .. import ids\n"),
                            package)
    # the HTTP door's folders: one reaching another's, the plumbing reaching a folder, a folder another's services
    files = plant(package, "adapters/http/files/files_routes.py", "from ..agents.vault_routes import VaultRoutes\n")
    assert wrong_door_arrows(files, package)
    params = plant(package, "adapters/http/params.py", "from .responses.responses_routes import ResponsesRoutes\n")
    assert wrong_door_arrows(params, package)
    containers = plant(package, "adapters/http/containers/skills_routes.py",
                       "from ....services.agents.sessions import SessionService\n")
    assert wrong_door_arrows(containers, package)
    assert not wrong_door_arrows(plant(package, "adapters/http/app.py", "from .agents.agents_routes import R\n"),
                                 package)
    # the tooling, a crowded folder, a crowded root
    tooling = plant(package, "services/readiness.py", "from tools.fakes.kube import FakeKube\n")
    assert tooling_imports(tooling, package) == {"tools.fakes.kube", "tools.fakes.kube.FakeKube"}
    for index in range(FOLDER_MODULES + 1):
        plant(package, f"sandbox/module_{index}.py")
    assert crowded_folders(package) == {"sandbox": FOLDER_MODULES + 1}


def test_the_walk_sees_imports() -> None:
    """The checker itself: it must find the arrows that do exist, or every test above passes vacuously."""
    assert "responses_bridge.demo.procs" in imports_of(PACKAGE / "demo" / "command.py")
    assert "responses_bridge.store.records" in imports_of(PACKAGE / "store" / "sqlite" / "responses.py")
    assert "responses_bridge.fairness.share" in imports_of(PACKAGE / "fairness" / "slots.py")
    assert room("responses_bridge.envoy_config") == "envoy_config"
    assert tooling_imports(PACKAGE / "cli.py") == {"tools.bench.latency", "tools.bench.latency.bench"}
