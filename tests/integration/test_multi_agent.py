"""The multi-agent beta through both doors: ``client.beta.responses.create(multi_agent=…, betas=[…])``.

One sidecar making its model calls through Envoy (``--upstream-via``), one Envoy in front of it: the ext_proc door
hands a multi-agent request to the sidecar's HTTP door, as it hands requests with server-side tools. The fake
upstream plays the root model (``spawn: <task>`` lines spawn subagents, then it waits for them: demo/fake_agents.py) and
every subagent (it echoes its task). Every JSON answer and stream event is validated with the SDK's beta types in
strict mode.

What the door changes is that hand-off and the answer's way back: a JSON answer, a stream, the refusals, and the
WebSocket go through both doors. What the tree does once the HTTP door runs it (a subagent's failure or its client
tool, the usage summed, a continuation replaying the calls, background runs and their cancelling) is the same
whichever door the request came in by, so those tests run on the HTTP door alone (``TREE_ONLY``) — but for the
client tool's, whose request the ext_proc door scans for served tools before it hands it off.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from openai.types.beta.beta_response import BetaResponse
from openai.types.beta.beta_response_stream_event import BetaResponseStreamEvent
from pydantic import TypeAdapter

from responses_bridge.demo.fake_answers import _prompt_tokens
from responses_bridge.envoy_config import HTTP_CLUSTER, render_bootstrap
from tests.support.bridge import UpstreamLog, running_sidecar
from tests.support.envoy import EnvoyProcess, free_port, have_envoy, start_envoy
from tests.support.schema import parse_sse
from tests.support.sdk import async_sdk
from tests.support.sdk_strict import strict_event

pytestmark = pytest.mark.skipif(not have_envoy(), reason="envoy binary not available")
pytestmark = [pytestmark, pytest.mark.store_proven(
    "tests/integration/test_agents_automations_replicas.py",
    "tests/integration/test_replicas.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)]

BETA = ["responses_multi_agent=v1"]
BETA_HEADERS = {"openai-beta": "responses_multi_agent=v1"}
SIDECAR_REQUESTS = f"cluster.{HTTP_CLUSTER}.upstream_rq_total"
EVENT = TypeAdapter(BetaResponseStreamEvent)
TWO_TASKS = "spawn: alpha\nspawn: beta\nagents: list"


@dataclass
class Doors:
    http: str
    envoy: str
    proxy: EnvoyProcess
    upstream: UpstreamLog

    def url(self, door: str) -> str:
        return self.http if door == "http" else self.envoy

    async def handed_to_sidecar(self) -> int:
        """Requests Envoy sent to the sidecar's HTTP door so far."""
        return int((await self.proxy.stats("cluster.")).get(SIDECAR_REQUESTS, 0))


TREE_ONLY = pytest.mark.parametrize("door", ["http"])  # the door is not the point: the HTTP door runs the tree


@pytest.fixture(scope="module")
async def doors(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Doors]:
    listen_port = free_port()
    async with running_sidecar(str(tmp_path_factory.mktemp("agents")), fake_upstream, "--upstream-via",
                               f"http://127.0.0.1:{listen_port}/v1") as sidecar:
        envoy = await start_envoy(render_bootstrap(
            listen_port=listen_port, extproc_port=sidecar.extproc_port,
            http_port=int(sidecar.http_url.rsplit(":", 1)[1]), upstream=fake_upstream, admin_port=0))
        try:
            yield Doors(sidecar.http_url, f"http://127.0.0.1:{listen_port}", envoy,
                        UpstreamLog(fake_upstream.removesuffix("/v1")))
        finally:
            envoy.stop()


def _client(doors: Doors, door: str) -> openai.AsyncOpenAI:
    return async_sdk(base_url=f"{doors.url(door)}/v1", api_key="sk-client", max_retries=0, timeout=60)


def _strict(body: dict[str, Any]) -> BetaResponse:
    return BetaResponse.model_validate(body, strict=True)


def _items(response: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [item for item in response["output"] if item["type"] == kind]


def _check_tree(response: dict[str, Any]) -> None:
    """Two subagents spawned, listed, awaited; the root's answer carries both results."""
    assert response["status"] == "completed", response
    calls = _items(response, "multi_agent_call")
    outputs = _items(response, "multi_agent_call_output")
    assert [call["action"] for call in calls] == ["spawn_agent", "spawn_agent", "list_agents", "wait_agent"]
    assert [orjson.loads(call["arguments"]).get("task") for call in calls[:2]] == ["alpha", "beta"]
    assert {call["call_id"] for call in calls} == {output["call_id"] for output in outputs}
    assert all(item["agent"] == {"agent_name": "root"} for item in calls + outputs)
    by_call = {output["call_id"]: output for output in outputs}
    waited = by_call[calls[3]["call_id"]]["output"][0]["text"]
    assert "## agent_1 (completed)\nEcho: alpha" in waited and "## agent_2 (completed)\nEcho: beta" in waited
    assert "agent_1" in by_call[calls[2]["call_id"]]["output"][0]["text"]
    answer = _items(response, "message")[-1]
    assert answer["content"][0]["text"].startswith("Tool result: ## agent_1")
    assert answer.get("agent", {"agent_name": "root"}) == {"agent_name": "root"}
    # each subagent's own turns are in the output, tagged with its name, where wait_agent collected them
    kinds = [(item["type"], (item.get("agent") or {}).get("agent_name")) for item in response["output"]]
    wait_at = kinds.index(("multi_agent_call", "root"), 3)
    assert kinds[wait_at + 1:wait_at + 5] == [("message", "agent_1"), ("agent_message", "agent_1"),
                                             ("message", "agent_2"), ("agent_message", "agent_2")]
    assert [item["content"][0]["text"] for item in _items(response, "message")
            if item.get("agent") != {"agent_name": "root"} and item.get("agent")] == ["Echo: alpha", "Echo: beta"]
    # what wait_agent collected came to the root as messages from each subagent
    messages = _items(response, "agent_message")
    assert [(m["author"], m["recipient"], m["agent"]["agent_name"]) for m in messages] == [
        ("agent_1", "root", "agent_1"), ("agent_2", "root", "agent_2")]
    assert [m["content"][0]["text"] for m in messages] == ["Echo: alpha", "Echo: beta"]


@pytest.mark.parametrize("door", ["http", "envoy"])
async def test_json_answer_spawns_waits_and_is_stored(doors: Doors, door: str) -> None:
    handed = await doors.handed_to_sidecar()
    async with _client(doors, door) as client:
        raw = await client.beta.responses.with_raw_response.create(
            model="fake-model", input=TWO_TASKS, multi_agent={"enabled": True, "max_concurrent_subagents": 2},
            betas=BETA)
        body = orjson.loads(raw.http_response.content)
        _strict(body)
        _check_tree(body)
        if door == "envoy":  # the ext_proc door handed it to the HTTP door, as a request with server tools
            assert await doors.handed_to_sidecar() == handed + 1
        parsed = raw.parse()
        assert parsed.output[0].type == "multi_agent_call"
        # the subagents' usage is the response's too: more than the root's own three turns read and wrote
        assert body["usage"]["input_tokens"] > 0
        stored = await client.beta.responses.retrieve(body["id"], betas=BETA)
        assert [item.type for item in stored.output] == [item["type"] for item in body["output"]]
        raw_stored = await client.beta.responses.with_raw_response.retrieve(body["id"], betas=BETA)
        _strict(orjson.loads(raw_stored.http_response.content))


@pytest.mark.parametrize("door", ["http", "envoy"])
async def test_stream_events_validate_as_beta_events(doors: Doors, door: str) -> None:
    request = {"model": "fake-model", "input": TWO_TASKS, "multi_agent": {"enabled": True}, "stream": True}
    async with aiohttp.ClientSession() as session, session.post(
            f"{doors.url(door)}/v1/responses?beta=true", json=request,
            headers={**BETA_HEADERS, "Authorization": "Bearer sk-client"}) as answer:
        assert answer.status == 200, await answer.text()
        events = parse_sse(await answer.read())
    for event in events:
        EVENT.validate_python(event, strict=True)
        strict_event(event, beta=True)  # and no key the beta union's models lack
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    added = [event["item"]["type"] for event in events if event["type"] == "response.output_item.added"]
    done = [event["item"]["type"] for event in events if event["type"] == "response.output_item.done"]
    assert added == done and added.count("multi_agent_call") == 4
    assert events[-1]["type"] == "response.completed"
    _check_tree(events[-1]["response"])
    _strict(events[-1]["response"])
    # the SDK's beta client reads the same stream
    async with _client(doors, door) as client:
        stream = await client.beta.responses.create(model="fake-model", input=TWO_TASKS,
                                                    multi_agent={"enabled": True}, betas=BETA, stream=True)
        kinds = [event.type async for event in stream]
    assert kinds[-1] == "response.completed"


@TREE_ONLY
async def test_a_failing_subagent_is_its_result_not_the_roots_crash(doors: Doors, door: str) -> None:
    async with _client(doors, door) as client:
        raw = await client.beta.responses.with_raw_response.create(
            model="fake-model", input="spawn: fine\nspawn: broken {error=503}", multi_agent={"enabled": True},
            betas=BETA, store=False)
        body = orjson.loads(raw.http_response.content)
    _strict(body)
    assert body["status"] == "completed"
    waited = _items(body, "multi_agent_call_output")[-1]["output"][0]["text"]
    assert "## agent_1 (completed)\nEcho: fine" in waited
    assert "## agent_2 (failed)\nThe subagent failed" in waited


@pytest.mark.parametrize("door", ["http", "envoy"])  # the ext_proc door reads the tools first
async def test_a_subagent_that_calls_a_client_tool_fails_and_its_call_is_not_the_clients(doors: Doors,
                                                                                           door: str) -> None:
    weather = {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}
    async with _client(doors, door) as client:
        raw = await client.beta.responses.with_raw_response.create(
            model="fake-model", input="spawn: call get_weather", tools=[weather],  # type: ignore[list-item]
            multi_agent={"enabled": True}, betas=BETA, store=False)
        body = orjson.loads(raw.http_response.content)
    _strict(body)
    assert body["status"] == "completed"
    waited = _items(body, "multi_agent_call_output")[-1]["output"][0]["text"]
    assert "## agent_1 (failed)\nThe subagent failed: it called get_weather, which the client runs" in waited
    assert not _items(body, "function_call")  # the client is never handed the subagent's call to run


@pytest.mark.parametrize("door", ["http", "envoy"])
@pytest.mark.parametrize(("query", "headers", "missing"), [
    ("", {}, "lacks the query '?beta=true' and the header"),
    ("?beta=true", {}, "lacks the header 'openai-beta: responses_multi_agent=v1'"),
    ("", BETA_HEADERS, "lacks the query '?beta=true')"),
    ("?beta=true", {"openai-beta": "other=v2"}, "lacks the header"),
])
async def test_multi_agent_off_the_beta_surface_is_a_clear_400(doors: Doors, door: str, query: str,
                                                                headers: dict[str, str], missing: str) -> None:
    request = {"model": "fake-model", "input": "spawn: alpha", "multi_agent": {"enabled": True}}
    async with aiohttp.ClientSession() as session, session.post(
            f"{doors.url(door)}/v1/responses{query}", json=request,
            headers={**headers, "Authorization": "Bearer sk-client"}) as answer:
        assert answer.status == 400
        error = (await answer.json())["error"]
    assert error["param"] == "multi_agent" and error["code"] == "unknown_parameter"
    assert "beta=true" in error["message"] and "openai-beta: responses_multi_agent=v1" in error["message"]
    assert missing in error["message"]


@pytest.mark.parametrize("door", ["http", "envoy"])
async def test_malformed_multi_agent_is_a_400_naming_the_field(doors: Doors, door: str) -> None:
    async with _client(doors, door) as client:
        with pytest.raises(openai.BadRequestError) as refused:
            await client.beta.responses.create(model="fake-model", input="hi", betas=BETA,
                                               multi_agent={"enabled": True, "max_concurrent_subagents": 0})
    assert refused.value.param == "multi_agent.max_concurrent_subagents"


@TREE_ONLY
async def test_the_subagents_usage_is_the_responses_too(doors: Doors, door: str) -> None:
    await doors.upstream.clear()
    async with _client(doors, door) as client:
        response = await client.beta.responses.create(model="fake-model", input=TWO_TASKS, temperature=0.25,
                                                      multi_agent={"enabled": True}, betas=BETA, store=False)
    calls = [entry["body"] for entry in await doors.upstream.entries()]
    assert len(calls) == 5  # the root's three turns (spawn, wait, answer) and one turn per subagent
    assert all(body["temperature"] == 0.25 for body in calls)  # the root's settings are its subagents' too
    assert response.usage is not None
    assert response.usage.input_tokens == sum(_prompt_tokens(body["messages"]) for body in calls)


@TREE_ONLY
@pytest.mark.parametrize("stored", [True, False])
async def test_a_multi_agent_response_is_continued_with_its_calls_replayed(doors: Doors, door: str,
                                                                         stored: bool) -> None:
    async with _client(doors, door) as client:
        first = await client.beta.responses.create(model="fake-model", input=TWO_TASKS, store=stored,
                                                   multi_agent={"enabled": True}, betas=BETA)
        await doors.upstream.clear()
        if stored:
            raw = await client.beta.responses.with_raw_response.create(
                model="fake-model", input="and now?", previous_response_id=first.id,
                multi_agent={"enabled": True}, betas=BETA)
        else:  # stateless: the client sends the whole output back as input
            history = [{"role": "user", "content": TWO_TASKS},
                       *(item.model_dump(exclude_none=True) for item in first.output),
                       {"role": "user", "content": "and now?"}]
            raw = await client.beta.responses.with_raw_response.create(
                model="fake-model", input=history, store=False, multi_agent={"enabled": True}, betas=BETA)
    body = orjson.loads(raw.http_response.content)
    _strict(body)
    assert body["output"][-1]["content"][0]["text"] == "Echo: and now?"
    messages = (await doors.upstream.last_body())["messages"]
    called = [call["function"]["name"] for message in messages for call in message.get("tool_calls") or ()]
    assert called == ["spawn_agent", "spawn_agent", "list_agents", "wait_agent"]
    results = [message["content"] for message in messages if message["role"] == "tool"]
    assert any("## agent_1 (completed)" in result for result in results)
    # the subagents' own messages came back with the root's items, and the root's model did not read them
    said = [message.get("content") for message in messages if message["role"] == "assistant"]
    assert "Echo: alpha" not in said and "Echo: beta" not in said and len(said) == 3  # the root's three turns, no more


@TREE_ONLY
async def test_background_runs_the_whole_tree_and_stores_it(doors: Doors, door: str) -> None:
    async with _client(doors, door) as client:
        started = await client.beta.responses.create(model="fake-model", input=TWO_TASKS, background=True,
                                                     multi_agent={"enabled": True}, betas=BETA)
        assert started.status in ("queued", "in_progress")
        for _ in range(600):
            raw = await client.beta.responses.with_raw_response.retrieve(started.id, betas=BETA)
            body = orjson.loads(raw.http_response.content)
            if body["status"] not in ("queued", "in_progress"):
                break
            await asyncio.sleep(0.05)
    _strict(body)
    _check_tree(body)


@TREE_ONLY
async def test_cancelling_a_background_response_cancels_its_subagents(doors: Doors, door: str) -> None:
    await doors.upstream.clear()
    async with _client(doors, door) as client:
        started = await client.beta.responses.create(
            model="fake-model", input="spawn: slow {stall=60000}", background=True,
            multi_agent={"enabled": True}, betas=BETA)
        for _ in range(600):  # the subagent's upstream call is under way (stalled)
            if len(await doors.upstream.entries()) >= 2:
                break
            await asyncio.sleep(0.05)
        cancelled = await asyncio.wait_for(client.beta.responses.cancel(started.id, betas=BETA), 30)
        assert cancelled.status == "cancelled"
        stored = await client.beta.responses.retrieve(started.id, betas=BETA)
    assert stored.status == "cancelled"
    kinds = [item.type for item in stored.output]  # the wait (once the root's turn called it) never ended
    assert kinds[:2] == ["multi_agent_call", "multi_agent_call_output"] and kinds[2:] in ([], ["multi_agent_call"])


async def test_the_tenants_limit_bounds_its_subagents(fake_upstream: str,
                                                      tmp_path_factory: pytest.TempPathFactory) -> None:
    """With one request in flight allowed, the root holds it: each subagent's work is refused, as a request
    would be, and that refusal is its result; the root still answers."""
    async with running_sidecar(str(tmp_path_factory.mktemp("agents-limited")), fake_upstream, extproc=False,
                               env={"RESPONSES_BRIDGE_TENANT_MAX_CONCURRENT_REQUESTS": "1"}) as sidecar, \
            async_sdk(base_url=f"{sidecar.http_url}/v1", api_key="sk", max_retries=0) as client:
        raw = await client.beta.responses.with_raw_response.create(
            model="fake-model", input="spawn: alpha", multi_agent={"enabled": True}, betas=BETA)
        body = orjson.loads(raw.http_response.content)
    _strict(body)
    assert body["status"] == "completed"
    waited = _items(body, "multi_agent_call_output")[-1]["output"][0]["text"]
    assert "## agent_1 (failed)\nThe subagent could not start: Too many" in waited


@pytest.mark.parametrize("door", ["http", "envoy"])
async def test_a_websocket_opened_on_the_beta_surface_runs_the_tree(doors: Doors, door: str) -> None:
    """``client.beta.responses.connect`` on ``?beta=true`` with the beta header: its creates take ``multi_agent``
    and each event is a beta server event; a socket opened without them refuses the field, naming what it lacks."""
    async with _client(doors, door) as client:
        async with client.beta.responses.connect(extra_query={"beta": "true"},
                                                 extra_headers=BETA_HEADERS) as connection:
            await connection.response.create(model="fake-model", input=TWO_TASKS, multi_agent={"enabled": True})
            events = []
            async for event in connection:
                events.append(event)
                if event.type in ("response.completed", "response.failed", "error"):
                    break
        final = events[-1]
        assert final.type == "response.completed", final
        body = final.response.model_dump(mode="json", exclude_unset=True)
        _check_tree(body)
        _strict(body)
        assert (await client.beta.responses.retrieve(body["id"], betas=BETA)).status == "completed"
        async with client.beta.responses.connect() as plain:
            await plain.response.create(model="fake-model", input="spawn: alpha", multi_agent={"enabled": True})
            refused = await plain.recv()
    assert refused.type == "error" and "lacks the query '?beta=true' and the header" in str(refused)
