"""``additional_tools`` input items through both doors: the tools they add are offered to the model from then on,
along ``previous_response_id`` and the items sent back; a tool the client does not run, or one meant for programs,
is a 400 naming it."""

from __future__ import annotations

from typing import Any

import aiohttp
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
CLOCK = {"type": "function", "name": "get_time", "description": "The time now.",
         "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}}}
ADDED = {"type": "additional_tools", "role": "developer", "tools": [CLOCK]}


async def create(http: aiohttp.ClientSession, body: dict[str, Any]) -> dict[str, Any]:
    async with http.post("/v1/responses", json={"model": MODEL, **body}) as r:
        answer = await r.json()
        assert r.status == 200, answer
    validate_response(answer)
    return dict(answer)


def offered(body: dict[str, Any]) -> list[str]:
    return [tool["function"]["name"] for tool in body.get("tools") or ()]


async def test_added_tools_are_offered_from_then_on(http: aiohttp.ClientSession, upstream_log: UpstreamLog) -> None:
    first = await create(http, {"input": [ADDED, {"role": "user", "content": "call get_time utc"}]})
    assert offered(await upstream_log.last_body()) == ["get_time"]
    call = first["output"][0]
    assert call["type"] == "function_call" and call["name"] == "get_time"
    second = await create(http, {"previous_response_id": first["id"],
                                 "input": [{"type": "function_call_output", "call_id": call["call_id"],
                                            "output": "noon"}]})
    assert offered(await upstream_log.last_body()) == ["get_time"]
    assert second["output"][0]["content"][0]["text"] == "Tool result: noon"
    async with http.get(f"/v1/responses/{first['id']}/input_items") as r:
        listed = (await r.json())["data"]
    added = next(item for item in listed if item["type"] == "additional_tools")
    TypeAdapter(ResponseItem).validate_python(added, strict=True)
    # stateless: the items sent back carry it
    await create(http, {"store": False, "input": [ADDED, {"role": "user", "content": "hi"}]})
    assert offered(await upstream_log.last_body()) == ["get_time"]


@pytest.mark.parametrize(("item", "param"), [
    ({"type": "additional_tools", "role": "user", "tools": [CLOCK]}, "input[0].role"),
    ({"type": "additional_tools", "role": "developer", "tools": "get_time"}, "input[0].tools"),
    ({"type": "additional_tools", "role": "developer", "tools": [{"type": "web_search"}]}, "input[0].tools[0].type"),
    ({"type": "additional_tools", "role": "developer",
      "tools": [{"type": "mcp", "server_label": "s", "server_url": "https://mcp.example.com"}]},
     "input[0].tools[0].type"),
    ({"type": "additional_tools", "role": "developer", "tools": [{"type": "function"}]}, "input[0].tools[0].name"),
    ({"type": "additional_tools", "role": "developer", "tools": [dict(CLOCK, allowed_callers=["programmatic"])]},
     "input[0].tools[0].allowed_callers"),
    ({"type": "additional_tools", "role": "developer", "tools": [CLOCK], "extra": 1}, "input[0].extra"),
])
async def test_what_cannot_be_added_is_named(http: aiohttp.ClientSession, item: dict, param: str) -> None:
    async with http.post("/v1/responses", json={"model": MODEL, "input": [item, {"role": "user",
                                                                                   "content": "hi"}]}) as r:
        body = await r.json()
        assert r.status == 400, body
    assert body["error"]["param"] == param, body
