"""A session's turn waiting on the client outlives its sidecar: ``kill -9``, and a SIGTERM (drain), while the
session ``requires_action`` for a call of the client's function, a ``self_hosted`` session's shell command, or an
MCP call held for the client's approval.

On SQLite the sidecar is started again on the same file; on PostgreSQL (``--store=postgres``) a second replica runs
beside the first from the start and takes the session over once the first's lease lapsed (or the drain let it go).
Either way the session comes back as it was: ``requires_action`` with the same pending call, its turn ``waiting``,
nothing told again (no second ``requires_action`` event, no turn ``failed``). The client's result (or decision),
sent to the process that survived, completes the turn once: one more model call (with the result), one answer,
and an approved MCP call made once.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
import pytest

from tests.integration.test_agents_durable import BETA, LOOKUP, TIMEOUT, _read_until, frames, sidecar, stop
from tests.support.mcp_server import MCPTestServer
from tests.support.postgres import store_from_env

REQUIRES_ACTION = b"event: agent.session.requires_action\n"


async def _requests_naming(http: aiohttp.ClientSession, requests_url: str, marker: str) -> int:
    async with http.get(requests_url) as answer:
        return sum(marker in str(entry.get("body")) for entry in (await answer.json())["data"])


async def _send_result(http: aiohttp.ClientSession, session_id: str, action: dict) -> None:
    """The client's result (an approval's decision), sent until a process holds the session (a 409
    ``session_busy`` until the dead replica's lease lapsed and the survivor took the session)."""
    deadline = asyncio.get_running_loop().time() + 30
    event = {"type": "agent.session.input.mcp_approval_request_result", "request_id": action["request_id"],
             "response": {"type": "mcp_tool_call", "decision": "approve"}} \
        if action["type"] == "mcp_approval_request" else \
        {"type": "agent.session.input.tool_result", "call_id": action["call_id"], "turn_id": action["turn_id"],
         "success": True, "output": "a word for a thing"}
    while True:
        async with http.post(f"/v1/agents/sessions/{session_id}/events", json={"events": [event]}) as answer:
            if answer.status == 202:
                return
            assert answer.status == 409 and asyncio.get_running_loop().time() < deadline, await answer.text()
        await asyncio.sleep(0.2)


@pytest.mark.parametrize("how", ["kill", "term"])
@pytest.mark.parametrize("kind", ["function", "shell", "approval"])
async def test_a_turn_waiting_on_the_client_survives_the_sidecar(kind: str, how: str, fake_upstream: str,
                                                                 tmp_path: Path, mcp: MCPTestServer) -> None:
    db = str(tmp_path / "bridge.db")
    shared = store_from_env() == "postgres"
    marker = f"waiting-{kind}-{how}"
    requests_url = fake_upstream.removesuffix("/v1") + "/_fake/requests"
    workspace = tmp_path / "work"
    workspace.mkdir()
    if kind == "function":
        body = {"agent": {"model": "fake-model", "tools": [LOOKUP]}, "environment": {"type": "none"},
                "input": f"call lookup now ({marker})"}
    elif kind == "shell":
        body = {"agent": {"model": "fake-model"}, "input": f"sh: echo {marker}",
                "environment": {"type": "self_hosted", "workspace_directory": str(workspace)}}
    else:
        tool = {"type": "mcp", "server_label": "tools", "allowed_tools": ["echo"],
                "transport": {"type": "http", "server_url": mcp.http_url}}
        body = {"agent": {"model": "fake-model", "tools": [tool]}, "environment": {"type": "none"},
                "input": f'call tools__echo [args={{"text": "{marker}"}}]'}
    # a lease of 3 s, not the module's 1 s: a replica's loop held up that long on a busy machine loses its
    # session to the other while alive, which is not what this test is about
    env = {"RESPONSES_BRIDGE_MCP_ALLOWED_HOSTS": "127.0.0.1", "RESPONSES_BRIDGE_BACKGROUND_LEASE_SECONDS": "3"}
    async with AsyncExitStack() as stack:
        first, first_base = await stack.enter_async_context(sidecar(tmp_path / "a", fake_upstream, db, env))
        other = await stack.enter_async_context(sidecar(tmp_path / "b", fake_upstream, db, env)) if shared else None
        async with aiohttp.ClientSession(first_base, headers=BETA, timeout=TIMEOUT) as http:
            async with http.post("/v1/agents/sessions", json=body) as answer:
                assert answer.status == 200, await answer.text()
                session_id = (await answer.json())["id"]
            async with http.get(f"/v1/agents/sessions/{session_id}/events") as answer:
                before = frames(await _read_until(answer, REQUIRES_ACTION))
            async with http.get(f"/v1/agents/sessions/{session_id}") as answer:
                waiting = await answer.json()
            calls_before = await _requests_naming(http, requests_url, marker)
            stop(first, how)
        assert first.process is not None
        await asyncio.get_running_loop().run_in_executor(None, first.process.wait, 30)
        if other is None:  # SQLite: the restarted process takes its own session back
            other = await stack.enter_async_context(sidecar(tmp_path / "c", fake_upstream, db, env))
        _, base = other
        (action,) = waiting["required_actions"]
        async with aiohttp.ClientSession(base, headers=BETA, timeout=TIMEOUT) as http:
            async with http.get(f"/v1/agents/sessions/{session_id}") as answer:
                back = await answer.json()
            async with http.get(f"/v1/agents/sessions/{session_id}/turns/{action['turn_id']}") as answer:
                turn = await answer.json()
            await _send_result(http, session_id, action)
            async with http.get(f"/v1/agents/sessions/{session_id}/events",
                                params={"until_idle": "true", "after": before[-1][0]}) as answer:
                after = frames(await answer.read())
            async with http.get(f"/v1/agents/sessions/{session_id}/turns/{action['turn_id']}/items",
                                params={"order": "asc"}) as answer:
                items = (await answer.json())["data"]
            calls_after = await _requests_naming(http, requests_url, marker)
    assert waiting["status"] == "requires_action" and calls_before == 1
    assert back["status"] == "requires_action" and back["required_actions"] == waiting["required_actions"], back
    assert turn["status"] == "waiting", turn
    kinds = [kind_ for _, kind_, _ in after]
    assert "agent.session.requires_action" not in kinds  # not told again: the client was told before the stop
    assert "agent.session.turn.failed" not in kinds and "agent.session.failed" not in kinds, kinds
    assert kinds.count("agent.session.turn.completed") == 1 and kinds[-1] == "agent.session.idle", kinds
    assert calls_after == calls_before + 1  # one more model call, with the client's result
    answers = [item for item in items if item["type"] == "message" and item["role"] == "assistant"]
    assert len(answers) == 1, items
    if kind == "approval":  # the approved call, made once, by the process that survived
        (call,) = [item for item in items if item["type"] == "mcp_call"]
        assert call["status"] == "completed" and marker in call["output"], call
