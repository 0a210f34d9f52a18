"""``external_web_access: false``: a cache-only web search serves the results the bridge holds for the tenant's
query from an earlier live search, or none, and never searches the web; the cache is bounded and per tenant."""

from __future__ import annotations

from typing import Any

import pytest

from responses_bridge.run.tools.web_search import (
    CACHE_MISS,
    CACHE_ONLY_NOTE,
    SearchCache,
    SearchResult,
    WebSearchToolOptions,
    search_for_model,
)


class Provider:
    name = "recording"

    def __init__(self) -> None:
        self.queries: list[str] = []

    async def search(self, query: str, *, max_results: int, user_location: dict[str, Any] | None,
                     allowed_domains: list[str] | None) -> list[SearchResult]:
        self.queries.append(query)
        return [SearchResult(f"https://{host}/{query.split()[0]}", f"{host} page", "x" * 2000)
                for host in ("a.example", "b.example", "c.example", "d.example")][:max_results]

    async def aclose(self) -> None:
        pass


LIVE = WebSearchToolOptions()
CACHED = WebSearchToolOptions(external_web_access=False)


async def test_a_cache_only_search_serves_what_a_live_search_found_and_never_searches() -> None:
    provider, cache = Provider(), SearchCache()
    live, note = await search_for_model(provider, cache, "t1", "Widgets  prices", LIVE)
    assert note is None and len(live) == 4 and provider.queries == ["Widgets prices"]
    cached, note = await search_for_model(provider, cache, "t1", "widgets prices", CACHED)
    assert note == CACHE_ONLY_NOTE and cached == live  # same budget: the same results, snippets cut alike
    narrow = WebSearchToolOptions(external_web_access=False, search_context_size="low", allowed_domains=("b.example",))
    assert [r.url for r in (await search_for_model(provider, cache, "t1", "widgets prices", narrow))[0]] == [
        "https://b.example/Widgets"]
    assert provider.queries == ["Widgets prices"]  # the cache-only searches made none


async def test_a_query_never_searched_or_another_tenants_is_none_and_said_so() -> None:
    provider, cache = Provider(), SearchCache()
    await search_for_model(provider, cache, "t1", "widgets", LIVE)
    for tenant, query in (("t2", "widgets"), ("t1", "gadgets")):
        results, note = await search_for_model(provider, cache, tenant, query, CACHED)
        assert (results, note) == ([], CACHE_MISS)
    assert provider.queries == ["widgets"]


def test_the_cache_is_bounded_per_tenant_and_in_all_and_forgets_old_results() -> None:
    now = [0.0]
    cache = SearchCache(max_entries=4, per_tenant=2, ttl=10, clock=lambda: now[0])
    result = [SearchResult("https://a.example/", "a", "s")]
    for query in ("q1", "q2", "q3"):
        cache.put("busy", query, result)
    assert cache.get("busy", "q1") is None and cache.get("busy", "q3") == result and len(cache) == 2
    for tenant in ("t1", "t2", "t3"):
        cache.put(tenant, "q", result)
    assert len(cache) == 4 and cache.get("t3", "q") == result
    now[0] = 11
    assert cache.get("t3", "q") is None


@pytest.mark.parametrize(("tool", "param", "code"), [
    ({"type": "web_search_preview", "search_content_types": ["text", "image"]}, "tools[0].search_content_types",
     "unsupported_value"),
    ({"type": "web_search_preview", "search_content_types": "text"}, "tools[0].search_content_types",
     "invalid_type"),
    ({"type": "web_search_preview", "search_content_types": ["video"]}, "tools[0].search_content_types[0]",
     "invalid_value"),
    ({"type": "web_search", "external_web_access": "no"}, "tools[0].external_web_access", "invalid_type"),
])
def test_what_the_search_cannot_serve_is_a_400_naming_it(tool: dict[str, Any], param: str, code: str) -> None:
    import orjson

    from responses_bridge.protocol.errors import APIError
    from responses_bridge.protocol.responses.request import parse_request

    with pytest.raises(APIError) as raised:
        parse_request(orjson.dumps({"model": "m", "input": "x", "tools": [tool]}))
    assert (raised.value.status, raised.value.param, raised.value.code) == (400, param, code)
