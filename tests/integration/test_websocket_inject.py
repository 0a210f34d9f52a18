"""WebSocket ``response.inject`` with raw aiohttp frames through both doors (Envoy passes the upgrade on): the
outputs of the calls a response left to its client are committed (``response.inject.created``) and the response
goes on as a successor on its lane; injected while it still runs, they wait for its end; every failure comes back
as ``response.inject.failed`` with the input returned, or as an ``error`` frame for input that answers the wrong
calls. Every event is validated strictly against the SDK's beta server events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.support.bridge import UpstreamLog
from tests.support.sdk_strict import strict_ws_event

pytestmark = pytest.mark.store_proven(
    "tests/integration/test_agents_automations_replicas.py",
    "tests/integration/test_input_references.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)

MODEL = "fake-model"
WEATHER = {"type": "function", "name": "get_weather", "description": "Weather for a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


@pytest.fixture
async def ws(base_url: str) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    async with aiohttp.ClientSession(base_url=base_url) as session, session.ws_connect("/v1/responses") as socket:
        yield socket


async def send(ws: aiohttp.ClientWebSocketResponse, **frame: Any) -> None:
    await ws.send_str(json.dumps(frame))


async def until(ws: aiohttp.ClientWebSocketResponse, kind: str, count: int = 1) -> list[dict[str, Any]]:
    """Every event up to and including the ``count``-th of type ``kind``, each validated strictly."""
    events: list[dict[str, Any]] = []
    while count:
        message = await ws.receive(timeout=20)
        assert message.type == aiohttp.WSMsgType.TEXT, message
        event = json.loads(message.data)
        strict_ws_event(event, beta=True)  # error frames included
        events.append(event)
        count -= event["type"] == kind
    return events


def of(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [event for event in events if event["type"] == kind]


async def called(ws: aiohttp.ClientWebSocketResponse, text: str, **fields: Any) -> tuple[str, str]:
    """A response that ends calling get_weather: its id and the call's call_id."""
    await send(ws, type="response.create", model=MODEL, input=text, tools=[WEATHER], **fields)
    response = (await until(ws, "response.completed"))[-1]["response"]
    [call] = [item for item in response["output"] if item["type"] == "function_call"]
    return response["id"], call["call_id"]


def output(call_id: str, text: str = "sunny") -> dict[str, Any]:
    return {"type": "function_call_output", "call_id": call_id, "output": text}


async def test_injected_output_resumes_the_waiting_response_on_its_lane(
        ws: aiohttp.ClientWebSocketResponse, upstream_log: UpstreamLog) -> None:
    first, call_id = await called(ws, "call get_weather Paris", stream_id="lane-a", instructions="Be brief.")
    await send(ws, type="response.inject", response_id=first, input=[output(call_id)])
    events = await until(ws, "response.completed")
    assert [event["type"] for event in events[:2]] == ["response.inject.created", "response.created"]
    assert events[0]["response_id"] == first and events[0]["stream_id"] == "lane-a"
    assert all(event.get("stream_id") == "lane-a" for event in events)
    successor = events[-1]["response"]
    assert successor["previous_response_id"] == first and successor["instructions"] == "Be brief."
    assert successor["output"][-1]["content"][0]["text"] == "Tool result: sunny"
    messages = (await upstream_log.last_body())["messages"]
    assert messages[-1] == {"role": "tool", "tool_call_id": call_id, "content": "sunny"}
    await send(ws, type="response.inject", response_id=first, input=[output(call_id)])  # resumed once
    [failed] = await until(ws, "response.inject.failed")
    assert failed["error"]["code"] == "response_already_completed" and failed["input"] == [output(call_id)]


async def test_output_injected_while_the_response_runs_waits_for_its_end(ws: aiohttp.ClientWebSocketResponse) -> None:
    await send(ws, type="response.create", model=MODEL, input="call get_weather Oslo [chunks=10] [delay=100]",
               tools=[WEATHER])
    first = (await until(ws, "response.created"))[-1]["response"]["id"]
    # the call id is the model's: sent before it is known, the output is judged when the response ends
    await send(ws, type="response.inject", response_id=first, input=[output("call_unknown")])
    events = await until(ws, "response.completed")
    [call] = [item for item in events[-1]["response"]["output"] if item["type"] == "function_call"]
    [error] = of(await until(ws, "error"), "error")
    assert error["error"]["code"] == "invalid_input" and call["call_id"] in error["error"]["message"]
    await send(ws, type="response.inject", response_id=first, input=[output(call["call_id"], "windy")])
    events = await until(ws, "response.completed")
    assert events[0]["type"] == "response.inject.created"
    assert events[-1]["response"]["output"][-1]["content"][0]["text"].startswith("Tool result: windy")


async def test_inject_failures_return_the_input(ws: aiohttp.ClientWebSocketResponse) -> None:
    await send(ws, type="response.inject", response_id="resp_nowhere", input=[output("call_1")])
    [failed] = await until(ws, "response.inject.failed")
    assert failed["error"]["code"] == "response_not_found" and failed["input"] == [output("call_1")]
    await send(ws, type="response.create", model=MODEL, input="hello")
    done = (await until(ws, "response.completed"))[-1]["response"]["id"]
    await send(ws, type="response.inject", response_id=done, input=[output("call_1")])
    [failed] = await until(ws, "response.inject.failed")
    assert failed["error"]["code"] == "response_already_completed" and failed["response_id"] == done
    for bad, param in (({"input": [{"role": "user", "content": "hi"}]}, "input[0]"), ({"input": []}, "input"),
                       ({"input": [output("c")], "stream_id": "x"}, "type")):
        await send(ws, type="response.inject", response_id=done, **bad)
        [error] = await until(ws, "error")
        assert (error["error"]["code"], error["error"]["param"]) == ("invalid_input", param)
