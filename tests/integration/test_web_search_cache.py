"""``web_search`` with ``external_web_access: false`` (Codex's cached web search) through both doors, JSON and
stream: no live search is made — the results an earlier live search of the tenant's found for the query are served,
or none, and the model is told which — where before a live search was made anyway. ``search_content_types``
asking for images is refused naming it. Every 2xx validates strictly with the SDK's types."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from responses_bridge.run.tools.web_search import CACHE_MISS, CACHE_ONLY_NOTE
from tests.support.bridge import UpstreamLog
from tests.support.gateway import Gateway, running_gateway
from tests.support.schema import parse_sse, validate_response
from tests.support.search_server import SearchServer
from tests.unit.test_server_tool_turns import check_event, check_item_order

pytestmark = pytest.mark.store_proven(
    "tests/integration/test_agents_automations_replicas.py",
    "tests/integration/test_input_references.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)

MODEL = "fake-model"
STREAM_EVENT: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
CACHED = {"type": "web_search", "external_web_access": False}


@pytest.fixture(scope="module")
async def search() -> AsyncIterator[SearchServer]:
    async with SearchServer() as server:
        yield server


@pytest.fixture(scope="module")
async def gateway(fake_upstream: str, search: SearchServer,
                  tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    async with running_gateway(str(tmp_path_factory.mktemp("cached-search")), fake_upstream,
                               env={"RESPONSES_BRIDGE_WEB_SEARCH": f"searxng:{search.url}"}) as started:
        yield started


@pytest.fixture
async def raw(door_url: str) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=door_url, timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


@pytest.fixture
async def upstream(gateway: Gateway) -> UpstreamLog:
    log = UpstreamLog(gateway.sidecar.upstream_url.removesuffix("/v1"))
    await log.clear()
    return log


async def _served(raw: aiohttp.ClientSession, body: dict[str, Any]) -> dict[str, Any]:
    async with raw.post("/v1/responses", json=body) as answer:
        assert answer.status == 200, await answer.text()
        if not body.get("stream"):
            response: dict[str, Any] = await answer.json()
            validate_response(response)
            return response
        events = parse_sse(await answer.read())
    for event in events:  # each the SDK's (the server tools' events too), in strict mode
        check_event(event)
        STREAM_EVENT.validate_python(event, strict=True)
    check_item_order(events)
    assert events[-1]["type"] == "response.completed"
    validate_response(events[-1]["response"])
    return events[-1]["response"]


async def _tool_output(upstream: UpstreamLog) -> str:
    messages = (await upstream.last_body())["messages"]
    return next(message["content"] for message in reversed(messages) if message["role"] == "tool")


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_a_cache_only_search_never_searches_the_web(raw: aiohttp.ClientSession, search: SearchServer,
                                                          upstream: UpstreamLog, door_url: str, stream: bool) -> None:
    word = f"gizmos{door_url.rsplit(':', 1)[1]}{int(stream)}"  # a query no other test searched
    searched = len(search.requests)
    body = {"model": MODEL, "input": f"call web_search {word}", "tools": [CACHED], "stream": stream,
            "include": ["web_search_call.action.sources"]}
    response = await _served(raw, body)
    call = response["output"][0]
    assert (call["type"], call["status"], call["action"]["sources"]) == ("web_search_call", "completed", [])
    assert await _tool_output(upstream) == CACHE_MISS
    assert len(search.requests) == searched  # before: a live search was made anyway

    live = await _served(raw, dict(body, tools=[{"type": "web_search"}]))
    found = [source["url"] for source in live["output"][0]["action"]["sources"]]
    assert found and len(search.requests) == searched + 1

    cached = await _served(raw, body)
    assert [source["url"] for source in cached["output"][0]["action"]["sources"]] == found
    output = await _tool_output(upstream)
    assert output.startswith(CACHE_ONLY_NOTE) and found[0] in output
    assert len(search.requests) == searched + 1


async def test_image_results_are_refused_naming_the_field(raw: aiohttp.ClientSession, upstream: UpstreamLog) -> None:
    tool = {"type": "web_search_preview", "search_content_types": ["text", "image"]}
    async with raw.post("/v1/responses", json={"model": MODEL, "input": "hi", "tools": [tool]}) as answer:
        assert answer.status == 400
        error = (await answer.json())["error"]
    assert (error["param"], error["code"]) == ("tools[0].search_content_types", "unsupported_value")
    assert await upstream.entries() == []
    text_only = dict(tool, search_content_types=["text"])
    assert (await _served(raw, {"model": MODEL, "input": "hi", "tools": [text_only]}))["tools"] == [text_only]
