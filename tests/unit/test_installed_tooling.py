"""The wheel carries of ``demo/`` exactly what the user commands (``fake-upstream``, ``demo``) import, and nothing
that only the tests and benchmarks use (a fake Kubernetes API, stand-in pods, /proc readings): those live in the
checkout's top-level ``tools/``, outside ``src/``, which is all pyproject.toml's package find looks in.

Cheap: the installed package list is what setuptools finds with pyproject.toml's own settings (no wheel is built;
tests/deploy/test_image.py installs a real one), and the imports are read from the sources.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

from setuptools import find_namespace_packages

from responses_bridge.cli import COMMAND_MODULES

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "responses_bridge"
DEMO = f"{PACKAGE}.demo"
TOOLS = ROOT / "tools"


def installed_modules() -> dict[str, Path]:
    """Every module of the wheel, by dotted name: the .py files of the packages pyproject.toml's find selects."""
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    where = ROOT / find["where"][0]
    packages = find_namespace_packages(str(where), include=find.get("include", ("*",)), exclude=find.get("exclude", ()))
    modules: dict[str, Path] = {}
    for package in packages:
        for path in (where / package.replace(".", "/")).glob("*.py"):
            name = package if path.name == "__init__.py" else f"{package}.{path.stem}"
            modules[name] = path
    return modules


def source_modules() -> dict[str, Path]:
    """Every module under src/, installed or not."""
    src = ROOT / "src"
    return {".".join(path.relative_to(src).with_suffix("").parts).removesuffix(".__init__"): path
            for path in (src / PACKAGE).rglob("*.py")}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules (of ``known``) that the file imports, relative imports resolved; ``from pkg import mod`` counts
    the module ``pkg.mod``, an import inside a function as much as one at the top."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join([*base, *([node.module] if node.module else [])])
            found.update([target, *(f"{target}.{alias.name}" for alias in node.names)])
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found & known


def reached_by_users() -> set[str]:
    """The demo/ modules the installed serving code (the CLI's commands) imports, and all they import in turn."""
    installed, everything = installed_modules(), source_modules()
    known = set(everything)
    queue = sorted({target for name, path in installed.items() if not name.startswith(DEMO)
                    for target in imports_of(name, path, known) if target.startswith(DEMO)
                    and target in installed})  # a guarded import of a left-out module (the bench command's) is no root
    # the CLI imports each command's module by name, when that command runs (cli.py's COMMAND_MODULES)
    queue += sorted(f"{PACKAGE}{module}" for module in COMMAND_MODULES.values()
                    if module is not None and f"{PACKAGE}{module}".startswith(DEMO)
                    and f"{PACKAGE}{module}" in installed)
    reached: set[str] = set()
    while queue:
        name = queue.pop()
        if name in reached:
            continue
        reached.add(name)
        queue.extend(target for target in imports_of(name, everything[name], known) if target.startswith(DEMO))
    return reached


def test_the_user_commands_import_nothing_the_wheel_leaves_out() -> None:
    reached = reached_by_users()
    assert {f"{DEMO}.fake_server", f"{DEMO}.command"} <= reached
    assert reached <= set(installed_modules()), sorted(reached - set(installed_modules()))


def test_nothing_installed_in_demo_serves_only_tests_or_benchmarks() -> None:
    installed = {name for name in installed_modules() if name.startswith(f"{DEMO}.")}
    assert installed - reached_by_users() == set(), "installed, yet no user command imports it"


def test_the_test_doubles_stay_in_the_checkout() -> None:
    """The modules only tests and benchmarks use exist in the checkout's tools/, which the wheel's package find never
    looks in, so the two checks above see a tree that has something to leave out. (No module of the package imports
    tools/, the bench command's loader aside: tests/unit/test_import_direction.py.)"""
    for relative in ("fakes/kube.py", "fakes/standin_pod.py", "fakes/cluster.py", "process_memory.py",
                     "bench/latency/bench.py"):
        assert (TOOLS / relative).is_file(), relative
    installed = installed_modules()
    assert all(name == PACKAGE or name.startswith(f"{PACKAGE}.") for name in installed)
    assert all(path.is_relative_to(ROOT / "src") for path in installed.values())
