"""The web search providers against a loopback server speaking SearXNG's, Brave's and Tavily's formats."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import structlog
from pydantic import ValidationError

from responses_bridge.config.settings import Settings
from responses_bridge.run.tools.web_search import (
    CONTEXT_BUDGETS,
    SearchProvider,
    WebSearchError,
    WebSearchSettings,
    WebSearchToolOptions,
    provider_from_settings,
    run_web_search,
)
from tests.support.search_server import DOMAINS, SearchServer, slug


@pytest.fixture
async def server() -> AsyncIterator[SearchServer]:
    async with SearchServer() as running:
        yield running


def settings_for(server: SearchServer, kind: str, **overrides: object) -> WebSearchSettings:
    values: dict[str, object] = {
        "provider": kind,
        "base_url": server.url,
        "api_key": {"brave": server.brave_key, "tavily": server.tavily_key}.get(kind),
        "timeout": 5.0,
    }
    values.update(overrides)
    return WebSearchSettings(**values)  # type: ignore[arg-type]


@pytest.fixture
async def providers(server: SearchServer) -> AsyncIterator[dict[str, SearchProvider]]:
    made = {kind: provider_from_settings(settings_for(server, kind)) for kind in ("searxng", "brave", "tavily")}
    yield made  # type: ignore[misc]
    for provider in made.values():
        await provider.aclose()  # type: ignore[union-attr]


KINDS = ("searxng", "brave", "tavily")


@pytest.mark.parametrize("kind", KINDS)
async def test_results_are_mapped_and_cleaned(kind: str, server: SearchServer,
                                              providers: dict[str, SearchProvider]) -> None:
    results = await run_web_search(providers[kind], "  solar   eclipse 2027 ", WebSearchToolOptions())
    assert len(results) == CONTEXT_BUDGETS["medium"].results
    assert [r.url for r in results] == [f"https://{DOMAINS[i % 4]}/solar-eclipse-2027/{i}" for i in range(5)]
    assert results[0].title == "solar eclipse 2027 — result 0 ✓"
    # HTML highlighting and entities are gone; whitespace in the query was collapsed before sending.
    assert results[0].snippet.startswith("About solar eclipse 2027 & result 0: word0")
    assert "<strong>" not in results[0].snippet
    sent = server.requests[-1]
    assert (sent.query.get("q") or sent.body["query"]) == "solar eclipse 2027"


async def test_searxng_asks_for_json(server: SearchServer, providers: dict[str, SearchProvider]) -> None:
    await run_web_search(providers["searxng"], "q", WebSearchToolOptions())
    assert server.requests[-1].path == "/search" and server.requests[-1].query["format"] == "json"


@pytest.mark.parametrize(("size", "count", "chars"), [("low", 3, 300), ("medium", 5, 600), ("high", 10, 1200)])
@pytest.mark.parametrize("kind", KINDS)
async def test_context_size_sets_count_and_snippet_length(kind: str, size: str, count: int, chars: int,
                                                          providers: dict[str, SearchProvider]) -> None:
    results = await run_web_search(providers[kind], "tides",
                                   WebSearchToolOptions.from_tool({"type": "web_search", "search_context_size": size}))
    assert len(results) == count
    assert all(len(r.snippet) <= chars for r in results)
    assert all(len(r.snippet) > chars // 2 for r in results)  # shortened, not emptied
    assert all(r.snippet.endswith("…") for r in results)


async def test_searxng_localises_by_country(server: SearchServer, providers: dict[str, SearchProvider]) -> None:
    tool = {"type": "web_search", "user_location": {"type": "approximate", "country": "ch", "city": "Zürich"}}
    await run_web_search(providers["searxng"], "Fondue", WebSearchToolOptions.from_tool(tool))
    assert server.requests[-1].query["language"] == "de-CH"
    unknown = {"type": "web_search", "user_location": {"type": "approximate", "country": "XX"}}
    await run_web_search(providers["searxng"], "Fondue", WebSearchToolOptions.from_tool(unknown))
    assert "language" not in server.requests[-1].query


async def test_brave_sends_key_header_country_and_language(server: SearchServer,
                                                           providers: dict[str, SearchProvider]) -> None:
    tool = {"type": "web_search_preview", "user_location": {"type": "approximate", "country": "JP"}}
    await run_web_search(providers["brave"], "ramen", WebSearchToolOptions.from_tool(tool))
    sent = server.requests[-1]
    assert sent.headers["X-Subscription-Token"] == server.brave_key
    assert server.brave_key not in str(sent.query)
    assert (sent.query["country"], sent.query["search_lang"], sent.query["count"]) == ("JP", "jp", "5")
    # A country Brave does not know is left out rather than refused upstream.
    await run_web_search(providers["brave"], "ramen", WebSearchToolOptions.from_tool(
        {"type": "web_search", "user_location": {"type": "approximate", "country": "VN"}}))
    assert "country" not in server.requests[-1].query and server.requests[-1].query["search_lang"] == "vi"


async def test_tavily_sends_bearer_key_and_native_domains(server: SearchServer,
                                                          providers: dict[str, SearchProvider]) -> None:
    tool = {"type": "web_search", "search_context_size": "low", "filters": {"allowed_domains": ["example.org"]}}
    results = await run_web_search(providers["tavily"], "rust async", WebSearchToolOptions.from_tool(tool))
    sent = server.requests[-1]
    assert sent.headers["Authorization"] == f"Bearer {server.tavily_key}"
    assert sent.body == {"query": "rust async", "max_results": 3, "search_depth": "basic",
                         "include_domains": ["example.org"]}
    assert len(results) == 3 and all(r.url.startswith("https://example.org/") for r in results)


@pytest.mark.parametrize("kind", ("searxng", "brave"))
async def test_allowed_domains_go_into_the_query_and_are_enforced(kind: str, server: SearchServer,
                                                                  providers: dict[str, SearchProvider]) -> None:
    # The fake ignores site: like a careless engine; subdomains of an allowed domain are allowed.
    tool = {"type": "web_search", "filters": {"allowed_domains": ["https://Example.com/", "example.net"]}}
    results = await run_web_search(providers[kind], "llamas", WebSearchToolOptions.from_tool(tool))
    assert server.requests[-1].query["q"] == "llamas (site:example.com OR site:example.net)"
    hosts = {r.url.split("/")[2] for r in results}
    assert hosts == {"example.com", "blog.example.com", "news.example.net"}
    assert len(results) == 5


async def test_results_outside_allowed_domains_are_dropped_even_from_the_provider() -> None:
    class Careless:
        name = "careless"

        async def search(self, query, *, max_results, user_location, allowed_domains):
            from responses_bridge.run.tools.web_search import SearchResult
            return [SearchResult("https://evil.example/x", "x", "x"), SearchResult("https://notgood.org/y", "y", "y"),
                    SearchResult("https://a.good.org/z", "z", "z")]

        async def aclose(self) -> None:
            return None

    results = await run_web_search(Careless(), "q", WebSearchToolOptions(allowed_domains=("good.org",)))
    assert [r.url for r in results] == ["https://a.good.org/z"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("mode", "says"), [
    ("500", "answered HTTP 500: internal error: the index is rebuilding"),
    ("garbage", "answered something that is not JSON"),
    ("shape", "answered JSON without"),
    ("big", "more than the 1048576 bytes this bridge accepts"),
    ("big-chunked", "more than the 1048576 bytes this bridge accepts"),
])
async def test_failures_raise_clear_errors(kind: str, mode: str, says: str, server: SearchServer) -> None:
    server.mode = mode
    provider = provider_from_settings(settings_for(server, kind, max_response_bytes=1024 * 1024))
    try:
        with pytest.raises(WebSearchError) as raised:
            await run_web_search(provider, "anything", WebSearchToolOptions())
    finally:
        await provider.aclose()
    assert says in str(raised.value)
    assert str(raised.value).startswith({"searxng": "SearXNG", "brave": "Brave Search", "tavily": "Tavily"}[kind])


@pytest.mark.parametrize("kind", KINDS)
async def test_a_slow_provider_times_out(kind: str, server: SearchServer) -> None:
    server.mode = "slow"
    provider = provider_from_settings(settings_for(server, kind, timeout=0.3))
    try:
        with pytest.raises(WebSearchError, match=r"did not answer within 0\.3 s"):
            await run_web_search(provider, "anything", WebSearchToolOptions())
    finally:
        await provider.aclose()


async def test_searxng_without_json_format_gets_a_hint(server: SearchServer,
                                                       providers: dict[str, SearchProvider]) -> None:
    server.mode = "forbidden"
    with pytest.raises(WebSearchError, match=r"HTTP 403 .*format=json"):
        await run_web_search(providers["searxng"], "anything", WebSearchToolOptions())


async def test_unreachable_provider(server: SearchServer) -> None:
    await server.__aexit__(None, None, None)
    provider = provider_from_settings(settings_for(server, "searxng"))
    try:
        with pytest.raises(WebSearchError, match="SearXNG could not be reached"):
            await run_web_search(provider, "anything", WebSearchToolOptions())
    finally:
        await provider.aclose()


async def test_empty_query_is_an_error(providers: dict[str, SearchProvider]) -> None:
    with pytest.raises(WebSearchError, match="empty"):
        await run_web_search(providers["searxng"], "   ", WebSearchToolOptions())


@pytest.mark.parametrize("kind", ("brave", "tavily"))
async def test_keys_are_never_logged_nor_in_errors(kind: str, server: SearchServer) -> None:
    key = server.brave_key if kind == "brave" else server.tavily_key
    good = provider_from_settings(settings_for(server, kind))
    wrong = provider_from_settings(settings_for(server, kind, api_key="wrong-key-0000"))
    try:
        with structlog.testing.capture_logs() as logs:
            await run_web_search(good, "q", WebSearchToolOptions())
            with pytest.raises(WebSearchError) as raised:
                await run_web_search(wrong, "q", WebSearchToolOptions())
    finally:
        await good.aclose()
        await wrong.aclose()
    assert "HTTP 401" in str(raised.value) and "_API_KEY right?" in str(raised.value)
    assert [entry["event"] for entry in logs] == ["web_search", "web_search_failed"]
    assert key not in repr(logs) and "wrong-key-0000" not in repr(logs) and "wrong-key-0000" not in str(raised.value)
    assert key not in repr(settings_for(server, kind))


async def test_a_borrowed_session_stays_open(server: SearchServer) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        provider = provider_from_settings(settings_for(server, "searxng"), session=session)
        assert len(await run_web_search(provider, "q", WebSearchToolOptions())) == 5
        await provider.aclose()
        assert not session.closed


# --- settings --------------------------------------------------------------------------------------------------

def test_no_provider_configured_means_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RESPONSES_BRIDGE_WEB_SEARCH", raising=False)
    settings = Settings()
    assert settings.web_search_settings() is None
    assert provider_from_settings(settings.web_search_settings()) is None


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESPONSES_BRIDGE_WEB_SEARCH", "searxng:http://127.0.0.1:8888/")
    made = Settings().web_search_settings()
    assert (made.provider, made.base_url, made.api_key) == ("searxng", "http://127.0.0.1:8888", None)

    monkeypatch.setenv("RESPONSES_BRIDGE_WEB_SEARCH", "brave")
    monkeypatch.setenv("BRAVE_API_KEY", "bk-secret")
    monkeypatch.setenv("RESPONSES_BRIDGE_WEB_SEARCH_TIMEOUT", "4")
    settings = Settings()
    made = settings.web_search_settings()
    assert (made.provider, made.base_url, made.api_key, made.timeout) == (
        "brave", "https://api.search.brave.com", "bk-secret", 4.0)
    assert "bk-secret" not in repr(settings) and "bk-secret" not in repr(made)

    monkeypatch.setenv("RESPONSES_BRIDGE_WEB_SEARCH", "tavily")
    monkeypatch.setenv("RESPONSES_BRIDGE_TAVILY_API_KEY", "tk-secret")
    monkeypatch.setenv("RESPONSES_BRIDGE_WEB_SEARCH_URL", "http://127.0.0.1:9999")
    made = Settings().web_search_settings()
    assert (made.provider, made.base_url, made.api_key) == ("tavily", "http://127.0.0.1:9999", "tk-secret")


@pytest.mark.parametrize(("spec", "says"), [
    ("google", "is not one of searxng:URL, brave, tavily"),
    ("searxng:", "must be followed by the instance's http(s) URL"),
    ("searxng:ftp://x", "must be followed by the instance's http(s) URL"),
    ("brave", "needs BRAVE_API_KEY"),
    ("tavily", "needs TAVILY_API_KEY"),
])
def test_bad_configuration_stops_start_up(spec: str, says: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BRAVE_API_KEY", "TAVILY_API_KEY", "RESPONSES_BRIDGE_BRAVE_API_KEY",
                 "RESPONSES_BRIDGE_TAVILY_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RESPONSES_BRIDGE_WEB_SEARCH", spec)
    with pytest.raises(ValidationError, match=says.replace("(", r"\(").replace(")", r"\)")):
        Settings()


def test_results_use_the_query_slug() -> None:
    # The fake's URLs are what the assertions above predict.
    assert slug("Solar  Eclipse 2027!") == "solar-eclipse-2027"
