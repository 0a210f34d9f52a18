"""Sessions with a ``self_hosted`` environment through both doors: the model's shell commands are handed to the
client (the session ``requires_action`` with a ``function_call`` action named ``shell``, the command shown as a
``command_execution`` item), the client runs them in its own workspace and sends the result back as a
``tool_result`` event, and the turn goes on with it. Every 2xx answer and every event is validated strictly with the
SDK's own types."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import openai
import pytest
from openai.types.beta import AgentSession

from tests.integration.test_agents_api import BETA, MODEL, frames, read_until_idle, strict
from tests.support.sdk import async_sdk

pytestmark = pytest.mark.store_proven(
    "tests/integration/test_agents_automations_replicas.py",
    "tests/integration/test_replicas.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)


@pytest.fixture
async def beta_client(base_url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with async_sdk(base_url=f"{base_url}/v1", api_key="sk-client", max_retries=0,
                                  timeout=60) as sdk:
        yield sdk


async def run_here(commands: list[str], workspace: Path) -> tuple[bool, str]:
    """The client's side: each command with ``/bin/sh -c`` in its workspace."""
    printed = ""
    for command in commands:
        process = await asyncio.create_subprocess_exec("/bin/sh", "-c", command, cwd=workspace,
                                                       stdout=asyncio.subprocess.PIPE,
                                                       stderr=asyncio.subprocess.STDOUT)
        out, _ = await process.communicate()
        printed += out.decode()
        if process.returncode != 0:
            return False, printed
    return True, printed


async def test_the_client_runs_the_commands(beta_client: openai.AsyncOpenAI, http: aiohttp.ClientSession,
                                            tmp_path: Path) -> None:
    workspace = tmp_path / "work"
    workspace.mkdir()
    agent = await beta_client.beta.agents.create(model=MODEL, instructions="Use the shell.")
    body = {"agent_id": agent.id, "stream": True, "input": "sh: echo hello > greeting.txt && cat greeting.txt",
            "environment": {"type": "self_hosted", "workspace_directory": str(workspace)}}
    async with http.post("/v1/agents/sessions", json=body, headers=BETA) as answer:
        raw = b""
        async for chunk in answer.content.iter_any():
            raw += chunk
            if b"event: agent.session.requires_action\n" in raw and raw.endswith(b"\n\n"):
                break
    first = frames(raw)
    session = first[0][1]["session"]
    environment = session["environment"]
    assert environment["type"] == "self_hosted" and environment["workspace_directory"] == str(workspace)
    assert environment["remote_url"] == f"/v1/agents/sessions/{session['id']}/events"
    [(_, asked)] = [frame for frame in first if frame[1]["type"] == "agent.session.requires_action"]
    [action] = asked["session"]["required_actions"]
    assert action["type"] == "function_call" and action["name"] == "shell"
    assert action["arguments"]["commands"] == ["echo hello > greeting.txt && cat greeting.txt"]
    [shown] = [event["item"] for _, event in first if event["type"] == "agent.session.turn.item.added"
               and event["item"]["type"] == "command_execution"]
    assert shown["status"] == "in_progress" and shown["command"] == action["arguments"]["commands"][0]
    retrieved = await beta_client.beta.agents.sessions.retrieve(session["id"])
    async with http.get(f"/v1/agents/sessions/{session['id']}", headers=BETA) as answer:
        strict(AgentSession, await answer.json())
    assert retrieved.status == "requires_action"

    success, printed = await run_here(action["arguments"]["commands"], workspace)
    assert success and printed == "hello\n" and (workspace / "greeting.txt").read_text() == "hello\n"
    await beta_client.beta.agents.sessions.events.create(session["id"], events=[{
        "type": "agent.session.input.tool_result", "call_id": action["call_id"], "turn_id": action["turn_id"],
        "success": success, "output": printed}])
    async with http.get(f"/v1/agents/sessions/{session['id']}/events",
                        headers={**BETA, "Last-Event-ID": first[-1][0]}) as answer:
        rest = frames(await read_until_idle(answer))
    [done] = [event["item"] for _, event in rest if event["type"] == "agent.session.turn.item.done"
              and event["item"]["type"] == "command_execution"]
    assert done["id"] == shown["id"] and done["status"] == "completed" and done["output"] == "hello\n"
    text = "".join(event["delta"] for _, event in rest if event["type"] == "agent.session.turn.output_text.delta")
    assert "Tool result:" in text and "hello" in text
    assert [event["type"] for _, event in rest][-2:] == ["agent.session.turn.completed", "agent.session.idle"]
    items = (await beta_client.beta.agents.sessions.items.list(session["id"], order="asc")).data
    assert [item.type for item in items] == ["message", "command_execution", "message"]
    assert items[1].status == "completed" and items[1].output == "hello\n"  # type: ignore[union-attr]


async def test_a_self_hosted_environment_is_checked(http: aiohttp.ClientSession) -> None:
    for environment, param in [({"type": "self_hosted"}, "environment.workspace_directory"),
                               ({"type": "self_hosted", "workspace_directory": "relative"},
                                "environment.workspace_directory"),
                               ({"type": "self_hosted", "workspace_directory": "/w",
                                 "capability_directories": ["../skills"]}, "environment.capability_directories[0]"),
                               ({"type": "self_hosted", "workspace_directory": "/w", "remote": True},
                                "environment.remote")]:
        body = {"agent": {"model": MODEL}, "input": "x", "environment": environment}
        async with http.post("/v1/agents/sessions", json=body, headers=BETA) as answer:
            error = (await answer.json())["error"]
            assert answer.status == 400 and error["param"] == param, error
