"""``configuration_update`` input items through both doors: the reasoning effort and text format they set reach the
upstream on later turns, along ``previous_response_id``, a conversation and items sent back, each setting until a
later update replaces it; the item is listed among the input items; a malformed one is a 400 naming it."""

from __future__ import annotations

from typing import Any

import aiohttp
import openai
import pytest
from openai.types.responses import ResponseItem
from pydantic import TypeAdapter

from tests.support.bridge import UpstreamLog
from tests.support.schema import validate_response

pytestmark = pytest.mark.store_proven(
    "tests/integration/test_postgres_start.py",
    "tests/integration/test_agents_automations_replicas.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)

MODEL = "fake-model"
SCHEMA = {"type": "object", "properties": {"echo": {"type": "string"}}, "required": ["echo"]}
UPDATE = {"type": "configuration_update", "reasoning": {"effort": "low"},
          "text": {"format": {"type": "json_schema", "name": "echoed", "schema": SCHEMA, "strict": True}}}


async def create(http: aiohttp.ClientSession, body: dict[str, Any]) -> dict[str, Any]:
    async with http.post("/v1/responses", json={"model": MODEL, **body}) as r:
        answer = await r.json()
        assert r.status == 200, answer
    validate_response(answer)
    return dict(answer)


def settings(body: dict[str, Any]) -> tuple[Any, Any]:
    fmt = body.get("response_format")
    return body.get("reasoning_effort"), fmt["type"] if isinstance(fmt, dict) else None


async def test_an_update_holds_along_the_chain_until_replaced(http: aiohttp.ClientSession,
                                                             upstream_log: UpstreamLog) -> None:
    first = await create(http, {"input": [UPDATE, {"role": "user", "content": "hi"}]})
    assert settings(await upstream_log.last_body()) == ("low", "json_schema")
    assert first["output"][0]["content"][0]["text"] == '{"echo":"hi"}'
    second = await create(http, {"previous_response_id": first["id"], "input": "again"})
    assert settings(await upstream_log.last_body()) == ("low", "json_schema")
    # one setting replaced, the other kept; the request's own effort gives way to the update in effect
    back_to_text = {"type": "configuration_update", "text": {"format": {"type": "text"}}}
    await create(http, {"previous_response_id": second["id"], "reasoning": {"effort": "high"},
                        "input": [back_to_text, {"role": "user", "content": "plain"}]})
    assert settings(await upstream_log.last_body()) == ("low", None)
    async with http.get(f"/v1/responses/{first['id']}/input_items") as r:
        listed = (await r.json())["data"]
    update = next(item for item in listed if item["type"] == "configuration_update")
    TypeAdapter(ResponseItem).validate_python(update, strict=True)
    assert update["reasoning"] == {"effort": "low"} and update["text"]["format"]["name"] == "echoed"


async def test_an_update_holds_in_a_conversation_and_in_items_sent_back(
        client: openai.AsyncOpenAI, http: aiohttp.ClientSession, upstream_log: UpstreamLog) -> None:
    conversation = await client.conversations.create()
    await create(http, {"conversation": conversation.id,
                        "input": [{"type": "configuration_update", "reasoning": {"effort": "minimal"}},
                                  {"role": "user", "content": "one"}]})
    await create(http, {"conversation": conversation.id, "input": "two"})
    assert settings(await upstream_log.last_body()) == ("minimal", None)
    stateless = [UPDATE, {"role": "user", "content": "one"}]
    await create(http, {"store": False, "input": stateless})
    assert settings(await upstream_log.last_body()) == ("low", "json_schema")


@pytest.mark.parametrize(("update", "param"), [
    ({"type": "configuration_update"}, "input[0]"),
    ({"type": "configuration_update", "reasoning": {"effort": "huge"}}, "input[0].reasoning.effort"),
    ({"type": "configuration_update", "reasoning": {"summary": "auto"}}, "input[0].reasoning.summary"),
    ({"type": "configuration_update", "text": {"format": {"type": "json_object"}}}, "input[0].text.format"),
    ({"type": "configuration_update", "text": {"format": {"type": "json_schema", "name": "x"}}},
     "input[0].text.format.schema"),
    ({"type": "configuration_update", "text": {"verbosity": "low"}}, "input[0].text.verbosity"),
    ({"type": "configuration_update", "reasoning": {"effort": "low"}, "tools": []}, "input[0].tools"),
])
async def test_a_malformed_update_is_named(http: aiohttp.ClientSession, update: dict, param: str) -> None:
    async with http.post("/v1/responses", json={"model": MODEL, "input": [update, {"role": "user",
                                                                                     "content": "hi"}]}) as r:
        body = await r.json()
        assert r.status == 400, body
    assert body["error"]["param"] == param, body
