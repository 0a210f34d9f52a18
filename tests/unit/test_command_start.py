"""What a process started as one command loads and does before it works: only that command's modules (the
others' are imported for ``--help`` alone), and its start without the cyclic collector (process/startup_gc.py). Each is
paid by every sidecar, fake upstream and CLI call a deployment or a test run starts."""

from __future__ import annotations

import gc
import subprocess
import sys

import pytest

from responses_bridge.cli import COMMAND_MODULES, build_parser
from responses_bridge.process import startup_gc

LOADED = """
import sys
from responses_bridge.cli import build_parser
build_parser({argv!r})
print(" ".join(sorted(name for name in sys.modules if name.startswith(("responses_bridge", "pydantic_settings")))))
"""


def loaded_by(argv: list[str]) -> set[str]:
    """The bridge's modules (and pydantic-settings) a fresh interpreter has loaded once it built the parser for
    ``argv``."""
    result = subprocess.run([sys.executable, "-c", LOADED.format(argv=argv)], capture_output=True, text=True,
                            check=True)
    return set(result.stdout.split())


def test_the_fake_upstream_loads_neither_serve_nor_the_settings() -> None:
    loaded = loaded_by(["fake-upstream", "--port", "1"])
    assert "responses_bridge.serve" not in loaded and "pydantic_settings" not in loaded, sorted(loaded)


def test_a_command_loads_no_other_commands_module() -> None:
    loaded = loaded_by(["keys", "list"])
    assert "responses_bridge.commands.keys" in loaded
    for module in ("responses_bridge.serve", "responses_bridge.demo.command", "responses_bridge.commands.doctor",
                   "responses_bridge.envoy_config.command", "responses_bridge.probe.command"):
        assert module not in loaded, module


@pytest.mark.parametrize("argv", [None, ["--help"], ["no-such-command"]])
def test_without_a_command_named_every_command_is_there(argv: list[str] | None) -> None:
    parser = build_parser(argv)
    [commands] = [action for action in parser._actions if hasattr(action, "choices") and action.choices]
    assert list(commands.choices) == list(COMMAND_MODULES)


def test_the_collector_is_paused_and_resumed_once() -> None:
    assert gc.isenabled()
    startup_gc.pause()
    try:
        assert not gc.isenabled()
        startup_gc.resume()
        assert gc.isenabled() and gc.get_freeze_count() > 0  # what the start built: frozen
        gc.disable()  # a collector someone else turned off: resume() leaves it off
        startup_gc.resume()
        assert not gc.isenabled()
    finally:
        gc.unfreeze()
        gc.enable()


def test_a_collector_already_off_stays_off() -> None:
    gc.disable()
    try:
        startup_gc.pause()
        startup_gc.resume()
        assert not gc.isenabled()
    finally:
        gc.enable()
