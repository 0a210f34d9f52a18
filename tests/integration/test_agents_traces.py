"""A session's traces (``client.beta.agents.sessions.traces``) through both doors: one per root turn, an OTLP JSON
``ExportTraceServiceRequest`` of the spans the bridge made for the turn — every model call (model, tokens, finish
reason) and every tool call (the hosted shell, the client's function) with its timings and outcome — validated
strictly with the SDK's ``SessionTrace``; no secret and no call's arguments in it; another tenant's a 404. The
sidecar exports no spans (no OTLP endpoint): a trace does not depend on an exporter."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from openai.types.beta.agents.sessions import SessionTrace, Turn

from responses_bridge.sandbox.cgroups.per_call import CgroupParent
from responses_bridge.sandbox.doctor import check_bubblewrap
from tests.integration.test_agents_api import ALPHA, BETA, MODEL, OTHER, frames, read_until_idle, strict
from tests.support.bridge import Sidecar, running_sidecar
from tests.support.envoy import have_envoy
from tests.support.gateway import Gateway, running_gateway
from tests.support.sdk import async_sdk

pytestmark = [pytest.mark.skipif(not have_envoy(), reason="envoy binary not available"),
              pytest.mark.skipif(check_bubblewrap()[1] is not None, reason="bubblewrap cannot sandbox here"),
              pytest.mark.skipif(CgroupParent.find() is None, reason="no cgroup per call here: shell is refused")]
pytestmark = [*pytestmark, pytest.mark.store_proven(
    "tests/integration/test_agents_automations_replicas.py",
    "tests/unit/test_container_store.py",
    "tests/unit/test_agent_store.py",
    "tests/integration/test_replicas.py",
    "tests/integration/test_replicas_code.py",
    "tests/integration/test_input_references.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)]

HOSTED = {"type": "openai_hosted", "container_size": "small", "network": {"access": "disabled"}}
LOOKUP = {"type": "function", "name": "lookup", "description": "Look a word up",
          "parameters": {"type": "object", "properties": {"word": {"type": "string"}}}}
SECRET_WORD = "zephyr-7731"  # the function call's argument: in no span


@pytest.fixture(scope="module")
async def gateway(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    async with running_gateway(str(tmp_path_factory.mktemp("traces")), fake_upstream,
                               env={"RESPONSES_BRIDGE_CODE_TIMEOUT": "10"}) as gateway:
        yield gateway


@pytest.fixture(params=["http", "envoy"])
def base_url(request: pytest.FixtureRequest, gateway: Gateway) -> str:
    return gateway.url if request.param == "envoy" else gateway.sidecar.http_url


@pytest.fixture
async def http(base_url: str) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url) as session:
        yield session


@pytest.fixture
async def beta_client(base_url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with async_sdk(base_url=f"{base_url}/v1", api_key="sk-client-secret-0042", max_retries=0,
                                  timeout=60) as sdk:
        yield sdk


def spans_of(otlp: dict[str, Any]) -> list[dict[str, Any]]:
    return [span for resource in otlp["resourceSpans"] for scope in resource["scopeSpans"]
            for span in scope["spans"]]


def attributes(span: dict[str, Any]) -> dict[str, Any]:
    """A span's attributes as plain values (OTLP JSON's ``AnyValue``: ints as strings, arrays as values)."""
    def plain(value: dict[str, Any]) -> Any:
        if "intValue" in value:
            return int(value["intValue"])
        if "arrayValue" in value:
            return [plain(v) for v in value["arrayValue"].get("values", [])]
        return next(iter(value.values()))
    return {entry["key"]: plain(entry["value"]) for entry in span.get("attributes", [])}


async def list_traces(http: aiohttp.ClientSession, session_id: str, query: str = "") -> dict[str, Any]:
    async with http.get(f"/v1/agents/sessions/{session_id}/traces{query}", headers=BETA) as answer:
        assert answer.status == 200, await answer.text()
        body = await answer.json()
    assert body["object"] == "list"
    for trace in body["data"]:
        strict(SessionTrace, trace)
    return body


async def test_a_turns_trace_accounts_for_every_model_and_tool_call(beta_client: openai.AsyncOpenAI,
                                                                     http: aiohttp.ClientSession) -> None:
    # one turn: the model runs the hosted shell, then calls the client's function, then answers (3 model calls)
    agent = await beta_client.beta.agents.create(model=MODEL, name="tracer", tools=[LOOKUP])  # type: ignore[list-item]
    body = {"agent_id": agent.id, "environment": HOSTED, "stream": True,
            "input": f'sh: echo traced [then=lookup] [args={{"word": "{SECRET_WORD}"}}]'}
    async with http.post("/v1/agents/sessions", json=body, headers=BETA) as answer:
        assert answer.status == 200, await answer.text()
        raw = b""
        async for chunk in answer.content.iter_any():
            raw += chunk
            if b"event: agent.session.requires_action\n" in raw and raw.endswith(b"\n\n"):
                break
    first = frames(raw)
    session_id = first[0][1]["session"]["id"]
    waiting = next(event for _, event in first if event["type"] == "agent.session.requires_action")
    [action] = waiting["session"]["required_actions"]
    assert action["name"] == "lookup"
    await beta_client.beta.agents.sessions.events.create(session_id, events=[
        {"type": "agent.session.input.tool_result", "call_id": action["call_id"], "turn_id": action["turn_id"],
         "success": False, "error": "dictionary offline"}])
    async with http.get(f"/v1/agents/sessions/{session_id}/events", params={"until_idle": "true"},
                        headers=BETA) as answer:
        rest = frames(await read_until_idle(answer))
    assert rest[-2][1]["type"] == "agent.session.turn.completed"
    [turn] = (await beta_client.beta.agents.sessions.turns.list(session_id)).data
    turn = strict(Turn, turn.model_dump(mode="json", exclude_unset=True))

    listed = await list_traces(http, session_id)
    [trace] = listed["data"]
    assert (trace["id"], trace["session_id"], trace["created_at"]) == (turn.id, session_id, turn.created_at)
    assert (listed["first_id"], listed["last_id"], listed["has_more"]) == (turn.id, turn.id, False)
    sdk_page = await beta_client.beta.agents.sessions.traces.list(session_id)
    assert [t.id for t in sdk_page.data] == [turn.id]

    spans = spans_of(trace["otlp"])
    text = orjson.dumps(trace["otlp"]).decode()
    assert SECRET_WORD not in text and "sk-client-secret-0042" not in text and "echo traced" not in text
    assert len({span["traceId"] for span in spans}) == 1 and len(spans[0]["traceId"]) == 32
    ids = {span["spanId"] for span in spans}
    [root] = [span for span in spans if "parentSpanId" not in span]
    assert all(span["parentSpanId"] in ids for span in spans if span is not root)  # one tree, nothing orphaned
    assert all(int(span["startTimeUnixNano"]) <= int(span["endTimeUnixNano"]) for span in spans)
    root_attributes = attributes(root)
    assert root["name"] == "invoke_agent tracer" and root_attributes["gen_ai.conversation.id"] == session_id
    assert root_attributes["responses_bridge.turn.id"] == turn.id
    assert root_attributes["responses_bridge.turn.status"] == "completed"

    chats = sorted((span for span in spans if attributes(span).get("gen_ai.operation.name") == "chat"),
                   key=lambda span: int(span["startTimeUnixNano"]))
    assert [span["name"] for span in chats] == [f"chat {MODEL}"] * 3
    assert [attributes(span)["gen_ai.response.finish_reasons"] for span in chats] == [
        ["tool_calls"], ["tool_calls"], ["stop"]]
    assert turn.usage is not None  # every model call is counted: the turn's usage is the sum of its calls'
    assert sum(attributes(span)["gen_ai.usage.input_tokens"] for span in chats) == turn.usage.input_tokens
    assert sum(attributes(span)["gen_ai.usage.output_tokens"] for span in chats) == turn.usage.output_tokens
    assert root_attributes["gen_ai.usage.input_tokens"] == turn.usage.input_tokens
    upstream_calls = [span for span in spans if span["name"].startswith("upstream POST")]
    assert sorted(span["parentSpanId"] for span in upstream_calls) == sorted(span["spanId"] for span in chats)

    tools = {attributes(span)["gen_ai.tool.name"]: span for span in spans
             if attributes(span).get("gen_ai.operation.name") == "execute_tool"}
    assert set(tools) == {"shell", "lookup"}
    assert tools["shell"]["name"] == "tool hosted_shell" and tools["shell"]["status"] == {}  # ran: no error
    assert tools["lookup"]["name"] == "tool function" and tools["lookup"]["status"]["code"] == 2  # failed
    assert attributes(tools["lookup"])["gen_ai.tool.call.id"] == action["call_id"]
    assert not any(span["name"].startswith("store ") for span in spans)


async def test_a_self_hosted_sessions_commands_are_tool_spans(beta_client: openai.AsyncOpenAI,
                                                                http: aiohttp.ClientSession) -> None:
    agent = await beta_client.beta.agents.create(model=MODEL, instructions="Use the shell.")
    body = {"agent_id": agent.id, "stream": True, "input": "sh: echo private-note-5521",
            "environment": {"type": "self_hosted", "workspace_directory": "/srv/work"}}
    async with http.post("/v1/agents/sessions", json=body, headers=BETA) as answer:
        raw = b""
        async for chunk in answer.content.iter_any():
            raw += chunk
            if b"event: agent.session.requires_action\n" in raw and raw.endswith(b"\n\n"):
                break
    first = frames(raw)
    session_id = first[0][1]["session"]["id"]
    [action] = next(event for _, event in first
                    if event["type"] == "agent.session.requires_action")["session"]["required_actions"]
    await beta_client.beta.agents.sessions.events.create(session_id, events=[{
        "type": "agent.session.input.tool_result", "call_id": action["call_id"], "turn_id": action["turn_id"],
        "success": True, "output": "private-note-5521\n"}])
    async with http.get(f"/v1/agents/sessions/{session_id}/events",
                        headers={**BETA, "Last-Event-ID": first[-1][0]}) as answer:
        await read_until_idle(answer)
    [trace] = (await list_traces(http, session_id))["data"]
    assert "private-note-5521" not in orjson.dumps(trace["otlp"]).decode()  # neither the command nor its output
    spans = spans_of(trace["otlp"])
    [shell] = [span for span in spans if attributes(span).get("gen_ai.operation.name") == "execute_tool"]
    assert shell["name"] == "tool shell" and shell["status"] == {}
    assert attributes(shell)["gen_ai.tool.call.id"] == action["call_id"]
    assert len([span for span in spans if attributes(span).get("gen_ai.operation.name") == "chat"]) == 2


@pytest.fixture(scope="module")
async def tenanted(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sidecar]:
    async with running_sidecar(str(tmp_path_factory.mktemp("traces-tenancy")), fake_upstream, extproc=False,
                               env={"RESPONSES_BRIDGE_AUTH": "header"},
                               ready_headers={"x-tenant-id": ALPHA}) as sidecar:
        yield sidecar


async def test_traces_page_by_turn_and_are_the_tenants_own(tenanted: Sidecar) -> None:
    async with aiohttp.ClientSession(tenanted.http_url) as http:
        alpha = {**BETA, "x-tenant-id": ALPHA}
        async with http.post("/v1/agents/sessions", headers=alpha, json={
                "agent": {"model": MODEL}, "environment": {"type": "none"}, "input": "one", "stream": True}) as answer:
            first = frames(await read_until_idle(answer))
        session_id = first[0][1]["session"]["id"]
        async with http.post(f"/v1/agents/sessions/{session_id}/events", headers=alpha, json={"events": [
                {"type": "agent.session.input.message",
                 "input": [{"role": "user", "content": [{"type": "input_text", "text": "two"}]}]}]}) as answer:
            assert answer.status == 202
        async with http.get(f"/v1/agents/sessions/{session_id}/events",
                            headers={**alpha, "Last-Event-ID": first[-1][0]}) as answer:
            await read_until_idle(answer)
        async with http.get(f"/v1/agents/sessions/{session_id}/turns?order=asc", headers=alpha) as answer:
            turn_ids = [turn["id"] for turn in (await answer.json())["data"]]
        assert len(turn_ids) == 2

        async def page(query: str, headers: dict[str, str] = alpha) -> tuple[int, Any]:
            async with http.get(f"/v1/agents/sessions/{session_id}/traces{query}", headers=headers) as answer:
                return answer.status, await answer.json()

        status, body = await page("")  # newest first
        assert status == 200 and [t["id"] for t in body["data"]] == turn_ids[::-1]
        for trace in body["data"]:
            strict(SessionTrace, trace)
            assert len([s for s in spans_of(trace["otlp"]) if s["name"] == f"chat {MODEL}"]) == 1
        status, body = await page("?order=asc&limit=1")
        assert [t["id"] for t in body["data"]] == turn_ids[:1] and body["has_more"] is True
        status, body = await page(f"?order=asc&after={turn_ids[0]}")
        assert [t["id"] for t in body["data"]] == turn_ids[1:] and body["has_more"] is False
        for query, param in (("?limit=0", "limit"), ("?order=up", "order"), ("?after=turn_nope", "after")):
            status, body = await page(query)
            assert status == 400 and body["error"]["param"] == param, query
            assert set(body["error"]) == {"message", "type", "param", "code"}

        status, body = await page("", {**BETA, "x-tenant-id": OTHER})
        assert status == 404 and body["error"]["param"] == "session_id"
        async with async_sdk(base_url=f"{tenanted.http_url}/v1", api_key="sk-client", max_retries=0,
                                      default_headers={"x-tenant-id": OTHER}) as other:
            with pytest.raises(openai.NotFoundError):
                await other.beta.agents.sessions.traces.list(session_id)

        async with http.delete(f"/v1/agents/sessions/{session_id}", headers=alpha) as answer:
            assert answer.status == 200
        status, body = await page("")
        assert status == 404
