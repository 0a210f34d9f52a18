"""WebSocket steering (``response.steer``) with raw aiohttp frames through both doors (Envoy passes the upgrade
on): accepted input ends the running response and a successor continues it with that input (on the target's
lane), every failure code comes back as ``response.steer.failed`` with the input returned, and a response waiting
for client-owned tool output reports ``response.steer.pending`` and hands the queued input to the client's next
explicit create. Every steer event is validated against the SDK's beta models."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from openai.types.beta.beta_response_steer_accepted_event import BetaResponseSteerAcceptedEvent
from openai.types.beta.beta_response_steer_failed_event import BetaResponseSteerFailedEvent
from openai.types.beta.beta_response_steer_pending_event import BetaResponseSteerPendingEvent

from responses_bridge.adapters.http.websocket.steering import MAX_PENDING_STEERS
from tests.support.bridge import Sidecar, UpstreamLog, running_sidecar
from tests.support.mcp_server import MCPTestServer
from tests.support.sdk_strict import strict_ws_event

pytestmark = pytest.mark.store_proven(
    "tests/integration/test_postgres_start.py",
    "tests/integration/test_replicas.py",
    "tests/integration/test_input_references.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)

MODEL = "fake-model"
TERMINAL = {"response.completed", "response.failed", "response.incomplete", "error"}
SLOW = "[chunks=20] [delay=100]"  # two seconds of stream: time to steer it
WEATHER = {"type": "function", "name": "get_weather", "description": "Weather for a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


@pytest.fixture
async def ws_session(base_url: str):
    async with aiohttp.ClientSession(base_url=base_url) as session:
        yield session


async def send(ws: aiohttp.ClientWebSocketResponse, **frame: Any) -> None:
    await ws.send_str(json.dumps(frame))


async def create(ws: aiohttp.ClientWebSocketResponse, text: Any, stream_id: str | None = None,
                 **fields: Any) -> None:
    lane = {"stream_id": stream_id} if stream_id is not None else {}
    await send(ws, type="response.create", model=MODEL, input=text, **lane, **fields)


async def steer(ws: aiohttp.ClientWebSocketResponse, previous: str, text: Any) -> None:
    await send(ws, type="response.steer", previous_response_id=previous, input=text)


async def next_event(ws: aiohttp.ClientWebSocketResponse) -> dict:
    message = await ws.receive(timeout=20)
    assert message.type == aiohttp.WSMsgType.TEXT, message
    event = json.loads(message.data)
    judged = event
    if isinstance(event.get("response"), dict) and "context_management" in event["response"]:
        # the echo of a create's context_management (engine/responses/response_object.py) is a key the SDK's Response
        # model lacks; every other key of such a frame is judged
        judged = dict(event, response={k: v for k, v in event["response"].items() if k != "context_management"})
    strict_ws_event(judged, beta=event["type"].startswith("response.steer"))  # steering's events: the beta models
    return event


async def until(ws: aiohttp.ClientWebSocketResponse, kind: str, count: int = 1) -> list[dict]:
    """Every event up to and including the ``count``-th of type ``kind``."""
    events: list[dict] = []
    while count:
        events.append(await next_event(ws))
        count -= events[-1]["type"] == kind
    return events


async def created(ws: aiohttp.ClientWebSocketResponse) -> str:
    return (await until(ws, "response.created"))[-1]["response"]["id"]


def of(events: list[dict], kind: str) -> list[dict]:
    return [event for event in events if event["type"] == kind]


def last_user_text(body: dict) -> str:
    content = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
    return content if isinstance(content, str) else content[0]["text"]


async def test_steering_a_running_response_starts_a_successor_with_the_input(
        ws_session: aiohttp.ClientSession, upstream_log: UpstreamLog) -> None:
    async with ws_session.ws_connect("/v1/responses") as ws:
        await create(ws, f"write a long story {SLOW}", instructions="Be brief.")
        first = await created(ws)
        await steer(ws, first, "actually, make it about cats")
        events = await until(ws, "response.completed", 2)
    accepted = BetaResponseSteerAcceptedEvent.model_validate(of(events, "response.steer.accepted")[0])
    assert accepted.steer.previous_response_id == first and accepted.steer.id.startswith("steer_")
    assert accepted.stream_id is None  # the target's create named no lane
    ends = [event for event in events if event["type"] in TERMINAL]
    successor = of(events, "response.created")[0]["response"]
    assert [end["response"]["id"] for end in ends] == [first, successor["id"]]  # the first response ends once
    assert ends[0]["type"] == "response.completed"  # no tool loop: no boundary to stop at before its end
    assert successor["previous_response_id"] == first
    assert successor["instructions"] == "Be brief."  # inherited from the target's create
    assert ends[1]["response"]["output"][0]["content"][0]["text"] == "Echo: actually, make it about cats"
    body = await upstream_log.last_body()
    assert last_user_text(body) == "actually, make it about cats"
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert "write a long story" in json.dumps(body["messages"])  # the successor continues the first


async def test_steering_a_store_false_response_on_a_lane_echoes_the_lane(ws_session: aiohttp.ClientSession,
                                                                         upstream_log: UpstreamLog) -> None:
    async with ws_session.ws_connect("/v1/responses") as ws:
        await create(ws, f"remember apples {SLOW}", "lane-a", store=False)
        first = await created(ws)
        await steer(ws, first, [{"role": "user", "content": [{"type": "input_text", "text": "and pears"}]}])
        await steer(ws, first, "and plums")
        events = await until(ws, "response.completed", 2)
    assert all(event.get("stream_id") == "lane-a" for event in events)
    accepted = [BetaResponseSteerAcceptedEvent.model_validate(e) for e in of(events, "response.steer.accepted")]
    assert [event.stream_id for event in accepted] == ["lane-a", "lane-a"]
    assert len({event.steer.id for event in accepted}) == 2
    successor = of(events, "response.created")[0]["response"]
    assert successor["previous_response_id"] == first and successor["store"] is False
    messages = (await upstream_log.last_body())["messages"]
    texts = [m["content"] if isinstance(m["content"], str) else m["content"][0]["text"] for m in messages]
    assert texts[0].startswith("remember apples") and texts[-2:] == ["and pears", "and plums"]  # in order


async def test_steering_failures_return_the_input_with_their_code(ws_session: aiohttp.ClientSession,
                                                                 upstream_log: UpstreamLog) -> None:
    async with ws_session.ws_connect("/v1/responses") as ws:
        await steer(ws, "resp_nowhere", "hello")
        not_found = BetaResponseSteerFailedEvent.model_validate(await next_event(ws))
        assert (not_found.error.code, not_found.steer.input, not_found.steer.id) == (
            "response_not_found", "hello", None)

        await create(ws, "short one", "done-lane")
        done = (await until(ws, "response.completed"))[-1]["response"]["id"]
        await steer(ws, done, "too late")
        late = BetaResponseSteerFailedEvent.model_validate(await next_event(ws))
        assert (late.error.code, late.stream_id, late.steer.previous_response_id) == (
            "response_already_completed", "done-lane", done)

        await create(ws, f"running {SLOW}")
        running = await created(ws)
        tool_output = [{"type": "function_call_output", "call_id": "call_1", "output": "42"}]
        extra_key = [{"type": "message", "role": "user", "content": "x", "id": "msg_1"}]  # SDK-shaped, refused
        for bad in (tool_output, extra_key, []):
            await steer(ws, running, bad)
        await send(ws, type="response.steer", previous_response_id=running, input="hi", stream_id="x")
        events = await until(ws, "response.steer.failed", 4)
        failed = [BetaResponseSteerFailedEvent.model_validate(e) for e in of(events, "response.steer.failed")]
        assert [event.error.code for event in failed] == ["invalid_input"] * 4
        assert failed[0].steer.model_dump(exclude_none=True)["input"] == tool_output  # returned as sent
        assert all(event.error.type == "invalid_request_error" and event.steer.id is None for event in failed)

        for index in range(MAX_PENDING_STEERS + 1):
            await steer(ws, running, f"steer {index}")
        events = await until(ws, "response.steer.failed")
        assert len(of(events, "response.steer.accepted")) == MAX_PENDING_STEERS
        too_many = BetaResponseSteerFailedEvent.model_validate(events[-1])
        assert (too_many.error.code, too_many.steer.input) == ("too_many_pending_steers",
                                                               f"steer {MAX_PENDING_STEERS}")
        events = await until(ws, "response.completed", 2)
        assert events[-1]["response"]["previous_response_id"] == running
        messages = (await upstream_log.last_body())["messages"]
        steered = [m["content"] for m in messages if str(m["content"]).startswith("steer ")]
        assert steered == [f"steer {index}" for index in range(MAX_PENDING_STEERS)]  # in submission order


async def test_conversation_and_context_management_responses_cannot_be_steered(
        ws_session: aiohttp.ClientSession) -> None:
    async with ws_session.post("/v1/conversations", json={}) as answer:
        conversation = (await answer.json())["id"]
    async with ws_session.ws_connect("/v1/responses") as ws:
        await create(ws, f"in a conversation {SLOW}", "conv", conversation=conversation)
        target = await created(ws)
        await steer(ws, target, "steer it")
        events = await until(ws, "response.steer.failed")
        failed = BetaResponseSteerFailedEvent.model_validate(events[-1])
        assert (failed.error.code, failed.stream_id, failed.steer.input) == ("steering_not_supported", "conv",
                                                                              "steer it")
        await until(ws, "response.completed")
        await create(ws, f"compacting {SLOW}", context_management=[{"type": "compaction", "compact_threshold": 9000}])
        target = await created(ws)
        await steer(ws, target, "steer it")
        events = await until(ws, "response.steer.failed")
        assert BetaResponseSteerFailedEvent.model_validate(events[-1]).error.code == "steering_not_supported"
        await until(ws, "response.completed")


async def test_a_response_that_fails_returns_its_accepted_input(ws_session: aiohttp.ClientSession) -> None:
    async with ws_session.ws_connect("/v1/responses") as ws:
        await create(ws, "breaks [chunks=20] [delay=100] [cut=8]", "b")
        target = await created(ws)
        await steer(ws, target, "never applied")
        events = await until(ws, "response.steer.failed")
    accepted = BetaResponseSteerAcceptedEvent.model_validate(of(events, "response.steer.accepted")[0])
    assert of(events, "response.failed")
    failed = BetaResponseSteerFailedEvent.model_validate(events[-1])
    assert (failed.error.code, failed.steer.id, failed.steer.input, failed.stream_id) == (
        "response_not_active", accepted.steer.id, "never applied", "b")


async def test_a_successor_that_cannot_be_created_returns_the_input(ws_session: aiohttp.ClientSession) -> None:
    bad_file = [{"type": "message", "role": "user",
                 "content": [{"type": "input_file", "file_id": "file-does-not-exist"}]}]
    async with ws_session.ws_connect("/v1/responses") as ws:
        await create(ws, f"first {SLOW}")
        target = await created(ws)
        await steer(ws, target, bad_file)
        events = await until(ws, "response.steer.failed")
        accepted = BetaResponseSteerAcceptedEvent.model_validate(of(events, "response.steer.accepted")[0])
        failed = BetaResponseSteerFailedEvent.model_validate(events[-1])
        assert (failed.error.code, failed.steer.id) == ("successor_creation_failed", accepted.steer.id)
        assert failed.steer.model_dump(exclude_none=True)["input"] == bad_file
        assert len(of(events, "response.created")) == 0 and of(events, "response.completed")
        await create(ws, "still usable")  # the socket goes on
        assert (await until(ws, "response.completed"))[-1]["response"]["output"][0]["content"][0]["text"] == (
            "Echo: still usable")


async def test_a_response_waiting_for_tool_output_keeps_the_input_for_the_next_create(
        ws_session: aiohttp.ClientSession, upstream_log: UpstreamLog) -> None:
    async with ws_session.ws_connect("/v1/responses") as ws:
        await create(ws, "call get_weather Paris [stall_after=1:1500]", "tools", tools=[WEATHER])
        target = await created(ws)
        await steer(ws, target, "also say hi")
        events = await until(ws, "response.steer.pending")
        completed = of(events, "response.completed")[0]["response"]
        call = completed["output"][0]
        assert call["type"] == "function_call"
        pending = BetaResponseSteerPendingEvent.model_validate(events[-1])
        assert events.index(of(events, "response.completed")[0]) < len(events) - 1  # after response.completed
        assert pending.reason == "waiting_for_required_input" and pending.stream_id == "tools"
        assert [stub.model_dump() for stub in pending.required_input] == [
            {"type": "function_call_output", "call_id": call["call_id"], "name": "get_weather"}]
        assert pending.steer.id == BetaResponseSteerAcceptedEvent.model_validate(
            of(events, "response.steer.accepted")[0]).steer.id
        assert not of(events, "response.created")[1:]  # no successor

        await create(ws, [{"type": "function_call_output", "call_id": call["call_id"], "output": "sunny"}],
                     "tools", previous_response_id=target, tools=[WEATHER], instructions="Explicit.")
        events = [await next_event(ws)]
        while events[-1]["type"] not in TERMINAL:
            events.append(await next_event(ws))
    assert events[-1]["type"] == "response.completed", events[-1]
    follow = of(events, "response.created")[0]["response"]
    assert follow["previous_response_id"] == target and follow["instructions"] == "Explicit."
    body = await upstream_log.last_body()
    # the tool result stays right after its call (as Chat Completions requires), the queued input follows
    assert [m["role"] for m in body["messages"][-3:]] == ["assistant", "tool", "user"]
    assert body["messages"][-2]["content"] == "sunny" and last_user_text(body) == "also say hi"


@pytest.fixture(scope="module")
async def loop_sidecar(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sidecar]:
    """A sidecar that may reach the MCP test server on loopback: a server-tool loop to stop between turns."""
    async with running_sidecar(str(tmp_path_factory.mktemp("steer-loop")), fake_upstream,
                               env={"RESPONSES_BRIDGE_MCP_ALLOWED_HOSTS": "127.0.0.1"}, extproc=False) as started:
        yield started


async def test_a_tool_loop_stops_between_turns_incomplete_steered(loop_sidecar: Sidecar,
                                                                   mcp: MCPTestServer) -> None:
    tools = [{"type": "mcp", "server_label": "tools", "server_url": mcp.http_url, "require_approval": "never",
              "allowed_tools": ["slow"]}]
    log = UpstreamLog(loop_sidecar.upstream_url.removesuffix("/v1"))
    await log.clear()
    async with aiohttp.ClientSession(base_url=loop_sidecar.http_url) as session:
        async with session.ws_connect("/v1/responses") as ws:
            await create(ws, 'call tools__slow [args={"seconds": 1.5}]', "loop", tools=tools)
            first = await created(ws)
            await steer(ws, first, "stop and summarise")
            events = await until(ws, "response.completed")
    stopped = of(events, "response.incomplete")
    assert len(stopped) == 1 and stopped[0]["stream_id"] == "loop"
    response = stopped[0]["response"]
    assert response["id"] == first and response["incomplete_details"] == {"reason": "steered"}
    assert [(item["type"], item.get("status")) for item in response["output"]][-1] == ("mcp_call", "completed")
    successor = events[-1]["response"]
    assert successor["previous_response_id"] == first and successor["tools"][0]["server_label"] == "tools"
    assert successor["output"][-1]["content"][0]["text"] == "Echo: stop and summarise"
    bodies = [entry["body"] for entry in await log.entries()]
    assert len(bodies) == 2  # the first response's one model turn, then the successor's: no second turn for it
    assert [m["role"] for m in bodies[-1]["messages"][-3:]] == ["assistant", "tool", "user"]
