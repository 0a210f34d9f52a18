"""The sidecar's own aiohttp client for the Chat Completions upstream (the HTTP door, background runs, WebSocket
turns, compaction, token counting): the concrete :class:`~responses_bridge.run.upstream.UpstreamClient`.

In Envoy mode Envoy makes the ext_proc door's calls; the sidecar's own calls go to ``upstream_via`` when it is set
(Envoy's passthrough ``/v1/chat/completions`` route, so Envoy's retries, TLS and stats apply to them too), else
straight to the upstream. Failures map the same way everywhere: a refused
connection is a 502, silence longer than the idle timeout a 504, a body cut mid-way a 502, each as an
:class:`APIError` the run turns into an error reply or a ``response.failed`` event.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, AbstractContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass
from time import perf_counter
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from ..config.settings import Settings
from ..config.upstreams import SINGLE_UPSTREAM, Router
from ..engine.responses.native_relay import NATIVE_PATH
from ..engine.wire import UpstreamRequest
from ..net.bounded_body import BodyTooLarge, read_bounded
from ..net.errors import connection_reason
from ..observability import metrics, tracing
from ..observability.logs import noted_mode
from ..protocol.errors import APIError
from ..replicas import ENDPOINT_HEADER, Picked
from ..run.upstream import UpstreamFailure, UpstreamResponse
from ..services.tenancy.identity import sidecar_headers

ROUTE_HEADER = "x-responses-bridge-upstream"
"""Names the upstream on the sidecar's own calls through Envoy's listener (``upstream_via``): with several upstreams
``envoy-config`` routes each value to that upstream's cluster (the internal listener); with one (``default``) it
sends the sidecar's model list and embeddings calls to the upstream, where a client's go to the sidecar (see
envoy_config/routes.py). Envoy removes it before the upstream."""


@dataclass(slots=True)
class AiohttpUpstreamAnswer:
    status: int
    content_type: str | None
    _response: aiohttp.ClientResponse
    _upstream: metrics.Upstream
    _idle: float | None = None  # the longest silence allowed between two chunks (None: no limit)

    @property
    def headers(self) -> Mapping[str, str]:
        """The answer's headers (through Envoy, which replica answered: replicated_client.py)."""
        return self._response.headers

    async def chunks(self) -> AsyncIterator[bytes]:
        """Whatever bytes arrived, as they arrive: no re-chunking, so a token reaches the client at once.

        The idle limit is kept by one :class:`_IdleWatch` timer per answer, which only looks at the clock when it
        fires, instead of aiohttp's ``sock_read`` timer, which is cancelled and made anew on every read (a third of
        the loop's own work per chunk of a paced stream). It counts only the time spent waiting for the upstream:
        a client slow to take the previous chunk is no upstream silence."""
        content = self._response.content
        watch = _IdleWatch(content, self._idle) if self._idle else None
        try:
            if watch is None:
                async for chunk in content.iter_any():
                    yield chunk
                return
            loop = watch.loop
            while True:
                watch.since = loop.time()
                chunk = await content.readany()
                watch.since = None
                if not chunk:
                    return
                yield chunk
        except (TimeoutError, aiohttp.ServerTimeoutError):
            self._upstream.failed("upstream_timeout")
            raise UpstreamFailure(APIError(504, "The upstream model server stopped sending data (idle timeout).",
                                           type="server_error", code="upstream_timeout")) from None
        except aiohttp.ClientError as exc:
            self._upstream.failed("upstream_connection_error")
            raise UpstreamFailure(APIError(502, f"The connection to the upstream model server broke: {exc}",
                                           type="server_error", code="upstream_connection_error")) from None
        finally:
            if watch is not None:
                watch.stop()


class _IdleWatch:
    """Fails a body read that has waited ``idle`` seconds, the way aiohttp's own read timeout does (the reader
    gets a :class:`aiohttp.ServerTimeoutError`, the connection is not reused). The reading side only stamps
    :attr:`since` around each wait; the timer re-arms itself for the true deadline when it fires early, so a
    stream costs one timer per ``idle`` seconds rather than one per chunk."""

    __slots__ = ("_content", "_handle", "_idle", "loop", "since")

    def __init__(self, content: aiohttp.StreamReader, idle: float) -> None:
        self._content = content
        self._idle = idle
        self.loop = asyncio.get_running_loop()
        self.since: float | None = None  # when the pending read began; None: not waiting for the upstream
        self._handle: asyncio.TimerHandle | None = self.loop.call_later(idle, self._check)

    def _check(self) -> None:
        now = self.loop.time()
        since = self.since
        due = now + self._idle if since is None else since + self._idle
        if due > now:
            self._handle = self.loop.call_at(due, self._check)
            return
        self._handle = None
        self._content.set_exception(aiohttp.ServerTimeoutError("Timeout on reading data from socket"))

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class AiohttpUpstreamClient:
    """One connection pool per client; :meth:`start` must be awaited before the first call."""

    replicated = False  # one server: nothing is picked (replicated_client.py wraps an upstream with replicas)

    def __init__(self, settings: Settings, base: str | None = None, headers: Mapping[str, str] | None = None, *,
                 name: str = SINGLE_UPSTREAM) -> None:
        self._base = (base or settings.upstream_via or settings.upstream).rstrip("/")
        self.name = name  # the upstream's configured name: its metrics' label, wherever the calls go
        self._headers = dict(headers or {})  # sent on every call (the route header through Envoy)
        self.via = bool(settings.upstream_via) and self._base == (settings.upstream_via or "").rstrip("/")
        if self.via:  # calls through Envoy
            self._headers.update(sidecar_headers(settings))  # keys mode: the passthrough routes let them through
            self._headers.setdefault(ROUTE_HEADER, name)  # to the upstream, never back to the sidecar
        self._timeout = aiohttp.ClientTimeout(
            total=settings.upstream_timeout,
            connect=settings.upstream_connect_timeout,
            sock_read=settings.upstream_idle_timeout,
        )
        self._idle = settings.upstream_idle_timeout or None
        self._session: aiohttp.ClientSession | None = None
        self.max_answer_bytes = settings.max_event_bytes  # a whole JSON answer read by read_answer()
        self._max_connections = settings.upstream_max_connections
        self._spans: dict[tuple[str, str], tuple[str, dict[str, str]]] = {}  # see _span_of

    def _span_of(self, method: str, path: str) -> tuple[str, dict[str, str]]:
        """The name and attributes of a call's span: made once per method and relative path (a few per process),
        not on every call, since every call asks for them whether tracing is on or not."""
        found = self._spans.get((method, path))
        if found is None:
            found = (f"upstream {method} {path if '://' not in path else urlsplit(path).path}",
                     {"server.address": urlsplit(self._base).netloc.rpartition("@")[2],  # no user info
                      "responses_bridge.upstream": self.name, "http.request.method": method})
            if "://" not in path and len(self._spans) < 64:  # an absolute URL may be any: not kept
                self._spans[(method, path)] = found
        return found

    def _metrics(self, path: str) -> metrics.Upstream:
        """This upstream's series for a call to ``path``: in the mode the request noted (``passthrough`` for the
        Chat Completions route), else by the path (``responses``: a native backend's own)."""
        mode = noted_mode() or ("native" if path.startswith(NATIVE_PATH) else "translate")
        return metrics.upstream(self.name, mode)

    async def start(self) -> None:
        # bounded as the bridge's upstream places are (run/upstream_gate.py): never more sockets than those
        connector = aiohttp.TCPConnector(limit=self._max_connections, ttl_dns_cache=60, enable_cleanup_closed=True)
        # auto_decompress off and no Accept-Encoding: bytes are forwarded as they come, never re-inflated
        self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout, auto_decompress=False,
                                              skip_auto_headers=("Accept-Encoding", "User-Agent"))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def chat(self, call: UpstreamRequest, authorization: str | None, replica: Picked | None = None) -> _Chat:
        """``replica``: the picked replica of a replicated upstream (replicas/), called at its URL, or through
        Envoy naming it in the endpoint header."""
        return _Chat(self, call, authorization, replica)

    async def read_answer(self, response: UpstreamResponse) -> bytes:
        """A whole upstream answer (compaction's summary, a tokenizer's count, the model list), at most
        ``RESPONSES_BRIDGE_MAX_EVENT_BYTES``: an upstream cannot make the sidecar hold more than that."""
        assert isinstance(response, aiohttp.ClientResponse), "read_answer reads this client's own answers"
        try:
            return await read_bounded(response, self.max_answer_bytes)
        except BodyTooLarge as exc:
            raise UpstreamFailure(_too_large(exc.limit)) from None

    @asynccontextmanager
    async def post_json(self, path: str, body: bytes, authorization: str | None, *, timeout: float | None = None,
                        replica: Picked | None = None) -> AsyncIterator[aiohttp.ClientResponse]:
        """A JSON POST relative to the base URL (an absolute ``http(s)://`` path is used as is)."""
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if authorization:
            headers["Authorization"] = authorization
        extra: dict[str, object] = {"timeout": aiohttp.ClientTimeout(total=timeout)} if timeout else {}
        async with self._request("POST", path, replica, headers=headers, data=body, **extra) as response:
            yield response

    @asynccontextmanager
    async def get(self, path: str, authorization: str | None, *,
                  replica: Picked | None = None) -> AsyncIterator[aiohttp.ClientResponse]:
        headers = {"Authorization": authorization} if authorization else {}
        async with self._request("GET", path, replica, headers=headers) as response:
            yield response

    def _request(self, method: str, path: str, replica: Picked | None = None, **kwargs: object) -> _Request:
        return _Request(self, method, path, kwargs, replica)


class _Chat:
    """One chat call of an :class:`AiohttpUpstreamClient`: its ``_request`` (the span, the metrics, the failures
    mapped) entered with the call's headers, the answer wrapped. A class rather than a second async generator
    context manager around ``_request``: every turn of every run makes one, and each generator's ``async with``
    costs the generator, its two resumptions and the StopAsyncIteration that ends it."""

    __slots__ = ("_authorization", "_call", "_client", "_replica", "_request")

    def __init__(self, client: AiohttpUpstreamClient, call: UpstreamRequest, authorization: str | None,
                 replica: Picked | None = None) -> None:
        self._client = client
        self._call = call
        self._authorization = authorization
        self._replica = replica
        self._request: AbstractAsyncContextManager[aiohttp.ClientResponse] | None = None

    async def __aenter__(self) -> AiohttpUpstreamAnswer:
        client, call = self._client, self._call
        headers = {"Content-Type": "application/json",
                   "Accept": "text/event-stream" if call.stream else "application/json"}
        if self._authorization:
            headers["Authorization"] = self._authorization
        request = self._request = client._request("POST", call.path, self._replica, headers=headers, data=call.body)
        response = await request.__aenter__()
        try:
            if client._idle is not None and response.connection is not None:
                # aiohttp's sock_read kept the wait for the headers; the body's silences are the answer's own
                # watch (AiohttpUpstreamAnswer.chunks). The next request on this connection sets it again.
                response.connection.protocol.read_timeout = None  # type: ignore[union-attr]
            return AiohttpUpstreamAnswer(response.status, response.headers.get("Content-Type"), response,
                                         client._metrics(call.path), client._idle)
        except BaseException as error:  # as a failure inside the block would: _request's exit sees it (and maps it)
            self._request = None
            await request.__aexit__(type(error), error, error.__traceback__)
            raise

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> bool | None:
        request, self._request = self._request, None
        return await request.__aexit__(kind, error, trace) if request is not None else None


_NO_SPAN: AbstractContextManager[Any] = nullcontext()


class _Request:
    """One call of an :class:`AiohttpUpstreamClient`: its span, its metrics (the time to its headers, a 5xx), and
    its failures - entering or inside the block - mapped to the :class:`UpstreamFailure` a run reports
    (``upstream_timeout``, ``upstream_unreachable``, ``upstream_connection_error``); the answer released on exit. A
    class rather than an async generator context manager: every model turn makes one, and a generator's
    ``async with`` costs the generator (registered with the loop's async generators), its two resumptions and the
    StopAsyncIteration that ends it."""

    __slots__ = ("_base", "_client", "_kwargs", "_method", "_path", "_replica", "_response", "_span", "_upstream")

    def __init__(self, client: AiohttpUpstreamClient, method: str, path: str, kwargs: dict[str, object],
                 replica: Picked | None = None) -> None:
        self._client = client
        self._method = method
        self._path = path
        self._kwargs = kwargs
        self._replica = replica
        self._base = client._base
        self._response: AbstractAsyncContextManager[aiohttp.ClientResponse] | None = None
        self._span: AbstractContextManager[Any] = _NO_SPAN
        self._upstream: metrics.Upstream | None = None

    async def __aenter__(self) -> aiohttp.ClientResponse:
        client, method, path, kwargs = self._client, self._method, self._path, self._kwargs
        assert client._session is not None, "AiohttpUpstreamClient.start() was not awaited"
        replica = self._replica
        if replica is not None and not client.via:  # a replica's own URL; through Envoy, its endpoint header
            self._base = replica.url
        url = path if path.startswith(("http://", "https://")) else f"{self._base}/{path}"
        if client._headers:
            kwargs["headers"] = {**client._headers, **kwargs.get("headers", {})}  # type: ignore[dict-item]
        if replica is not None and client.via:
            kwargs["headers"] = {**kwargs.get("headers", {}),  # type: ignore[dict-item]
                                 ENDPOINT_HEADER: replica.listed or replica.endpoint}
        upstream = self._upstream = client._metrics(path)
        span = None
        if tracing.recording():  # no span made, entered or left otherwise (tracing.span's own test, asked first)
            name, attributes = client._span_of(method, path)
            scope = self._span = tracing.span(name, attributes, kind=tracing.SpanKind.CLIENT)
            span = scope.__enter__()
        try:
            if tracing.ENABLED:  # the upstream's own spans join this one
                headers = dict(kwargs.get("headers") or {})  # type: ignore[call-overload]
                tracing.inject(headers)
                kwargs["headers"] = headers
            started = perf_counter()
            request = client._session.request(method, url, **kwargs)  # type: ignore[arg-type]
            response = await request.__aenter__()
            self._response = request
            upstream.answered(perf_counter() - started)
            if response.status >= 500:
                upstream.failed("http_5xx")
            if span is not None:
                span.set_attribute("http.response.status_code", response.status)
            return response
        except BaseException as error:
            await self.__aexit__(type(error), error, error.__traceback__)
            raise

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> bool:
        request, self._response = self._response, None
        leaving: BaseException | None = None  # what leaves the block in place of its own exception, if anything
        try:
            if request is not None:
                await request.__aexit__(kind, error, trace)
        except BaseException as failed:  # noqa: BLE001 - releasing the answer failed: raised below in its place
            leaving = failed
        failure = self._failure(leaving if leaving is not None else error)
        if leaving is None and failure is None:
            return self._span is not _NO_SPAN and bool(self._span.__exit__(kind, error, trace))
        try:  # raised here, so that the span is closed with it as the ``with`` around the call would close it
            if failure is not None:
                raise failure from None
            assert leaving is not None
            raise leaving
        except BaseException as raised:
            if not self._span.__exit__(type(raised), raised, raised.__traceback__):
                raise
            return True

    def _failure(self, error: BaseException | None) -> UpstreamFailure | None:
        """``error`` as the failure a run reports (counted), or None when it passes as it is."""
        if error is None or isinstance(error, UpstreamFailure):
            return None
        upstream, base = self._upstream, self._base
        assert upstream is not None
        if isinstance(error, (TimeoutError, aiohttp.ServerTimeoutError)):
            upstream.failed("upstream_timeout")
            return UpstreamFailure(APIError(504, f"The upstream model server at {base} did not answer in time.",
                                            type="server_error", code="upstream_timeout"))
        if isinstance(error, aiohttp.ClientConnectorError):
            upstream.failed("upstream_unreachable")
            return UpstreamFailure(APIError(502, f"Cannot connect to the upstream model server at {base}: "
                                            f"{connection_reason(error)}", type="server_error",
                                            code="upstream_unreachable"))
        if isinstance(error, aiohttp.ClientError):
            upstream.failed("upstream_connection_error")
            return UpstreamFailure(APIError(502, f"The upstream model server failed: {connection_reason(error)}",
                                            type="server_error", code="upstream_connection_error"))
        return None


def _too_large(limit: int) -> APIError:
    return APIError(502, f"The upstream model server sent an answer larger than {limit} bytes, the limit set by "
                    "RESPONSES_BRIDGE_MAX_EVENT_BYTES.", type="server_error", code="upstream_too_large")


def build_clients(settings: Settings, router: Router) -> dict[str, AiohttpUpstreamClient]:
    """One client (and connection pool) per configured upstream, by name. With ``upstream_via`` every call goes
    to Envoy's listener, naming its upstream in :data:`ROUTE_HEADER`; else straight to the upstream's URL. The
    single ``--upstream`` case is one client, as it always was."""
    if router.single:
        return {name: AiohttpUpstreamClient(settings, name=name) for name in router.upstreams}
    if settings.upstream_via:
        return {name: AiohttpUpstreamClient(settings, settings.upstream_via, {ROUTE_HEADER: name}, name=name)
                for name in router.upstreams}
    return {name: AiohttpUpstreamClient(settings, spec.url, name=name) for name, spec in router.upstreams.items()}
