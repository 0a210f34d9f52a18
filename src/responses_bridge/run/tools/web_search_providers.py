"""The search backends: a self-hosted SearXNG instance, the Brave Search API and Tavily.

Each maps the bridge's request (query, result count, location, allowed domains) onto its backend's parameters
and the backend's JSON onto :class:`SearchResult`. They share one HTTP path (:meth:`_HTTPProvider._fetch_json`)
that bounds the time (connect and total timeouts) and the size of an answer, and turns every failure into a
:class:`WebSearchError` whose text names the provider and the cause. Keys travel only in request headers; they
are never logged and are scrubbed from any error text.
"""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import orjson
import structlog

from ...net.bounded_body import BodyTooLarge, read_bounded
from ...net.errors import connection_error
from .web_search_base import (
    COUNTRY_LANGUAGE,
    SearchResult,
    WebSearchError,
    WebSearchSettings,
    keep,
    location_country,
    make_result,
    normalize_domains,
    site_clause,
)

log = structlog.get_logger("responses_bridge.web_search")

MAX_QUERY_CHARS = 400  # Brave refuses longer queries; no search engine needs more
BRAVE_MAX_COUNT = 20
TAVILY_MAX_RESULTS = 20
# Brave's ``country`` accepts only these (anything else is a 422); others are searched without a country.
BRAVE_COUNTRIES = frozenset((
    "AR", "AU", "AT", "BE", "BR", "CA", "CL", "DK", "FI", "FR", "DE", "HK",
    "IN", "ID", "IT", "JP", "KR", "MY", "MX", "NL", "NZ", "NO", "CN", "PL",
    "PT", "PH", "RU", "SA", "ZA", "ES", "SE", "CH", "TW", "TR", "GB", "US",
))
# Brave's ``search_lang`` uses a few codes of its own.
BRAVE_LANGUAGE = {"ja": "jp", "zh": "zh-hans", "pt": "pt-br", "nb": "nb"}


def _with_domains(query: str, domains: tuple[str, ...]) -> str:
    """The query with ``site:`` operators for the allowed domains, when it stays within the query limit."""
    if not domains:
        return query
    restricted = f"{query} {site_clause(domains)}"
    return restricted if len(restricted) <= MAX_QUERY_CHARS else query


def _excerpt(body: bytes, limit: int = 200) -> str:
    text = " ".join(body[:limit * 4].decode("utf-8", "replace").split())
    return text[:limit] + ("…" if len(text) > limit else "")


class _HTTPProvider:
    """Session handling and the bounded JSON fetch the three providers share."""

    name = "web search"
    path = "/search"  # the search endpoint, below the configured base URL
    key_variable: str | None = None  # the environment variable holding the API key, named when it is refused

    def __init__(self, settings: WebSearchSettings, session: aiohttp.ClientSession | None = None) -> None:
        self._settings = settings
        self._session = session
        self._owns_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout, connect=settings.connect_timeout)
        self._url = settings.base_url.rstrip("/") + self.path

    async def aclose(self) -> None:
        """Closes the session this provider opened itself; a session it was given stays its owner's."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
            self._owns_session = True
        return self._session

    def _scrub(self, text: str) -> str:
        key = self._settings.api_key
        return text.replace(key, "[key]") if key else text

    async def _fetch_json(self, method: str, url: str, *, headers: dict[str, str],
                          params: dict[str, str] | None = None, body: dict[str, Any] | None = None) -> Any:
        started = time.monotonic()
        limit = self._settings.max_response_bytes
        try:
            async with self._client().request(
                    method, url, params=params, data=orjson.dumps(body) if body is not None else None,
                    headers=headers, timeout=self._timeout, allow_redirects=False) as response:
                try:
                    raw = await read_bounded(response, limit)
                except BodyTooLarge as exc:
                    raise WebSearchError(
                        f"{self.name} answered {exc.declared} bytes, more than the {limit} bytes this bridge accepts"
                        if exc.declared is not None
                        else f"{self.name} answered more than the {limit} bytes this bridge accepts") from None
                status = response.status
        except WebSearchError as exc:
            self._failed(exc, started)
            raise
        except TimeoutError as exc:  # aiohttp's timeouts subclass TimeoutError (and ClientError): check first
            error = WebSearchError(
                f"{self.name} could not be connected to within {self._settings.connect_timeout:g} s"
                if isinstance(exc, aiohttp.ConnectionTimeoutError)
                else f"{self.name} did not answer within {self._settings.timeout:g} s")
            self._failed(error, started)
            raise error from exc
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            error = WebSearchError(self._scrub(f"{self.name} could not be reached: {connection_error(exc)}"))
            self._failed(error, started)
            raise error from exc
        if status != 200:
            error = WebSearchError(self._scrub(f"{self.name} answered HTTP {status}{self._hint(status)}: "
                                               f"{_excerpt(raw)}"))
            self._failed(error, started)
            raise error
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            error = WebSearchError(self._scrub(f"{self.name} answered something that is not JSON: {_excerpt(raw)!r}"))
            self._failed(error, started)
            raise error from exc

    def _hint(self, status: int) -> str:
        return f" (is {self.key_variable} right?)" if self.key_variable and status in (401, 403) else ""

    def _failed(self, error: WebSearchError, started: float) -> None:
        log.warning("web_search_failed", provider=self.name, error=str(error),
                    ms=round((time.monotonic() - started) * 1000))

    def _searched(self, results: list[SearchResult], started: float) -> list[SearchResult]:
        log.info("web_search", provider=self.name, results=len(results),
                 ms=round((time.monotonic() - started) * 1000))
        return results

    def _results(self, raw: Any, what: str, excerpt_key: str, *, max_results: int, domains: tuple[str, ...],
                 started: float) -> list[SearchResult]:
        """The answer's list of hits (``raw``; ``what`` names it in the error when it is not a list) as results:
        url, title and the excerpt under ``excerpt_key``, kept to the allowed domains and ``max_results``."""
        if not isinstance(raw, list):
            raise self._shape_error(what)
        results = [made for item in raw if isinstance(item, dict)
                   if (made := make_result(item.get("url"), item.get("title"), item.get(excerpt_key)))]
        return self._searched(keep(results, max_results=max_results, domains=domains), started)

    def _shape_error(self, what: str) -> WebSearchError:
        error = WebSearchError(f"{self.name} answered JSON without {what}")
        log.warning("web_search_failed", provider=self.name, error=str(error))
        return error


class SearXNGProvider(_HTTPProvider):
    """A self-hosted SearXNG instance's JSON API (``format=json`` must be enabled in its ``settings.yml``)."""

    name = "SearXNG"

    def __init__(self, settings: WebSearchSettings, session: aiohttp.ClientSession | None = None) -> None:
        super().__init__(settings, session)
        base = settings.base_url.rstrip("/")
        self._url = base if base.endswith("/search") else base + "/search"

    def _hint(self, status: int) -> str:
        return " (is format=json enabled under search.formats in its settings.yml?)" if status == 403 else ""

    async def search(self, query: str, *, max_results: int, user_location: dict[str, Any] | None,
                     allowed_domains: list[str] | None) -> list[SearchResult]:
        started = time.monotonic()
        domains = normalize_domains(allowed_domains)
        params = {"q": _with_domains(query[:MAX_QUERY_CHARS], domains), "format": "json", "pageno": "1"}
        country = location_country(user_location)
        if country and country in COUNTRY_LANGUAGE:
            params["language"] = f"{COUNTRY_LANGUAGE[country]}-{country}"
        answer = await self._fetch_json("GET", self._url, params=params, headers={"Accept": "application/json"})
        raw = answer.get("results") if isinstance(answer, dict) else None
        return self._results(raw, "a 'results' list", "content", max_results=max_results, domains=domains,
                             started=started)


class BraveProvider(_HTTPProvider):
    """The Brave Search API's web search (``X-Subscription-Token`` header)."""

    name = "Brave Search"
    path = "/res/v1/web/search"
    key_variable = "BRAVE_API_KEY"

    async def search(self, query: str, *, max_results: int, user_location: dict[str, Any] | None,
                     allowed_domains: list[str] | None) -> list[SearchResult]:
        started = time.monotonic()
        domains = normalize_domains(allowed_domains)
        # With domains, ask for a full page: Brave has no domain parameter, so some results may be filtered out.
        count = BRAVE_MAX_COUNT if domains else min(max(max_results, 1), BRAVE_MAX_COUNT)
        params = {"q": _with_domains(query[:MAX_QUERY_CHARS], domains), "count": str(count)}
        country = location_country(user_location)
        if country in BRAVE_COUNTRIES:
            params["country"] = country
        if country in COUNTRY_LANGUAGE:
            language = COUNTRY_LANGUAGE[country]
            params["search_lang"] = BRAVE_LANGUAGE.get(language, language)
        headers = {"Accept": "application/json", "X-Subscription-Token": self._settings.api_key or ""}
        answer = await self._fetch_json("GET", self._url, params=params, headers=headers)
        if not isinstance(answer, dict) or ("web" not in answer and answer.get("type") != "search"):
            raise self._shape_error("a search answer ('type': 'search' or a 'web' section)")
        web = answer.get("web") or {}  # Brave leaves 'web' out when nothing was found
        raw = web.get("results") if isinstance(web, dict) else None
        if raw is None:
            raw = []
        return self._results(raw, "a 'web.results' list", "description", max_results=max_results, domains=domains,
                             started=started)


class TavilyProvider(_HTTPProvider):
    """Tavily's search API (bearer key; domains passed natively as ``include_domains``)."""

    name = "Tavily"
    key_variable = "TAVILY_API_KEY"

    async def search(self, query: str, *, max_results: int, user_location: dict[str, Any] | None,
                     allowed_domains: list[str] | None) -> list[SearchResult]:
        # Tavily localises by full country name only; user_location is not passed on (see the module docstring
        # of web_search.py for what each provider does with it).
        started = time.monotonic()
        domains = normalize_domains(allowed_domains)
        body: dict[str, Any] = {"query": query[:MAX_QUERY_CHARS],
                                "max_results": min(max(max_results, 1), TAVILY_MAX_RESULTS),
                                "search_depth": "basic"}
        if domains:
            body["include_domains"] = list(domains)
        headers = {"Accept": "application/json", "Content-Type": "application/json",
                   "Authorization": f"Bearer {self._settings.api_key or ''}"}
        answer = await self._fetch_json("POST", self._url, body=body, headers=headers)
        raw = answer.get("results") if isinstance(answer, dict) else None
        return self._results(raw, "a 'results' list", "content", max_results=max_results, domains=domains,
                             started=started)
