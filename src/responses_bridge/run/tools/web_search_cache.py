"""The web search results the bridge already holds, for a ``web_search`` tool with ``external_web_access: false``.

OpenAI's cache-only mode (Codex's "cached" web search sends it) answers from content the service fetched before
and never goes out to the web. Here that is the results of the live searches this process made: every live search
stores what its provider returned under the tenant and the query, and a cache-only search reads them back (with
the request's domains and context budget applied again) or finds none, and says so to the model. Nothing is ever
fetched for it, so a request that must not reach the internet does not.

Per tenant: one tenant's cache-only search never sees what another searched for, and one tenant cannot push the
others' entries out (each holds at most :data:`PER_TENANT` entries, the process :data:`MAX_ENTRIES`; the oldest
used goes first). Entries older than :data:`TTL_SECONDS` are not served: a cache is no index of the web.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from .web_search_base import SearchResult

MAX_ENTRIES = 1024
PER_TENANT = 128
TTL_SECONDS = 3600.0
MAX_RESULTS = 10  # the largest context budget's ("high")
MAX_SNIPPET = 1200


def cache_key(query: str) -> str:
    """Queries that differ only in case and spacing are one query."""
    return " ".join(query.split()).casefold()[:1000]


class SearchCache:
    """A bounded map (tenant, query) → the provider's results and when they were fetched."""

    def __init__(self, *, max_entries: int = MAX_ENTRIES, per_tenant: int = PER_TENANT,
                 ttl: float = TTL_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self._entries: OrderedDict[tuple[str, str], tuple[float, tuple[SearchResult, ...]]] = OrderedDict()
        self._counts: dict[str, int] = {}
        self._max, self._per_tenant, self._ttl, self._clock = max_entries, per_tenant, ttl, clock

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, tenant: str, query: str, results: list[SearchResult]) -> None:
        """Keep a live search's results (at most the largest budget's, snippets cut to its length)."""
        key = (tenant, cache_key(query))
        if not key[1]:
            return
        kept = tuple(SearchResult(url=r.url, title=r.title, snippet=r.snippet[:MAX_SNIPPET])
                     for r in results[:MAX_RESULTS])
        if key in self._entries:
            del self._entries[key]
        else:
            self._counts[tenant] = self._counts.get(tenant, 0) + 1
        self._entries[key] = (self._clock(), kept)
        if self._counts[tenant] > self._per_tenant:
            self._evict(next(k for k in self._entries if k[0] == tenant))
        while len(self._entries) > self._max:
            self._evict(next(iter(self._entries)))

    def get(self, tenant: str, query: str) -> list[SearchResult] | None:
        """The results held for this tenant's query, or None (never searched, or too long ago)."""
        key = (tenant, cache_key(query))
        found = self._entries.get(key)
        if found is None:
            return None
        fetched, results = found
        if self._clock() - fetched > self._ttl:
            self._evict(key)
            return None
        self._entries.move_to_end(key)
        return list(results)

    def _evict(self, key: tuple[str, str]) -> None:
        del self._entries[key]
        left = self._counts[key[0]] - 1
        if left:
            self._counts[key[0]] = left
        else:
            del self._counts[key[0]]
