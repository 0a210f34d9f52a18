"""The loop factory (process/event_loop.py): uvloop by default where installed, the standard library's on request, and
uvloop asked for where it is missing a one-line configuration mistake (never a silent fall back)."""

from __future__ import annotations

import asyncio
import sys

import pytest

from responses_bridge.cli import main
from responses_bridge.process import event_loop


async def loop_name() -> str:
    return event_loop.running_loop_name()


@pytest.mark.parametrize(("choice", "expected"), [("auto", "uvloop"), ("uvloop", "uvloop"), ("asyncio", "asyncio")])
def test_run_uses_the_loop_chosen(choice: str, expected: str) -> None:
    assert event_loop.run(loop_name(), choice) == expected


def test_auto_without_uvloop_is_the_standard_library_s(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    assert event_loop.loop_factory("auto") == ("asyncio", None)
    assert event_loop.run(loop_name(), "auto") == "asyncio"


def test_uvloop_asked_for_where_it_is_missing_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)
    monkeypatch.setenv("RESPONSES_BRIDGE_EVENT_LOOP", "uvloop")
    assert main(["serve", "--db", ":memory:"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("responses-bridge serve: event_loop=uvloop, but uvloop is not "
                                                   "installed here: pip install uvloop"), err


def test_a_loop_that_does_not_exist_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("RESPONSES_BRIDGE_EVENT_LOOP", "trio")
    assert main(["serve", "--db", ":memory:"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("responses-bridge serve: RESPONSES_BRIDGE_EVENT_LOOP='trio': "), err


def test_the_development_servers_read_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESPONSES_BRIDGE_EVENT_LOOP", "asyncio")
    assert event_loop.new_loop_from_environment() is None
    monkeypatch.setenv("RESPONSES_BRIDGE_EVENT_LOOP", "uvloop")
    loop = event_loop.new_loop_from_environment()
    assert loop is not None and not isinstance(loop, asyncio.SelectorEventLoop)
    loop.close()
