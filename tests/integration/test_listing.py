"""``GET /v1/responses`` and ``GET /v1/conversations`` through both doors (the sidecar's HTTP door, and a real
Envoy routing the plain GET to it): raw HTTP, the openai SDK's own cursor pages, and generated bad queries.

The sidecar is shared by the whole session, so each test tags what it creates with its own metadata value and
lists by that tag (responses), or looks only at its own objects in the full list (conversations).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import uuid
from collections import Counter
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.pagination import AsyncConversationCursorPage, AsyncCursorPage
from openai.types.conversations import Conversation
from openai.types.responses import Response

from tests.support.schema import validate_response

pytestmark = pytest.mark.store_proven(
    "tests/integration/test_postgres_start.py",
    "tests/unit/test_store_contract.py",
    "tests/integration/test_replicas_code.py",
    "tests/integration/test_agents_automations_replicas.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)

MODEL = "fake-model"
LIST_KEYS = {"object", "data", "first_id", "last_id", "has_more"}


def ordered(responses: list[Any], order: str = "desc") -> list[str]:
    return [r.id for r in sorted(responses, key=lambda r: (r.created_at, r.id), reverse=order == "desc")]


async def get_json(http: aiohttp.ClientSession, path: str, params: dict[str, str]) -> tuple[int, Any]:
    async with http.get(path, params=params) as answer:
        assert answer.content_type == "application/json"
        return answer.status, await answer.json()


async def walk(http: aiohttp.ClientSession, path: str, params: dict[str, str]) -> list[dict[str, Any]]:
    """Every object of the list, page by page with ``after = last_id``, checking each page's shape."""
    seen: list[dict[str, Any]] = []
    after: dict[str, str] = {}
    while True:
        status, page = await get_json(http, path, {**params, **after})
        assert status == 200, page
        assert set(page) == LIST_KEYS and page["object"] == "list"
        ids = [item["id"] for item in page["data"]]
        assert (page["first_id"], page["last_id"]) == ((ids[0], ids[-1]) if ids else (None, None))
        seen += page["data"]
        if not page["has_more"]:
            return seen
        after = {"after": page["last_id"]}


@pytest.fixture
async def tagged(client: openai.AsyncOpenAI) -> tuple[str, list[Response], Response]:
    """Five stored responses with one fresh tag (one incomplete), a sixth deleted, a seventh ``store: false``;
    returns the tag, the listed ones and the incomplete one."""
    tag = uuid.uuid4().hex
    kept = [await client.responses.create(model=MODEL, input=f"listed {n}", metadata={"run": tag, "n": str(n)})
            for n in range(4)]
    incomplete = await client.responses.create(model=MODEL, input="one two three four five [length]",
                                               metadata={"run": tag, "n": "cut"})
    assert incomplete.status == "incomplete"
    deleted = await client.responses.create(model=MODEL, input="deleted", metadata={"run": tag})
    await client.responses.delete(deleted.id)
    unstored = await client.responses.create(model=MODEL, input="not stored", store=False, metadata={"run": tag})
    assert unstored.status == "completed"
    return tag, [*kept, incomplete], incomplete


async def test_list_responses_pages_filters_and_exact_objects(http: aiohttp.ClientSession,
                                                              tagged: tuple[str, list[Response], Response]) -> None:
    tag, responses, incomplete = tagged
    by_tag = {"metadata[run]": tag}
    listed = await walk(http, "/v1/responses", {**by_tag, "limit": "2"})
    assert [r["id"] for r in listed] == ordered(responses)  # newest first; deleted and store:false absent
    for item in listed:  # each exactly what GET /v1/responses/{id} answers
        validate_response(item)
        _, single = await get_json(http, f"/v1/responses/{item['id']}", {})
        assert item == single

    ascending = await walk(http, "/v1/responses", {**by_tag, "order": "asc", "limit": "3"})
    assert [r["id"] for r in ascending] == ordered(responses, "asc")
    full = ordered(responses)
    _, previous = await get_json(http, "/v1/responses", {**by_tag, "before": full[3], "limit": "2"})
    assert [r["id"] for r in previous["data"]] == full[1:3] and previous["has_more"]
    _, between = await get_json(http, "/v1/responses", {**by_tag, "after": full[0], "before": full[4]})
    assert [r["id"] for r in between["data"]] == full[1:4] and not between["has_more"]

    async def ids(**params: str) -> list[str]:
        return [r["id"] for r in await walk(http, "/v1/responses", {**by_tag, **params})]

    assert await ids(status="incomplete") == [incomplete.id]
    assert await ids(status="completed") == [i for i in full if i != incomplete.id]
    assert await ids(status="in_progress") == []
    assert await ids(model=MODEL) == full
    assert await ids(model="another-model") == []
    assert await ids(**{"metadata[n]": "2"}) == [responses[2].id]
    assert await ids(**{"metadata[n]": "2", "metadata[missing]": "x"}) == []
    # unversioned path, same list
    assert [r["id"] for r in await walk(http, "/responses", by_tag)] == full


async def test_list_responses_with_the_sdk(client: openai.AsyncOpenAI,
                                           tagged: tuple[str, list[Response], Response]) -> None:
    """The SDK has no ``responses.list``; its generic cursor page (``after = last item's id``) walks the list."""
    tag, responses, _ = tagged
    pages = client.get_api_list("/responses", model=Response, page=AsyncCursorPage[Response],
                                options={"params": {"metadata[run]": tag, "limit": 2}})
    seen = [response async for response in pages]
    assert [r.id for r in seen] == ordered(responses)
    assert all(isinstance(r, Response) and r.metadata and r.metadata["run"] == tag for r in seen)
    first = await client.get_api_list("/responses", model=Response, page=AsyncCursorPage[Response],
                                      options={"params": {"metadata[run]": tag, "limit": 1, "order": "asc"}})
    assert [r.id for r in first.data] == ordered(responses, "asc")[:1] and first.has_more


async def test_list_conversations(http: aiohttp.ClientSession, client: openai.AsyncOpenAI) -> None:
    mine = [await client.conversations.create(metadata={"n": str(n)}) for n in range(4)]
    await client.conversations.delete(mine[1].id)
    kept = [mine[0], mine[2], mine[3]]
    own = {c.id for c in mine}
    listed = await walk(http, "/v1/conversations", {"limit": "2"})
    assert [c["id"] for c in listed if c["id"] in own] == ordered(kept)
    for item in (c for c in listed if c["id"] in own):  # Conversation objects, as GET /v1/conversations/{id}
        _, single = await get_json(http, f"/v1/conversations/{item['id']}", {})
        assert item == single and item["object"] == "conversation"
    ascending = await walk(http, "/v1/conversations", {"order": "asc", "limit": "100"})
    assert [c["id"] for c in ascending] == [c["id"] for c in reversed(listed)]

    pages = client.get_api_list("/conversations", model=Conversation, page=AsyncConversationCursorPage[Conversation],
                                options={"params": {"limit": 2}})
    seen = [conversation async for conversation in pages]
    assert [c.id for c in seen] == [c["id"] for c in listed]
    assert all(isinstance(c, Conversation) for c in seen)


BAD_RESPONSE_QUERIES = [
    ({"limit": "0"}, "limit"), ({"limit": "101"}, "limit"), ({"limit": "ten"}, "limit"),
    ({"limit": "99999999999999999999999"}, "limit"), ({"order": "newest"}, "order"),
    ({"after": "resp_missing"}, "after"), ({"before": ""}, "before"), ({"status": "done"}, "status"),
    ({"metadata[]": "x"}, "metadata"),
    ({f"metadata[k{n}]": "v" for n in range(17)}, "metadata"),
]
BAD_CONVERSATION_QUERIES = [
    ({"limit": "-1"}, "limit"), ({"order": "ASC"}, "order"), ({"after": "conv_missing"}, "after"),
    ({"before": "resp_1"}, "before"),
]


@pytest.mark.parametrize(("path", "query", "param"),
                         [("/v1/responses", q, p) for q, p in BAD_RESPONSE_QUERIES]
                         + [("/v1/conversations", q, p) for q, p in BAD_CONVERSATION_QUERIES])
async def test_bad_queries_are_openai_400s_naming_the_param(http: aiohttp.ClientSession, path: str,
                                                           query: dict[str, str], param: str) -> None:
    status, body = await get_json(http, path, query)
    assert status == 400, body
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["param"] == param and body["error"]["type"] == "invalid_request_error"


# -- generated queries: never a 5xx, always a list or an OpenAI error ------------------------------------------

_VALUES = st.one_of(st.text(max_size=12), st.integers(-5, 200).map(str), st.sampled_from(
    ["asc", "desc", "completed", "incomplete", MODEL, "resp_missing", "conv_missing", "1e3", "\u00b2", "\x00",
     "9" * 40, "%", "[]"]))
_KEYS = st.one_of(st.sampled_from(["limit", "order", "after", "before", "model", "status", "metadata[run]",
                                   "metadata[]", "metadata[[x]]", "metadata[", "include"]),
                  st.text(max_size=8).map(lambda key: f"metadata[{key}]"), st.text(max_size=6))
QUERIES = st.tuples(st.sampled_from(["/v1/responses", "/v1/conversations", "/responses", "/conversations"]),
                    st.lists(st.tuples(_KEYS, _VALUES), max_size=4))


def _send(base_url: str, path: str, pairs: list[tuple[str, str]]) -> tuple[int, str, bytes]:
    def part(text: str) -> str:
        return quote(text.encode("utf-8", "surrogatepass"), safe="")

    target = path + ("?" + "&".join(f"{part(k)}={part(v)}" for k, v in pairs) if pairs else "")
    parts = urlsplit(base_url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.request("GET", target)
        answer = connection.getresponse()
        return answer.status, answer.getheader("Content-Type", ""), answer.read()
    finally:
        connection.close()


def _check_generated(base_url: str, examples: int) -> Counter[int]:
    statuses: Counter[int] = Counter()

    @settings(max_examples=examples, derandomize=True, database=None, deadline=None, print_blob=False,
              suppress_health_check=list(HealthCheck))
    @given(QUERIES)
    def one(query: tuple[str, list[tuple[str, str]]]) -> None:
        path, pairs = query
        status, content_type, body = _send(base_url, path, pairs)
        statuses[status] += 1
        assert status in (200, 400), (status, body[:300], query)
        assert content_type.startswith("application/json"), (content_type, query)
        parsed = json.loads(body)
        if status == 200:
            assert set(parsed) == LIST_KEYS and parsed["object"] == "list" and isinstance(parsed["data"], list)
        else:
            assert set(parsed) == {"error"} and set(parsed["error"]) == {"message", "type", "param", "code"}
            assert parsed["error"]["param"] in ("limit", "order", "after", "before", "status", "metadata"), parsed

    one()
    return statuses


async def test_generated_list_queries_never_fail_the_server(base_url: str,
                                                           client: openai.AsyncOpenAI) -> None:
    await client.responses.create(model=MODEL, input="something to list", metadata={"run": "fuzz"})
    statuses = await asyncio.to_thread(_check_generated, base_url, 150)
    assert statuses.total() >= 150 and statuses[200] > 0 and statuses[400] > 0, statuses
