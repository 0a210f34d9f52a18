"""A module a request loads on its first use is imported on a worker thread: the event loop goes on running
callbacks while it imports (the MCP client's ~1.2 CPU-s of imports once held up a process's lease heartbeat
until another replica took its session)."""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from responses_bridge.process import off_loop_import
from responses_bridge.process.off_loop_import import import_off_loop

SLOW_MODULE = """
import threading, time
IMPORTED_ON = threading.get_ident()
_start = time.monotonic()
while time.monotonic() - _start < 0.3:  # an import doing Python work, as the MCP SDK's does
    sum(range(1000))
"""


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    root = tmp_path / "offloop_pkg"
    root.mkdir()
    (root / "__init__.py").write_text("")
    (root / "slow.py").write_text(SLOW_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "offloop_pkg"
    for name in [name for name in sys.modules if name.startswith("offloop_pkg")]:
        del sys.modules[name]


def test_the_import_runs_on_another_thread_while_the_loop_runs_callbacks(package: str) -> None:
    async def main() -> int:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0)
                ticks += 1

        ticker = asyncio.create_task(tick())
        await asyncio.sleep(0)
        before = ticks
        await import_off_loop(".slow", package)
        during = ticks - before
        ticker.cancel()
        return during

    during = asyncio.run(main())
    module = sys.modules[f"{package}.slow"]
    assert threading.get_ident() != module.IMPORTED_ON
    assert during > 1  # the loop ran its other task while the module imported (on the loop it would not have)


def test_a_loaded_module_is_not_imported_again_nor_sent_to_a_thread(package: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    asyncio.run(import_off_loop(f"{package}.slow"))
    first = sys.modules[f"{package}.slow"]

    async def no_thread(*args: object) -> None:
        raise AssertionError("a loaded module went to a thread")

    monkeypatch.setattr(off_loop_import.asyncio, "to_thread", no_thread)
    asyncio.run(import_off_loop(".slow", package))
    assert sys.modules[f"{package}.slow"] is first


def test_a_module_that_fails_to_import_raises_to_the_caller(package: str, tmp_path: Path) -> None:
    (tmp_path / "offloop_pkg" / "broken.py").write_text("raise ImportError('no such library')\n")
    with pytest.raises(ImportError, match="no such library"):
        asyncio.run(import_off_loop(".broken", package))


SOURCE = Path(__file__).resolve().parents[2] / "src" / "responses_bridge"


def _named_off_loop() -> list[tuple[str, str]]:
    """Every ``import_off_loop("<name>", __package__)`` in the source: (the calling module's package, the name)."""
    found = []
    for path in sorted(SOURCE.rglob("*.py")):
        package = ".".join(["responses_bridge", *path.relative_to(SOURCE).parent.parts])  # a module's, or __init__'s
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "import_off_loop"
                    and isinstance(node.args[0], ast.Constant)):
                found.append((package, node.args[0].value))
    return found


def test_every_module_named_for_an_off_loop_import_exists() -> None:
    """A name relative to the caller's package goes stale when the caller moves to another folder, and nothing
    fails until the first request that needs the module (an agent environment's MCP call failed so)."""
    named = _named_off_loop()
    assert len(named) >= 3, named  # the MCP client's first users: the run's tools, environments, OAuth refresh
    for package, name in named:
        absolute = importlib.util.resolve_name(name, package)
        assert importlib.util.find_spec(absolute) is not None, f"{package}: {name} names no module ({absolute})"
