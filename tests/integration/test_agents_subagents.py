"""A session's subagents (``multi_agent.enabled``) through both doors: the agent's turn spawns subagents over the
bridge's own tree, one of which calls an MCP server's tool; the session's stream tells them (created, their turns
and items, closed), and ``client.beta.agents.sessions.subagents`` reads them back — subagents, their turns and
items, the tenant's own. Every 2xx answer and every event is validated strictly with the SDK's own types."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from openai.types.beta import Subagent
from openai.types.beta.agents.sessions import SessionArtifact, Turn

from responses_bridge.sandbox.cgroups.per_call import CgroupParent
from responses_bridge.sandbox.doctor import check_bubblewrap
from tests.integration.test_agents_api import _ITEMS, BETA, MODEL, frames, read_until_idle, strict
from tests.support.bridge import Sidecar, running_sidecar
from tests.support.gateway import envoy_before
from tests.support.mcp_server import MCPTestServer
from tests.support.postgres import store_from_env
from tests.support.sdk import async_sdk
from tests.support.upstreams import running_deployment

ALPHA, OTHER = "alpha", "other"
TIMEOUT = aiohttp.ClientTimeout(total=30)


@pytest.fixture(scope="module")
async def sidecar(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sidecar]:
    """Tenants by the ``x-tenant-id`` header; MCP servers on this host allowed."""
    async with running_sidecar(str(tmp_path_factory.mktemp("agents-subagents")), fake_upstream,
                               env={"RESPONSES_BRIDGE_MCP_ALLOWED_HOSTS": "127.0.0.1",
                                    "RESPONSES_BRIDGE_AUTH": "header"},
                               ready_headers={"x-tenant-id": ALPHA}) as started:
        yield started


@pytest.fixture(scope="module")
async def envoy(sidecar: Sidecar) -> AsyncIterator[str]:
    async with envoy_before(sidecar) as url:
        yield url


@pytest.fixture(params=["http", "envoy"])
def base(request: pytest.FixtureRequest, sidecar: Sidecar) -> str:
    return sidecar.http_url if request.param == "http" else str(request.getfixturevalue("envoy"))


@pytest.fixture
async def http(base: str) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base, headers={**BETA, "x-tenant-id": ALPHA},
                                     timeout=aiohttp.ClientTimeout(total=90)) as session:
        yield session


@pytest.fixture
async def sdk(base: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with async_sdk(base_url=f"{base}/v1", api_key="sk-client", max_retries=0, timeout=90,
                                  default_headers={"x-tenant-id": ALPHA}) as client:
        yield client


async def _get(http: aiohttp.ClientSession, path: str, **params: str) -> Any:
    async with http.get(path, params=params) as answer:
        assert answer.status == 200, await answer.text()
        return await answer.json()


def _page(raw: dict[str, Any], kind: Any) -> list[Any]:
    """A list answer: its shape, and each entry strictly the SDK's ``kind``."""
    assert raw["object"] == "list" and isinstance(raw["has_more"], bool)
    return [strict(kind, entry) for entry in raw["data"]]


async def _session(http: aiohttp.ClientSession, agent: dict[str, Any] | str, text: str) -> list[dict[str, Any]]:
    """A session over ``agent`` (an inline agent, or a saved one's id) whose first turn is ``text``: its events."""
    named = {"agent_id": agent} if isinstance(agent, str) else {"agent": agent}
    async with http.post("/v1/agents/sessions", json={**named, "environment": {"type": "none"},
                                                      "input": text, "stream": True}) as answer:
        assert answer.status == 200, await answer.text()
        return [event for _, event in frames(await read_until_idle(answer))]


def _mcp_tool(mcp: MCPTestServer) -> dict[str, Any]:
    return {"type": "mcp", "server_label": "tools", "allowed_tools": ["lookup"],
            "transport": {"type": "http", "server_url": mcp.http_url}}


async def test_a_sessions_subagent_calls_a_tool_and_is_read_back(http: aiohttp.ClientSession,
                                                                 sdk: openai.AsyncOpenAI, mcp: MCPTestServer) -> None:
    agent = await sdk.beta.agents.create(model=MODEL, tools=[_mcp_tool(mcp)],  # type: ignore[list-item]
                                         multi_agent={"enabled": True, "max_concurrent_subagents": 2})
    events = await _session(http, agent.id, "spawn: call tools__lookup over_the_wire")
    session_id = events[0]["session"]["id"]
    root_turn = next(e["turn"] for e in events if e["type"] == "agent.session.turn.created")
    assert root_turn["subagent_id"] is None

    created = [e["subagent"] for e in events if e["type"] == "agent.session.subagent.created"]
    assert len(created) == 1 and created[0]["status"] == "active" and created[0]["parent_agent_id"] == agent.id
    subagent_id = created[0]["id"]
    sub_turns = [e for e in events if e["type"].startswith("agent.session.turn.") and "turn" in e
                 and e["turn"]["subagent_id"] == subagent_id]
    assert [e["type"] for e in sub_turns] == ["agent.session.turn.created", "agent.session.turn.in_progress",
                                             "agent.session.turn.completed"]
    sub_turn_id = sub_turns[0]["turn_id"]
    sub_items = [e["item"] for e in events if e["type"] == "agent.session.turn.item.done"
                 and e["turn_id"] == sub_turn_id]
    assert [item["type"] for item in sub_items] == ["mcp_call", "message"]
    assert sub_items[0]["name"] == "lookup" and "over_the_wire" in sub_items[0]["output"]
    closed = [e["subagent"] for e in events if e["type"] == "agent.session.subagent.closed"]
    assert [(s["id"], s["status"]) for s in closed] == [(subagent_id, "closed")]
    types = [e["type"] for e in events]
    assert types.index("agent.session.subagent.closed") < types.index("agent.session.idle")
    root_end = next(e for e in events if e["type"] == "agent.session.turn.completed"
                    and e["turn_id"] == root_turn["id"])
    assert root_end["turn"]["status"] == "completed"
    text = "".join(e["delta"] for e in events if e["type"] == "agent.session.turn.output_text.delta")
    assert "over_the_wire" in text  # the root read its subagent's result

    # read back: the subagent, its turn and its items, strictly the SDK's types
    base = f"/v1/agents/sessions/{session_id}/subagents"
    [listed] = _page(await _get(http, base), Subagent)
    assert (listed.id, listed.status, listed.name, listed.session_id) == (subagent_id, "closed", "agent_1",
                                                                          session_id)
    assert listed.closed_at is not None and listed.instructions[0].text == "call tools__lookup over_the_wire"
    assert strict(Subagent, await _get(http, f"{base}/{subagent_id}")) == listed
    [turn] = _page(await _get(http, f"{base}/{subagent_id}/turns"), Turn)
    assert (turn.id, turn.subagent_id, turn.agent_id, turn.status) == (sub_turn_id, subagent_id, subagent_id,
                                                                       "completed")
    assert strict(Turn, await _get(http, f"{base}/{subagent_id}/turns/{sub_turn_id}")).id == sub_turn_id
    items = _page(await _get(http, f"{base}/{subagent_id}/items", order="asc"), _ITEMS)
    assert [item.type for item in items] == ["mcp_call", "message"]
    assert all(item.turn_id == sub_turn_id for item in items)
    turn_items = _page(await _get(http, f"{base}/{subagent_id}/turns/{sub_turn_id}/items", order="asc"), _ITEMS)
    assert [item.id for item in turn_items] == [item.id for item in items]

    # the SDK's own methods read the same
    subagents = sdk.beta.agents.sessions.subagents
    assert [s.id async for s in subagents.list(session_id)] == [subagent_id]
    assert (await subagents.retrieve(subagent_id, session_id=session_id)).status == "closed"
    assert [t.id async for t in subagents.turns.list(subagent_id, session_id=session_id)] == [sub_turn_id]
    assert (await subagents.turns.retrieve(sub_turn_id, session_id=session_id, subagent_id=subagent_id)).status \
        == "completed"
    assert [i.type async for i in subagents.items.list(subagent_id, session_id=session_id, order="asc")] == [
        "mcp_call", "message"]
    assert len([i async for i in subagents.turns.items.list(sub_turn_id, session_id=session_id,
                                                            subagent_id=subagent_id)]) == 2

    # the session's own turns and items are the root agent's
    assert [t.id async for t in sdk.beta.agents.sessions.turns.list(session_id)] == [root_turn["id"]]
    root_items = _page(await _get(http, f"/v1/agents/sessions/{session_id}/items", order="asc"), _ITEMS)
    kinds = [item.type for item in root_items]
    assert kinds[0] == "message" and kinds[-1] == "message" and "mcp_call" not in kinds
    assert {"create_subagent_call", "wait_for_subagents_call", "agent_message"} <= set(kinds)
    spawn = next(item for item in root_items if item.type == "create_subagent_call")
    assert (spawn.agent_id, spawn.status, spawn.model) == (agent.id, "completed", MODEL)
    wait = next(item for item in root_items if item.type == "wait_for_subagents_call")
    assert wait.recipient_agent_ids == [subagent_id] and wait.sender_agent_id == agent.id
    answer = next(item for item in root_items if item.type == "agent_message")
    assert (answer.sender_agent_id, answer.recipient_agent_id) == (subagent_id, agent.id)


async def test_a_subagent_reaches_an_mcp_server_with_the_sessions_vault_credential(
        sidecar: Sidecar, mcp: MCPTestServer) -> None:
    secret = "sk-subagent-vault-token"
    async with aiohttp.ClientSession(sidecar.http_url, headers={**BETA, "x-tenant-id": ALPHA},
                                     timeout=aiohttp.ClientTimeout(total=90)) as http:
        async with http.post("/v1/vaults", json={"name": "tools"}) as answer:
            vault = await answer.json()
        async with http.post(f"/v1/vaults/{vault['id']}/credentials", json={"name": "mcp", "auth": {
                "type": "static_bearer", "token": secret, "mcp_server_url": mcp.http_url}}) as answer:
            assert answer.status == 200, await answer.text()
            credential = await answer.json()
        tool = {**_mcp_tool(mcp), "allowed_tools": ["authorization_digest"], "credential_id": credential["id"]}
        async with http.post("/v1/agents/sessions", json={
                "agent": {"model": MODEL, "tools": [tool], "multi_agent": {"enabled": True}},
                "environment": {"type": "none"}, "vault_ids": [vault["id"]], "stream": True,
                "input": "spawn: call tools__authorization_digest"}) as answer:
            assert answer.status == 200, await answer.text()
            raw = await read_until_idle(answer)
    events = [event for _, event in frames(raw)]
    subagent_id = next(e["subagent"]["id"] for e in events if e["type"] == "agent.session.subagent.created")
    sub_turn = next(e["turn_id"] for e in events if e["type"] == "agent.session.turn.created"
                    and e["turn"]["subagent_id"] == subagent_id)
    [call] = [e["item"] for e in events if e["type"] == "agent.session.turn.item.done"
              and e["item"]["type"] == "mcp_call"]
    assert call["turn_id"] == sub_turn  # the subagent's call, with the session's credential as its bearer token
    assert call["output"] == hashlib.sha256(f"Bearer {secret}".encode()).hexdigest()
    assert secret.encode() not in raw


@pytest.mark.skipif(check_bubblewrap()[1] is not None, reason="bubblewrap cannot sandbox here")
@pytest.mark.skipif(CgroupParent.find() is None, reason="no cgroup per call here: shell is refused")
async def test_a_subagent_runs_commands_in_the_sessions_container(http: aiohttp.ClientSession) -> None:
    async with http.post("/v1/agents/sessions", json={
            "agent": {"model": MODEL, "multi_agent": {"enabled": True}},
            "environment": {"type": "openai_hosted", "container_size": "small"}, "stream": True,
            "input": "spawn: sh: echo from_sub > /mnt/data/sub.txt && cat /mnt/data/sub.txt"}) as answer:
        assert answer.status == 200, await answer.text()
        events = [event for _, event in frames(await read_until_idle(answer))]
    session_id = events[0]["session"]["id"]
    subagent_id = next(e["subagent"]["id"] for e in events if e["type"] == "agent.session.subagent.created")
    sub_turn = next(e["turn_id"] for e in events if e["type"] == "agent.session.turn.created"
                    and e["turn"]["subagent_id"] == subagent_id)
    [command] = [e["item"] for e in events if e["type"] == "agent.session.turn.item.done"
                 and e["item"]["type"] == "command_execution"]
    assert command["turn_id"] == sub_turn and command["exit_code"] == 0 and "from_sub" in command["output"]
    # the file it wrote is the session's container's: published as the root turn's artifact
    listed = _page(await _get(http, f"/v1/agents/sessions/{session_id}/artifacts"), SessionArtifact)
    root_turn = next(e["turn_id"] for e in events if e["type"] == "agent.session.turn.created")
    assert [(artifact.path, artifact.turn_id) for artifact in listed] == [("/mnt/data/sub.txt", root_turn)]
    items = _page(await _get(http, f"/v1/agents/sessions/{session_id}/subagents/{subagent_id}/items"), _ITEMS)
    assert "command_execution" in [item.type for item in items]


async def test_each_turn_opens_subagents_of_its_own(http: aiohttp.ClientSession, sdk: openai.AsyncOpenAI) -> None:
    agent = await sdk.beta.agents.create(model=MODEL, multi_agent={"enabled": True})
    stream = await sdk.beta.agents.sessions.create(agent_id=agent.id, environment={"type": "none"}, stream=True,
                                                   input="spawn: first")
    seen = [event async for event in stream]  # the SDK's own stream: its first turn, to the session's idle
    assert seen[-1].type == "agent.session.idle"
    session_id = seen[0].session.id  # type: ignore[union-attr]
    await sdk.beta.agents.sessions.events.create(session_id, events=[{
        "type": "agent.session.input.message",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "spawn: second"}]}]}])
    async with http.get(f"/v1/agents/sessions/{session_id}/events",
                        headers={"Last-Event-ID": seen[-1].event_id}) as answer:
        second = [event for _, event in frames(await read_until_idle(answer))]
    assert [e["subagent"]["instructions"][0]["text"] for e in second
            if e["type"] == "agent.session.subagent.created"] == ["second"]
    listed = _page(await _get(http, f"/v1/agents/sessions/{session_id}/subagents"), Subagent)
    assert [(s.instructions[0].text, s.status) for s in listed] == [("second", "closed"), ("first", "closed")]
    ascending = _page(await _get(http, f"/v1/agents/sessions/{session_id}/subagents", order="asc", limit="1"),
                      Subagent)
    assert [s.id for s in ascending] == [listed[1].id]
    # each turn's subagent answered its own task; the second turn's root had the first's calls in its context
    for subagent, task in zip(listed, ("second", "first"), strict=True):
        [item] = _page(await _get(http, f"/v1/agents/sessions/{session_id}/subagents/{subagent.id}/items"),
                       _ITEMS)
        assert item.content[0].text == f"Echo: {task}"
    assert len([t async for t in sdk.beta.agents.sessions.turns.list(session_id)]) == 2


async def test_a_failing_subagent_fails_its_own_turn_alone(http: aiohttp.ClientSession) -> None:
    events = await _session(http, {"model": MODEL, "multi_agent": {"enabled": True}},
                            "spawn: fine\nspawn: broken {error=503}")
    ended = {e["turn"]["subagent_id"]: e for e in events
             if e["type"] in ("agent.session.turn.completed", "agent.session.turn.failed")}
    names = {e["subagent"]["id"]: e["subagent"]["instructions"][0]["text"] for e in events
             if e["type"] == "agent.session.subagent.created"}
    by_task = {names[sub_id]: event for sub_id, event in ended.items() if sub_id is not None}
    assert by_task["fine"]["type"] == "agent.session.turn.completed"
    failed = by_task["broken [error=503]"]
    assert failed["type"] == "agent.session.turn.failed" and failed["turn"]["error"]["message"].startswith(
        "The subagent failed")
    assert ended[None]["type"] == "agent.session.turn.completed"  # the root's turn goes on with the result


async def test_a_subagents_call_that_needs_approval_fails_its_piece_of_work_uncalled(
        http: aiohttp.ClientSession, mcp: MCPTestServer) -> None:
    """``echo`` does not say it only reads: a session asks the client before calling it, which it cannot do for a
    subagent (its calls are not the session's required actions) — the subagent's turn fails saying so, the call is
    never made, and the root's turn goes on with that result."""
    tool = {**_mcp_tool(mcp), "allowed_tools": ["echo"]}
    events = await _session(http, {"model": MODEL, "tools": [tool], "multi_agent": {"enabled": True}},
                            "spawn: call tools__echo never_asked")
    failed = [e for e in events if e["type"] == "agent.session.turn.failed" and e["turn"]["subagent_id"]]
    assert len(failed) == 1 and "must approve" in failed[0]["turn"]["error"]["message"]
    assert not [e for e in events if e["type"] == "agent.session.turn.item.done" and e["item"]["type"] == "mcp_call"]
    assert not [e for e in events if e["type"] == "agent.session.requires_action"]
    assert events[-1]["type"] == "agent.session.idle"


async def test_out_of_range_settings_are_a_400_naming_them(http: aiohttp.ClientSession) -> None:
    async with http.post("/v1/agents/sessions", json={
            "agent": {"model": MODEL, "multi_agent": {"enabled": True, "max_concurrent_subagents": 65}},
            "environment": {"type": "none"}, "input": "x"}) as answer:
        assert answer.status == 400
        error = (await answer.json())["error"]
    assert error["param"] == "agent.multi_agent.max_concurrent_subagents" and error["type"] == "invalid_request_error"


async def test_another_tenants_or_sessions_subagents_are_404s(sidecar: Sidecar) -> None:
    async with aiohttp.ClientSession(sidecar.http_url, headers={**BETA, "x-tenant-id": ALPHA},
                                     timeout=aiohttp.ClientTimeout(total=90)) as mine:
        events = await _session(mine, {"model": MODEL, "multi_agent": {"enabled": True}}, "spawn: mine")
        session_id = events[0]["session"]["id"]
        subagent_id = next(e["subagent"]["id"] for e in events if e["type"] == "agent.session.subagent.created")
        turn_id = next(e["turn_id"] for e in events if e["type"] == "agent.session.turn.created"
                       and e["turn"]["subagent_id"] == subagent_id)
        other_session = (await _session(mine, {"model": MODEL}, "plain"))[0]["session"]["id"]
        paths = [f"/v1/agents/sessions/{session_id}/subagents", f"/v1/agents/sessions/{session_id}/subagents/"
                 f"{subagent_id}", f"/v1/agents/sessions/{session_id}/subagents/{subagent_id}/items",
                 f"/v1/agents/sessions/{session_id}/subagents/{subagent_id}/turns",
                 f"/v1/agents/sessions/{session_id}/subagents/{subagent_id}/turns/{turn_id}",
                 f"/v1/agents/sessions/{session_id}/subagents/{subagent_id}/turns/{turn_id}/items"]
        for path in paths:
            async with mine.get(path) as answer:
                assert answer.status == 200, path
        # the same tenant, under another session: the subagent is not there
        for path in paths[1:]:
            async with mine.get(path.replace(session_id, other_session)) as answer:
                assert answer.status == 404, path
                assert set((await answer.json())["error"]) == {"message", "type", "param", "code"}
        async with mine.get(f"/v1/agents/sessions/{session_id}/subagents/{subagent_id}/turns/turn_nope") as answer:
            assert answer.status == 404
    async with aiohttp.ClientSession(sidecar.http_url, headers={**BETA, "x-tenant-id": OTHER}) as theirs:
        for path in paths:
            async with theirs.get(path) as answer:
                assert answer.status == 404, path


async def test_subagents_left_running_by_a_stopped_sidecar_are_closed(
        fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Their turn failed and the subagent closed when the session's turn is resumed without them: at the next start
    alone on SQLite, or once the stopped replica's lease ran out on PostgreSQL (tests/integration/
    test_agents_durable.py); the resumed turn (which spawns its own) is cancelled here."""
    directory = str(tmp_path_factory.mktemp("subagents-restart"))
    db = ["--db", os.path.join(directory, "bridge.db")]
    env = {"RESPONSES_BRIDGE_BACKGROUND_LEASE_SECONDS": "2"}
    async with running_sidecar(directory, fake_upstream, *db, extproc=False, env=env) as first:
        async with aiohttp.ClientSession(first.http_url, headers=BETA, timeout=TIMEOUT) as http:
            async with http.post("/v1/agents/sessions", json={
                    "agent": {"model": MODEL, "multi_agent": {"enabled": True}}, "environment": {"type": "none"},
                    "input": "spawn: slow {stall=60000}"}) as answer:
                assert answer.status == 200
                session_id = (await answer.json())["id"]
            subagents = f"/v1/agents/sessions/{session_id}/subagents"
            for _ in range(200):  # until the subagent runs
                if (await _get(http, subagents))["data"]:
                    break
                await asyncio.sleep(0.05)
            first_id = (await _get(http, subagents))["data"][0]["id"]
    async with running_sidecar(directory, fake_upstream, *db, extproc=False, env=env) as second:
        async with aiohttp.ClientSession(second.http_url, headers=BETA, timeout=TIMEOUT) as http:
            if store_from_env() == "postgres":
                await asyncio.sleep(2.5)
            async with http.post(f"/v1/agents/sessions/{session_id}/events", json={"events": [
                    {"type": "agent.session.input.cancel"}]}) as answer:
                assert answer.status == 202
            [subagent] = [found for found in _page(await _get(http, subagents), Subagent) if found.id == first_id]
            [turn] = _page(await _get(http, f"{subagents}/{subagent.id}/turns"), Turn)
            async with http.get(f"/v1/agents/sessions/{session_id}/events", params={"until_idle": "true"}) as answer:
                told = [event["type"] for _, event in frames(await answer.read())]
    assert subagent.status == "closed" and subagent.closed_at is not None
    assert turn.status == "failed" and turn.error is not None and "restarted" in turn.error.message
    assert "agent.session.subagent.closed" in told


async def test_subagents_on_a_native_responses_upstream_fail_the_turn_naming_them(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """A model routed to a native Responses backend: the bridge relays it without its tool loop, so it has no tree
    to run; the turn fails with the 400's message, naming the agent's field (and a plain agent works there)."""
    async with running_deployment(str(tmp_path_factory.mktemp("subagents-native"))) as deployment:
        for base in (deployment.http_url, deployment.envoy_url):
            async with aiohttp.ClientSession(base, headers=BETA, timeout=TIMEOUT) as http:
                events = await _session(http, {"model": "native-1", "multi_agent": {"enabled": True}}, "spawn: x")
                [failed] = [e["turn"] for e in events if e["type"] == "agent.session.turn.failed"]
                assert failed["error"]["code"] == "invalid_request"
                assert "('agent.multi_agent.enabled') are not served for model 'native-1'" in failed["error"]["message"]
                assert "subagent" not in {e["type"].split(".")[2] for e in events if e["type"].count(".") > 2}
                plain = await _session(http, {"model": "native-1"}, "hello")
                assert any(e["type"] == "agent.session.turn.completed" for e in plain)
