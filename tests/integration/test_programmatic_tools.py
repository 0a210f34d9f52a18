"""Programmatic tool calling through both doors, JSON and stream, stored and stateless: the model (the fake,
asked with ``js: …``) writes a program; its calls of the client's tools end the response as ``function_call``
items made by the program; the client's outputs resume it by replay; its ``program_output`` goes back to the
model. Every answer and event is judged by the schema oracle (the openai SDK's types, strict)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from tests.support.bridge import UpstreamLog
from tests.support.schema import check_stream, validate_response

pytestmark = pytest.mark.store_proven(
    "tests/integration/test_replicas.py",
    "tests/integration/test_agents_automations_replicas.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)

pytest.importorskip("py_mini_racer")

MODEL = "fake-model"
WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
           "allowed_callers": ["programmatic"]}
TOOLS = [{"type": "programmatic_tool_calling"}, WEATHER]
PROGRAM = ('js: const [a, b] = await Promise.all([tools.get_weather({city: "Oslo"}), '
           'tools.get_weather({city: "Rome"})]); return `Oslo ${a}, Rome ${b}`')


async def create(http: aiohttp.ClientSession, body: dict[str, Any], stream: bool) -> dict[str, Any]:
    """One create, answered as JSON or as a stream; the response, validated either way."""
    async with http.post("/v1/responses", json={"model": MODEL, "tools": TOOLS, "stream": stream, **body}) as r:
        raw = await r.read()
        assert r.status == 200, raw
    if not stream:
        response = json.loads(raw)
        validate_response(response)
        return dict(response)
    events = check_stream(raw)
    assert events[-1]["type"] == "response.completed", events[-1]
    return dict(events[-1]["response"])


def kinds(response: dict[str, Any]) -> list[str]:
    return [item["type"] for item in response["output"]]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_a_program_waits_for_the_client_tools_and_resumes_with_their_outputs(
        http: aiohttp.ClientSession, upstream_log: UpstreamLog, stream: bool) -> None:
    first = await create(http, {"input": PROGRAM}, stream)
    offered = [tool["function"]["name"] for tool in (await upstream_log.last_body())["tools"]]
    assert offered == ["program"]  # get_weather is for programs only
    assert kinds(first) == ["program", "function_call", "function_call"]
    program, *calls = first["output"]
    assert program["code"].startswith("const [a, b]") and program["fingerprint"]
    assert [json.loads(call["arguments"]) for call in calls] == [{"city": "Oslo"}, {"city": "Rome"}]
    assert all(call["caller"] == {"type": "program", "caller_id": program["call_id"]} for call in calls)

    outputs = [{"type": "function_call_output", "call_id": call["call_id"], "output": weather}
               for call, weather in zip(calls, ("rain", "sun"), strict=True)]
    second = await create(http, {"previous_response_id": first["id"], "input": outputs}, stream)
    assert kinds(second) == ["program_output", "message"]
    assert second["output"][0] == {**second["output"][0], "call_id": program["call_id"],
                                   "result": "Oslo rain, Rome sun", "status": "completed"}
    assert second["output"][1]["content"][0]["text"] == "Tool result: Oslo rain, Rome sun"
    sent = (await upstream_log.last_body())["messages"]
    # the model sees its program call and the program's result, never the program's own calls
    assert [message["role"] for message in sent] == ["user", "assistant", "tool"]
    assert sent[1]["tool_calls"][0]["function"]["name"] == "program"
    assert sent[2] == {"role": "tool", "tool_call_id": program["call_id"], "content": "Oslo rain, Rome sun"}


async def test_stateless_the_items_sent_back_resume_the_program(http: aiohttp.ClientSession) -> None:
    sequential = ('js: const a = await tools.get_weather({city: "Oslo"}); '
                  'const b = await tools.get_weather({city: a}); return a + "/" + b')
    user = {"role": "user", "content": sequential}
    first = await create(http, {"input": [user], "store": False}, False)
    assert kinds(first) == ["program", "function_call"]
    items = [user, *first["output"],
             {"type": "function_call_output", "call_id": first["output"][1]["call_id"], "output": "cold"}]
    second = await create(http, {"input": items, "store": False}, False)
    assert kinds(second) == ["function_call"]  # the program goes on, and waits again
    assert json.loads(second["output"][0]["arguments"]) == {"city": "cold"}
    items += [*second["output"],
              {"type": "function_call_output", "call_id": second["output"][0]["call_id"], "output": "colder"}]
    third = await create(http, {"input": items, "store": False}, False)
    assert kinds(third) == ["program_output", "message"] and third["output"][0]["result"] == "cold/colder"


async def test_a_changed_program_or_missing_output_is_refused(http: aiohttp.ClientSession) -> None:
    user = {"role": "user", "content": PROGRAM}
    first = await create(http, {"input": [user], "store": False}, False)
    program, call_a, call_b = first["output"]
    answers = [{"type": "function_call_output", "call_id": call_a["call_id"], "output": "x"},
               {"type": "function_call_output", "call_id": call_b["call_id"], "output": "y"}]
    cases = [
        ([user, dict(program, code=program["code"] + ";"), call_a, call_b, *answers], "invalid_program_fingerprint"),
        ([user, program, call_a, call_b, answers[0]], "program_replay_mismatch"),
        ([user, program, dict(call_a, arguments='{"city": "Paris"}'), call_b, *answers], "program_replay_mismatch"),
    ]
    for items, code in cases:
        async with http.post("/v1/responses", json={"model": MODEL, "tools": TOOLS, "input": items,
                                                    "store": False}) as r:
            body = await r.json()
            assert r.status == 400, body
        assert body["error"]["code"] == code, body


async def test_a_program_that_loops_forever_ends_incomplete_and_the_model_reads_why(
        http: aiohttp.ClientSession) -> None:
    response = await create(http, {"input": "js: while (true) {}"}, False)
    assert kinds(response) == ["program", "program_output", "message"]
    output = response["output"][1]
    assert output["status"] == "incomplete" and "time limit" in output["result"]


@pytest.mark.parametrize("code", ["const b = new ArrayBuffer(2 * 1024 * 1024 * 1024); return b.byteLength",
                                  "const a = []; while (true) a.push(new Array(1e6).fill(1.5));"],
                         ids=["2-gib-at-once", "growing"])
async def test_a_huge_allocation_ends_incomplete_and_the_sidecar_answers_on(http: aiohttp.ClientSession,
                                                                            code: str) -> None:
    response = await create(http, {"input": f"js: {code}"}, True)
    assert kinds(response) == ["program", "program_output", "message"]
    output = response["output"][1]
    assert output["status"] == "incomplete" and ("RangeError" in output["result"] or "memory" in output["result"])
    assert kinds(await create(http, {"input": "hello"}, False)) == ["message"]  # the sidecar is unharmed


async def test_a_waiting_program_needs_its_tool_to_go_on(http: aiohttp.ClientSession) -> None:
    first = await create(http, {"input": PROGRAM}, False)
    outputs = [{"type": "function_call_output", "call_id": call["call_id"], "output": "x"}
               for call in first["output"][1:]]
    async with http.post("/v1/responses", json={"model": MODEL, "previous_response_id": first["id"],
                                                "input": outputs}) as r:
        body = await r.json()
        assert r.status == 400, body
    assert body["error"]["param"] == "tools" and first["output"][0]["call_id"] in body["error"]["message"]


async def test_a_background_response_runs_its_program(http: aiohttp.ClientSession) -> None:
    async with http.post("/v1/responses", json={"model": MODEL, "tools": TOOLS, "background": True,
                                                "input": "js: text('made in the background'); return 7"}) as r:
        queued = await r.json()
        assert r.status == 200, queued
    for _ in range(300):
        async with http.get(f"/v1/responses/{queued['id']}") as r:
            response = await r.json()
        if response["status"] not in ("queued", "in_progress"):
            break
        await asyncio.sleep(0.1)
    validate_response(response)
    assert kinds(response) == ["program", "program_output", "message"]
    assert response["output"][1]["result"] == "made in the background\n7"


async def test_a_program_call_without_code_ends_incomplete_and_tells_the_model_how_to_call(
        http: aiohttp.ClientSession, upstream_log: UpstreamLog) -> None:
    """A small model guessing at the schema (seen with Qwen2.5-Coder-1.5B): no program is run, the model is told."""
    response = await create(http, {"input": 'js: return 1 [args={"args": {"city": "Oslo"}}]'}, False)
    assert kinds(response) == ["program", "program_output", "message"]
    program, output, _ = response["output"]
    assert program["code"] == "" and output["status"] == "incomplete"
    assert output["result"].startswith("Program stopped: the call carried no code")
    assert (await upstream_log.last_body())["messages"][-1]["content"] == output["result"]
