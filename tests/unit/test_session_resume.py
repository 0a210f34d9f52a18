"""What a resumed session turn starts from (services/agents/session_resume.py), and a session's events stored before any
reader sees them (services/agents/events.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from responses_bridge.services.agents.events import SessionEvents
from responses_bridge.services.agents.session_resume import carried, is_boundary
from tests.unit.test_agent_store import agent_store


def _frame(kind: str, item: dict[str, Any]) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (kind.encode(), orjson.dumps({"type": kind, "item": item}))


def _added(item: dict[str, Any]) -> bytes:
    return _frame("response.output_item.added", item)


def _done(item: dict[str, Any]) -> bytes:
    return _frame("response.output_item.done", item)


MCP = {"id": "mcp_1", "type": "mcp_call", "server_label": "files", "name": "delete", "arguments": "{}",
       "output": "deleted"}
SHELL = {"id": "sh_1", "type": "shell_call", "call_id": "call_sh", "action": {"commands": ["rm -rf build"]}}
SHELL_OUT = {"id": "sho_1", "type": "shell_call_output", "call_id": "call_sh", "output": []}
TEXT = {"id": "msg_1", "type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "hi"}]}


def test_a_call_with_a_recorded_result_is_carried_and_what_came_after_it_is_made_again() -> None:
    frames = [_added(MCP), _done(MCP), _added(TEXT), _done(TEXT)]
    assert carried(frames) == [MCP]  # the message after the last step is the repeated call's to make


def test_a_server_side_call_started_without_a_result_is_told_as_interrupted_never_run_again() -> None:
    frames = [_added(SHELL), _done(SHELL)]  # the command was given to the shell; its output never came
    kept = carried(frames)
    assert len(kept) == 1 and kept[0]["role"] == "developer"
    assert "shell_call" in kept[0]["content"] and "rm -rf build" in kept[0]["content"]
    assert "not made again" in kept[0]["content"]
    pending_mcp = carried([_added({**MCP, "output": None})])
    assert pending_mcp[0]["role"] == "developer" and "'delete' on MCP server 'files'" in pending_mcp[0]["content"]
    spawned = carried([_added({"id": "ma_1", "type": "multi_agent_call", "call_id": "c1", "action": "spawn_agent"})])
    assert "multi_agent_call (spawn_agent)" in spawned[0]["content"]  # an action that is a word, not an object


def test_a_command_with_its_output_is_carried_whole_and_a_search_started_is_left_to_repeat() -> None:
    search = {"id": "ws_1", "type": "web_search_call", "status": "in_progress"}
    frames = [_added(SHELL), _done(SHELL), _added(SHELL_OUT), _done(SHELL_OUT), _added(search)]
    assert carried(frames) == [SHELL, SHELL_OUT]
    assert carried([_added(TEXT)]) == []  # a first model call cut short: nothing to carry
    assert is_boundary({"type": "response.output_item.done", "item": SHELL_OUT})
    assert not is_boundary({"type": "response.output_item.done", "item": SHELL})
    assert not is_boundary({"type": "response.output_item.done", "item": TEXT})


@pytest.mark.parametrize("kind", ["sqlite"])
async def test_an_event_a_reader_saw_is_in_the_store(kind: str, tmp_path: Path,
                                                     request: pytest.FixtureRequest) -> None:
    """Events are written in batches behind their emit; a reader is shown only what a batch wrote, so a process
    killed right after a reader saw event ``n`` leaves ``n`` in the store to resume after."""
    async with agent_store(kind, request, tmp_path) as store:
        events = SessionEvents(store)
        live = await events.log_of("sess_1", "a")
        follower = events.follow("sess_1", -1, tenant="a", until_idle=False, keepalive=5)
        for number in range(5):
            await live.emit({"type": "agent.session.turn.output_text.delta", "delta": str(number)})
        seen = await anext(follower)
        shown = [line[4:].decode() for line in seen.split(b"\n") if line.startswith(b"id: ")]
        stored = [event_id for _, event_id, _ in await store.events_after("sess_1", -1, tenant="a")]
        assert shown and set(shown) <= set(stored)
        await follower.aclose()
