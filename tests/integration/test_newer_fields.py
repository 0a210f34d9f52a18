"""The create fields the ``openai`` SDK 3.57 added, through both doors: each is honoured with its meaning or refused
with an OpenAI-shaped 400 naming it, never accepted and silently dropped."""

from __future__ import annotations

import json

import aiohttp
import openai
import pytest

from tests.support.bridge import UpstreamLog

pytestmark = pytest.mark.store_proven(
    "tests/integration/test_agents_automations_replicas.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)

MODEL = "fake-model"
ERROR_KEYS = {"message", "type", "param", "code"}
FUNCTION = {"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}


async def refused(http: aiohttp.ClientSession, body: dict) -> dict:
    async with http.post("/v1/responses", json={"model": MODEL, "input": "hi", **body}) as r:
        text = await r.text()
        assert r.status == 400, text
    error = json.loads(text)["error"]
    assert set(error) == ERROR_KEYS and error["type"] == "invalid_request_error", error
    return error


@pytest.mark.parametrize(("body", "param"), [
    ({"tools": [{"type": "custom", "name": "c", "allowed_callers": ["programmatic"]}]}, "tools[0].allowed_callers"),
    ({"tools": [dict(FUNCTION, allowed_callers=["robot"])]}, "tools[0].allowed_callers[0]"),
    ({"tools": [dict(FUNCTION, allowed_callers=[])]}, "tools[0].allowed_callers"),
    ({"tools": [dict(FUNCTION, allowed_callers="direct")]}, "tools[0].allowed_callers"),
    ({"tools": [{"type": "apply_patch", "allowed_callers": ["programmatic"]}]}, "tools[0].allowed_callers"),
    ({"tools": [{"type": "shell", "environment": {"type": "local"}, "allowed_callers": ["programmatic"]}]},
     "tools[0].allowed_callers"),
    ({"tools": [{"type": "namespace", "name": "ns", "description": "d",
                 "tools": [dict(FUNCTION, allowed_callers=["nobody"])]}]}, "tools[0].tools[0].allowed_callers[0]"),
    ({"tools": [{"type": "namespace", "name": "ns", "description": "d",
                 "tools": [dict(FUNCTION, allowed_callers=["programmatic"])]}]}, "tools[0].tools[0].allowed_callers"),
    ({"background_options": {"completion_window": "8h"}, "background": True}, "background_options.completion_window"),
    ({"background_options": {"completion_window": "never"}}, "background_options.completion_window"),
    ({"background_options": {"continuation_id": "batch-7"}}, "background_options.continuation_id"),
    ({"background_options": {"completion_windw": "soonest"}}, "background_options.completion_windw"),
    ({"input": [{"role": "user", "content": [{"type": "input_text", "text": "hi",
                                              "prompt_cache_breakpoint": {}}]}]},
     "input[0].content[0].prompt_cache_breakpoint"),
])
async def test_a_field_the_bridge_cannot_honour_is_named(http: aiohttp.ClientSession, body: dict, param: str) -> None:
    assert (await refused(http, body))["param"] == param


async def test_a_tool_for_programs_only_is_not_offered_to_the_model(client: openai.AsyncOpenAI,
                                                                     upstream_log: UpstreamLog) -> None:
    tools = [dict(FUNCTION, name="direct_one", allowed_callers=["direct", "programmatic"]),
             dict(FUNCTION, name="program_only", allowed_callers=["programmatic"]),
             {"type": "namespace", "name": "ns", "description": "d",
              "tools": [dict(FUNCTION, name="inner_direct", allowed_callers=["direct"])]}]
    response = await client.responses.create(model=MODEL, input="hi", tools=tools)  # type: ignore[arg-type]
    assert response.status == "completed"
    offered = [tool["function"]["name"] for tool in (await upstream_log.last_body())["tools"]]
    assert offered == ["direct_one", "ns__inner_direct"]
    # the client's tools are echoed as given, allowed_callers included
    assert response.tools[1].allowed_callers == ["programmatic"]  # type: ignore[union-attr]


async def test_the_soonest_completion_window_is_what_every_response_gets(client: openai.AsyncOpenAI) -> None:
    response = await client.responses.create(model=MODEL, input="hi", background=True,
                                              background_options={"completion_window": "soonest"})
    assert response.background is True
