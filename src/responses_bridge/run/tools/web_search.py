"""The ``web_search`` / ``web_search_preview`` tool: choose the provider, run one search for the model, and
present what it found.

The loop's path through it::

    provider = provider_from_settings(settings.web_search_settings())   # None: no search configured
    options = WebSearchToolOptions.from_tool(tool)                       # the request's web_search tool
    results = await run_web_search(provider, query, options)             # raises WebSearchError
    results_for_model(results)                                           # the tool output the model reads
    web_search_action(query, results, include_sources=...)               # the web_search_call item's action
    find_citations(answer_text, results)                                 # url_citation annotations

**Providers** (``RESPONSES_BRIDGE_WEB_SEARCH``): ``searxng:URL`` (a self-hosted SearXNG with its JSON format
enabled), ``brave`` (``BRAVE_API_KEY``) or ``tavily`` (``TAVILY_API_KEY``). With none configured
:func:`provider_from_settings` returns None and the request's web search tool falls under the unsupported-tool
policy: the bridge never pretends to search.

**``search_context_size``** chooses how much of the model's context the results may take
(:data:`CONTEXT_BUDGETS`): ``low`` 3 results with snippets of at most 300 characters, ``medium`` (the default)
5 × 600, ``high`` 10 × 1,200.

**``filters.allowed_domains``** (a domain allows its subdomains, as OpenAI says) is passed to the provider where
it has a way (Tavily's ``include_domains``; ``site:`` operators in SearXNG's and Brave's query) and is enforced
on the results always, so a provider that ignores it cannot leak other domains.

**``external_web_access: false``** (OpenAI's cache-only mode; Codex's cached web search sends it): no live
search is made; the results the bridge holds for the tenant's query from an earlier live search
(web_search_cache.py) are served, or none, and the model is told which (:func:`search_for_model`).

**``user_location``**: its ``country`` localises the search — SearXNG gets ``language=<lang>-<CC>`` and Brave
``country`` and ``search_lang``, for the countries listed in ``COUNTRY_LANGUAGE`` / Brave's own list; Tavily,
which takes only full country names, is not localised. City, region and timezone are not used by any of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp

from .web_search_base import (
    SearchProvider,
    SearchResult,
    WebSearchError,
    WebSearchSettings,
    keep,
    normalize_domains,
    parse_provider_spec,
)
from .web_search_cache import SearchCache
from .web_search_citations import find_citations, results_for_model, web_search_action, web_search_call_item
from .web_search_providers import BraveProvider, SearXNGProvider, TavilyProvider

__all__ = [
    "CONTEXT_BUDGETS",
    "ContextBudget",
    "SearchCache",
    "SearchProvider",
    "SearchResult",
    "WebSearchError",
    "WebSearchSettings",
    "WebSearchToolOptions",
    "find_citations",
    "parse_provider_spec",
    "provider_from_settings",
    "results_for_model",
    "run_web_search",
    "search_for_model",
    "web_search_action",
    "web_search_call_item",
]

ContextSize = Literal["low", "medium", "high"]


@dataclass(frozen=True, slots=True)
class ContextBudget:
    results: int
    snippet_chars: int


CONTEXT_BUDGETS: dict[str, ContextBudget] = {
    "low": ContextBudget(results=3, snippet_chars=300),
    "medium": ContextBudget(results=5, snippet_chars=600),
    "high": ContextBudget(results=10, snippet_chars=1200),
}


@dataclass(frozen=True, slots=True)
class WebSearchToolOptions:
    """The parts of a request's ``web_search`` tool that shape a search."""

    search_context_size: ContextSize = "medium"
    user_location: dict[str, Any] | None = None
    allowed_domains: tuple[str, ...] = ()
    external_web_access: bool = True  # False: cache-only, never a live search

    @classmethod
    def from_tool(cls, tool: Mapping[str, Any]) -> WebSearchToolOptions:
        """Lenient like the rest of request parsing: an unknown context size is the default, ``medium``."""
        size = tool.get("search_context_size")
        location = tool.get("user_location")
        filters = tool.get("filters")
        domains = filters.get("allowed_domains") if isinstance(filters, Mapping) else None
        return cls(search_context_size=size if size in CONTEXT_BUDGETS else "medium",
                   user_location=dict(location) if isinstance(location, Mapping) else None,
                   allowed_domains=normalize_domains(domains if isinstance(domains, list) else None),
                   external_web_access=tool.get("external_web_access") is not False)


def provider_from_settings(settings: WebSearchSettings | None, *,
                           session: aiohttp.ClientSession | None = None) -> SearchProvider | None:
    """The configured provider, or None when the deployment has no web search. ``session`` is borrowed (the
    caller closes it); without one the provider opens its own and closes it in ``aclose()``."""
    if settings is None:
        return None
    if settings.provider == "searxng":
        return SearXNGProvider(settings, session)
    if settings.provider == "brave":
        return BraveProvider(settings, session)
    if settings.provider == "tavily":
        return TavilyProvider(settings, session)
    raise ValueError(f"unknown web search provider {settings.provider!r}")


def _shorten(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[:limit - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut).rstrip() + "…"


async def run_web_search(provider: SearchProvider, query: str, options: WebSearchToolOptions,
                         cache: SearchCache | None = None, tenant: str = "") -> list[SearchResult]:
    """One search for the model: at most the context budget's number of results, only from the allowed domains,
    snippets shortened to the budget. Raises :class:`WebSearchError` (an empty query is one too). With ``cache``,
    the provider's results are kept for the tenant's later cache-only searches."""
    text = " ".join(query.split()) if isinstance(query, str) else ""
    if not text:
        raise WebSearchError("the search query is empty")
    budget = CONTEXT_BUDGETS[options.search_context_size]
    found = await provider.search(text, max_results=budget.results, user_location=options.user_location,
                                  allowed_domains=list(options.allowed_domains) or None)
    if cache is not None:
        cache.put(tenant, text, found)
    return _within_budget(found, options)


def _within_budget(found: list[SearchResult], options: WebSearchToolOptions) -> list[SearchResult]:
    budget = CONTEXT_BUDGETS[options.search_context_size]
    return [SearchResult(url=result.url, title=result.title, snippet=_shorten(result.snippet, budget.snippet_chars))
            for result in keep(found, max_results=budget.results, domains=options.allowed_domains)]


CACHE_ONLY_NOTE = ("These results come from the web search cache: live internet access is off for this search "
                   "(external_web_access is false), so they are what was found when this query was last searched.")
CACHE_MISS = ("The web search cache holds no results for this query, and live internet access is off for this "
              "search (external_web_access is false): no search of the web was made.")


async def search_for_model(provider: SearchProvider, cache: SearchCache, tenant: str, query: str,
                           options: WebSearchToolOptions) -> tuple[list[SearchResult], str | None]:
    """The search a ``web_search`` call asks for: live (its results kept in ``cache``), or, with
    ``external_web_access: false``, the tenant's cached results for the query and never a live search. The second
    value is what the model must be told about where the results came from (None: a live search)."""
    if options.external_web_access:
        return await run_web_search(provider, query, options, cache, tenant), None
    text = " ".join(query.split()) if isinstance(query, str) else ""
    if not text:
        raise WebSearchError("the search query is empty")
    held = cache.get(tenant, text)
    results = _within_budget(held, options) if held else []
    return results, CACHE_ONLY_NOTE if results else CACHE_MISS
