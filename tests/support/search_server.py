"""A search backend on loopback that speaks SearXNG's, Brave's and Tavily's JSON formats.

Results are derived from the query, so tests can predict them: result ``i`` of query ``q`` is
``https://<DOMAINS[i % len(DOMAINS)]>/<slug of q>/<i>``, titled ``"<q> — result <i> ✓"``, with a long snippet that
carries HTML highlighting and entities (as real providers send). Like a real Tavily, the Tavily endpoint honours
``include_domains``; like a search engine that ignores operators, the SearXNG and Brave endpoints return every
domain whatever ``site:`` says, so tests see the bridge's own filtering at work.

``mode`` makes it fail: ``"500"``, ``"garbage"`` (200 with non-JSON), ``"shape"`` (JSON without results),
``"slow"`` (no answer until the server stops), ``"big"`` (a body of several MiB; ``"big-chunked"`` the same
without ``Content-Length``), ``"forbidden"`` (403, as
SearXNG answers when its JSON format is off). Every request is recorded (method, path, query, headers, body).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

DOMAINS = ("example.com", "docs.example.org", "news.example.net", "blog.example.com")
RESULTS = 20
SNIPPET_WORDS = 400


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any = None


def slug(query: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", query.lower()).strip("-") or "q"


def results_for(query: str, count: int = RESULTS, domains: tuple[str, ...] = DOMAINS) -> list[dict[str, str]]:
    words = " ".join(f"word{n}" for n in range(SNIPPET_WORDS))
    return [{"url": f"https://{domains[i % len(domains)]}/{slug(query)}/{i}",
             "title": f"{query} — result {i} ✓",
             "snippet": f"About <strong>{query}</strong> &amp; result {i}: {words}"}
            for i in range(count)]


@dataclass
class SearchServer:
    brave_key: str = "brave-test-key-7f3a"
    tavily_key: str = "tvly-test-key-91c2"
    mode: str = "ok"
    requests: list[RecordedRequest] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    _release: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> SearchServer:
        app = web.Application()
        app.router.add_get("/search", self._searxng)
        app.router.add_post("/search", self._tavily)
        app.router.add_get("/res/v1/web/search", self._brave)
        self._runner = web.AppRunner(app, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def release(self) -> None:
        """``mode="slow"``: the searches waiting, and any later one, are answered (with no results) now."""
        self._release.set()

    async def _record(self, request: web.Request) -> RecordedRequest:
        body = await request.read()
        recorded = RecordedRequest(request.method, request.path, dict(request.query), dict(request.headers),
                                   orjson.loads(body) if body else None)
        self.requests.append(recorded)
        return recorded

    async def _failure(self, request: web.Request) -> web.StreamResponse | None:
        if self.mode == "500":
            return web.Response(status=500, text="internal error: the index is rebuilding")
        if self.mode == "forbidden":
            return web.Response(status=403, text="Forbidden")
        if self.mode == "garbage":
            return web.Response(status=200, text="<html><body>not json</body></html>", content_type="text/html")
        if self.mode == "shape":
            return web.json_response({"unexpected": True})
        if self.mode == "big":
            return web.Response(status=200, body=b'{"results": ["' + b"x" * (5 * 1024 * 1024) + b'"]}',
                                content_type="application/json")
        if self.mode == "big-chunked":  # no Content-Length: the size shows only while reading
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            response.enable_chunked_encoding()
            await response.prepare(request)
            await response.write(b'{"results": ["')
            for _ in range(80):
                await response.write(b"x" * 65536)
            await response.write(b'"]}')
            await response.write_eof()
            return response
        if self.mode == "slow":
            await self._release.wait()
            return web.json_response({"results": []})
        return None

    async def _searxng(self, request: web.Request) -> web.StreamResponse:
        recorded = await self._record(request)
        if (failure := await self._failure(request)) is not None:
            return failure
        if recorded.query.get("format") != "json":
            return web.Response(status=403, text="Forbidden")
        query = recorded.query.get("q", "")
        return web.json_response({
            "query": query, "number_of_results": RESULTS,
            "results": [{"url": r["url"], "title": r["title"], "content": r["snippet"], "engine": "fake",
                         "score": 1.0} for r in results_for(query)],
            "answers": [], "suggestions": [], "unresponsive_engines": []})

    async def _brave(self, request: web.Request) -> web.StreamResponse:
        recorded = await self._record(request)
        if recorded.headers.get("X-Subscription-Token") != self.brave_key:
            return web.json_response({"type": "ErrorResponse", "error": {"code": "SUBSCRIPTION_TOKEN_INVALID",
                                                                          "status": 401}}, status=401)
        if (failure := await self._failure(request)) is not None:
            return failure
        query = recorded.query.get("q", "")
        count = int(recorded.query.get("count", "20"))
        return web.json_response({
            "type": "search", "query": {"original": query},
            "web": {"type": "search", "results": [
                {"title": r["title"], "url": r["url"], "description": r["snippet"], "type": "search_result"}
                for r in results_for(query, count)]}})

    async def _tavily(self, request: web.Request) -> web.StreamResponse:
        recorded = await self._record(request)
        if recorded.headers.get("Authorization") != f"Bearer {self.tavily_key}":
            return web.json_response({"detail": {"error": "Unauthorized: missing or invalid API key."}}, status=401)
        if (failure := await self._failure(request)) is not None:
            return failure
        body = recorded.body or {}
        query = body.get("query", "")
        domains = tuple(body.get("include_domains") or ()) or DOMAINS
        return web.json_response({
            "query": query, "response_time": 0.1,
            "results": [{"title": r["title"], "url": r["url"], "content": r["snippet"], "score": 0.9}
                        for r in results_for(query, int(body.get("max_results", 5)), domains)]})
