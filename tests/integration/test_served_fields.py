"""Every field served or refused by name, never dropped, through both doors, JSON and stream: a value outside one of
OpenAI's enumerations is its 400 (it was forwarded upstream and echoed), the tier echoed is the one that served the
response, the service's own options are served as the backend serves them or refused naming them, and a function
tool's own fields and ``user`` come back in the echo. Every 2xx validates strictly with the SDK's types."""

from __future__ import annotations

import base64
import json
from typing import Any

import aiohttp
import openai
import pytest

from tests.support.bridge import UpstreamLog
from tests.support.schema import check_stream, validate_response

pytestmark = pytest.mark.store_proven(
    "tests/integration/test_agents_automations_replicas.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)

MODEL = "fake-model"

BOGUS: list[tuple[dict[str, Any], str]] = [
    ({"reasoning": {"effort": "bogus"}}, "reasoning.effort"),
    ({"service_tier": "bogus"}, "service_tier"),
    ({"tools": [{"type": "web_search", "search_context_size": "huge"}]}, "tools[0].search_context_size"),
]
UNSERVED: list[tuple[dict[str, Any], str]] = [
    ({"reasoning": {"context": "all_turns"}}, "reasoning.context"),  # the default profile drops earlier reasoning
    ({"reasoning": {"context": "current_turn"}}, "reasoning.context"),
    ({"reasoning": {"mode": "pro"}}, "reasoning.mode"),
    ({"access_programs": {"cyber": "daybreak_red"}}, "access_programs.cyber"),
    ({"image": {"context_compression": "enabled"}}, "image.context_compression"),
]


async def _refused(http: aiohttp.ClientSession, body: dict[str, Any]) -> dict[str, Any]:
    async with http.post("/v1/responses", json=body) as answer:
        assert answer.status == 400, await answer.text()
        return (await answer.json())["error"]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize(("extra", "param"), BOGUS, ids=[case[1] for case in BOGUS])
async def test_a_value_outside_an_enumeration_is_a_400_before_the_upstream(
        http: aiohttp.ClientSession, upstream_log: UpstreamLog, extra: dict[str, Any], param: str,
        stream: bool) -> None:
    error = await _refused(http, {"model": MODEL, "input": "hi", "stream": stream, **extra})
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, "invalid_value")
    assert error["message"].startswith(f"Invalid value for '{param}': '")
    assert await upstream_log.entries() == []


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize(("extra", "param"), UNSERVED, ids=[case[1] for case in UNSERVED])
async def test_what_the_backend_cannot_serve_is_a_400_naming_it(
        http: aiohttp.ClientSession, upstream_log: UpstreamLog, extra: dict[str, Any], param: str,
        stream: bool) -> None:
    error = await _refused(http, {"model": MODEL, "input": "hi", "stream": stream, **extra})
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, "unsupported_value")
    assert await upstream_log.entries() == []


async def _served(http: aiohttp.ClientSession, body: dict[str, Any]) -> dict[str, Any]:
    """The final Response, validated strictly (and every event of the stream), whichever way it came."""
    async with http.post("/v1/responses", json=body) as answer:
        assert answer.status == 200, await answer.text()
        if not body.get("stream"):
            response: dict[str, Any] = await answer.json()
            validate_response(response)
            return response
        events = check_stream(await answer.read())
    assert events[-1]["type"] == "response.completed"
    return events[-1]["response"]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize(("asked", "served"), [("flex", "flex"), ("priority", "default"), ("auto", "default")])
async def test_the_tier_echoed_is_the_one_that_served(http: aiohttp.ClientSession, upstream_log: UpstreamLog,
                                                      asked: str, served: str, stream: bool) -> None:
    response = await _served(http, {"model": MODEL, "input": "hi", "stream": stream, "service_tier": asked})
    assert response["service_tier"] == served
    assert (await upstream_log.last_body()).get("service_tier") == (None if asked == "auto" else asked)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_the_served_options_and_a_functions_own_fields_are_echoed(
        http: aiohttp.ClientSession, upstream_log: UpstreamLog, stream: bool) -> None:
    tool = {"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}},
            "defer_loading": False, "async": True, "output_schema": {"type": "object"}}
    body = {"model": MODEL, "input": "hi", "stream": stream, "user": "u-1", "tools": [tool],
            "reasoning": {"effort": "low", "context": "auto", "mode": "standard"},
            "access_programs": {"cyber": "standard"}, "image": {"context_compression": "auto"}}
    response = await _served(http, body)
    assert response["reasoning"] == {"effort": "low", "summary": None, "context": "auto", "mode": "standard"}
    assert (response["access_programs"], response["image"]) == ({"cyber": "standard"},
                                                                {"context_compression": "disabled"})
    assert response["user"] == "u-1"
    assert response["tools"] == [{**tool, "description": None, "strict": None}]
    sent = await upstream_log.last_body()
    assert sent["reasoning_effort"] == "low" and sent["user"] == "u-1"
    assert not {"reasoning", "access_programs", "image"} & set(sent)  # nothing a Chat Completions server lacks
    assert sent["tools"][0]["function"]["name"] == "lookup"


async def test_the_sdk_reads_the_echo(client: openai.AsyncOpenAI) -> None:
    response = await client.responses.create(model=MODEL, input="hi", service_tier="flex", user="u-2",
                                             reasoning={"effort": "minimal", "mode": "standard"})
    assert (response.service_tier, response.user) == ("flex", "u-2")
    assert response.reasoning is not None and response.reasoning.mode == "standard"
    with pytest.raises(openai.BadRequestError) as raised:
        await client.responses.create(model=MODEL, input="hi", reasoning={"effort": "bogus"})  # type: ignore[typeddict-item]
    assert raised.value.param == "reasoning.effort" and raised.value.code == "invalid_value"


# --- the GA computer tool: batched actions out and back -----------------------------------------------------------

BATCH: list[dict[str, Any]] = [{"type": "click", "button": "left", "x": 10, "y": 20},
                               {"type": "type", "text": "hello"}, {"type": "keypress", "keys": ["ENTER"]}]
PNG = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGBgAAAABQABpfZFQAAAAAB"
       "JRU5ErkJggg==")


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_the_ga_computer_tool_batches_actions_out_and_back(http: aiohttp.ClientSession,
                                                                 upstream_log: UpstreamLog, stream: bool) -> None:
    arguments = base64.b64encode(json.dumps({"actions": BATCH}).encode()).decode()
    body = {"model": MODEL, "input": f"Please call computer [args64={arguments}]", "tools": [{"type": "computer"}],
            "stream": stream, "store": False}
    response = await _served(http, body)
    offered = (await upstream_log.last_body())["tools"]
    assert [tool["function"]["name"] for tool in offered] == ["computer"]
    call = next(item for item in response["output"] if item["type"] == "computer_call")
    assert (call["actions"], call["status"], "action" in call) == (BATCH, "completed", False)
    assert response["tools"] == [{"type": "computer"}]

    back = {"model": MODEL, "stream": stream, "store": False, "tools": [{"type": "computer"}], "input": [
        {"role": "user", "content": "Fill in the form"}, call,
        {"type": "computer_call_output", "call_id": call["call_id"],
         "output": {"type": "computer_screenshot", "image_url": PNG}}]}
    assert (await _served(http, back))["status"] == "completed"
    messages = (await upstream_log.last_body())["messages"]
    replayed = messages[-3]["tool_calls"][0]["function"]
    assert replayed["name"] == "computer" and json.loads(replayed["arguments"]) == {"actions": BATCH}
    assert messages[-2]["tool_call_id"] == call["call_id"]
    assert messages[-1]["role"] == "user" and messages[-1]["content"][1]["image_url"]["url"] == PNG


async def test_the_sdk_reads_a_batched_computer_call(client: openai.AsyncOpenAI) -> None:
    arguments = base64.b64encode(json.dumps({"actions": BATCH}).encode()).decode()
    response = await client.responses.create(model=MODEL, input=f"Please call computer [args64={arguments}]",
                                             tools=[{"type": "computer"}])
    call = next(item for item in response.output if item.type == "computer_call")
    assert call.actions is not None and [action.type for action in call.actions] == ["click", "type", "keypress"]
