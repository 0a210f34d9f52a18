"""One operation on one MCP server: connect, handshake, list the tools or call one, close.

The only module that loads the MCP client library and its HTTP stack (about 50 MB and most of a second), so it is
imported on the first MCP request rather than when the bridge starts.

Transport: Streamable HTTP, the current MCP transport, unless the URL's path ends in ``/sse`` (the conventional
endpoint of the older HTTP+SSE transport), which goes to SSE directly. When a Streamable HTTP handshake is answered
but not as Streamable HTTP (an HTTP 4xx such as 404/405, or a body that is not MCP), the SSE transport is tried once
on the same URL, as the MCP specification's backwards-compatibility note advises. Connection failures and timeouts
are not retried over SSE: a server that cannot be reached over one cannot be reached over the other.

Every operation opens its own connection and closes it: a tool loop calls a server a handful of times per
response, and no connection outlives the request that carries its credentials.

Sockets come from :class:`GuardedNetworkBackend`, which applies the host policy to the address it connects to
(see ``host_policy``); no proxy from the environment is used, so that address is the server's own.
"""

from __future__ import annotations

import functools
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager, nullcontext
from typing import Any, TypeVar
from urllib.parse import urlsplit

import anyio
import httpcore2
import httpx2
import orjson
from httpcore2._backends.auto import AutoBackend
from mcp.client import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import (
    AudioContent,
    CallToolResult,
    EmbeddedResource,
    ImageContent,
    Implementation,
    ResourceLink,
    TextContent,
    TextResourceContents,
)
from pydantic import ValidationError

from ...net.host_policy import HostNotAllowed, HostPolicy, HostUnresolved, check_host
from .mcp_config import MCPLimits, MCPServer, MCPToolInfo
from .mcp_model import BAD_GATEWAY, EMPTY_SCHEMA, GATEWAY_TIMEOUT, MCPToolError, first_line, redact

T = TypeVar("T")

_CLIENT_INFO = Implementation(name="responses-bridge", version="0.1.0")
_LIST_PAGE_CAP = 100  # a server whose cursor never ends cannot keep a listing going forever


async def list_server_tools(server: MCPServer, limits: MCPLimits, policy: HostPolicy) -> list[MCPToolInfo]:
    """Every tool the server lists (all pages), unfiltered. Raises :class:`MCPToolError`."""

    async def list_all(client: Client) -> list[MCPToolInfo]:
        tools: list[MCPToolInfo] = []
        cursor: str | None = None
        for _ in range(_LIST_PAGE_CAP):
            page = await client.list_tools(cursor=cursor, meta=_meta(server))
            for tool in page.tools:
                annotations = tool.annotations.model_dump(by_alias=True, exclude_none=True, mode="json") \
                    if tool.annotations is not None else None
                tools.append(MCPToolInfo(name=tool.name, description=tool.description,
                                         input_schema=tool.input_schema or EMPTY_SCHEMA, annotations=annotations))
            cursor = page.next_cursor
            if not cursor:
                break
        return tools

    return await _operate(server, limits, policy, "list tools", list_all)


async def call_server_tool(server: MCPServer, limits: MCPLimits, policy: HostPolicy, name: str,
                           arguments: Mapping[str, Any]) -> tuple[str, bool]:
    """The call's output rendered as text (uncapped), and whether the tool reported an error. Raises
    :class:`MCPToolError` when the server could not be used or did not answer within the call timeout."""

    async def call(client: Client) -> CallToolResult:
        with anyio.move_on_after(limits.call_timeout):
            return await client.call_tool(name, dict(arguments), meta=_meta(server))
        raise _CallTimedOut(limits.call_timeout)

    result = await _operate(server, limits, policy, f"call tool '{name}'", call)
    return render_content(result), result.is_error


def _meta(server: MCPServer) -> Any:
    """The ``_meta`` of each request's params: an agent tool's ``request_metadata`` (None: no ``_meta``)."""
    return dict(server.meta) if server.meta else None


def render_content(result: CallToolResult) -> str:
    """The text a model sees: text blocks joined by newlines; other blocks named briefly; structured content as
    JSON when there is no text at all."""
    parts: list[str] = []
    for block in result.content:
        if isinstance(block, TextContent):
            parts.append(block.text)
        elif isinstance(block, (ImageContent, AudioContent)):
            parts.append(f"[{block.type} content, {block.mime_type}]")
        elif isinstance(block, ResourceLink):
            parts.append(f"[resource link: {block.uri}]")
        elif isinstance(block, EmbeddedResource):
            resource = block.resource
            parts.append(resource.text if isinstance(resource, TextResourceContents)
                         else f"[resource {resource.uri}, {resource.mime_type or 'binary'}]")
        else:
            parts.append(f"[{getattr(block, 'type', 'unknown')} content]")
    if not parts and result.structured_content is not None:
        return orjson.dumps(result.structured_content).decode()
    return "\n".join(parts)


async def _operate(server: MCPServer, limits: MCPLimits, policy: HostPolicy, what: str,
                   operation: Callable[[Client], Awaitable[T]]) -> T:
    """Run ``operation`` on a fresh connection within the total timeout; any failure is an MCPToolError."""
    _quiet_library_logs()
    use_sse = urlsplit(server.server_url).path.rstrip("/").endswith("/sse")
    try:
        with anyio.fail_after(limits.total_timeout):
            if use_sse:
                return await _attempt(server, limits, policy, operation, sse=True)
            try:
                return await _attempt(server, limits, policy, operation, sse=False)
            except _NotStreamable as mismatch:
                try:
                    return await _attempt(server, limits, policy, operation, sse=True)
                except MCPToolError as over_sse:
                    if over_sse.connected:  # it is an SSE server: its own failure is the one to report
                        raise
                    raise MCPToolError(f"{mismatch.message} (over Streamable HTTP; over SSE: {over_sse})") \
                        from None
    except TimeoutError:
        raise MCPToolError(
            f"MCP server '{server.server_label}' did not {what} within {limits.total_timeout:g} s.",
            status=GATEWAY_TIMEOUT) from None


async def _attempt(server: MCPServer, limits: MCPLimits, policy: HostPolicy,
                   operation: Callable[[Client], Awaitable[T]], *, sse: bool) -> T:
    """One connection over one transport. A transport error anywhere under the MCP client (which some of its
    background tasks only log) ends the attempt at once, rather than leaving a request waiting for an answer
    that will not come."""
    watch = _Watch()
    try:
        with anyio.CancelScope() as scope:
            watch.scope = scope
            async with AsyncExitStack() as stack:
                client = Client(_transport(server, limits, policy, watch, sse), mode="auto", cache=None,
                                client_info=_CLIENT_INFO)
                try:
                    await stack.enter_async_context(client)
                except Exception as handshake:
                    refused = _leaf(handshake)
                    if not sse and watch.failure is None and isinstance(refused, MCPError):
                        raise _NotStreamable(redact(
                            f"MCP server '{server.server_label}' did not answer as an MCP server: "
                            f"{first_line(refused.error.message)}", server)) from None
                    raise
                watch.connected = True
                result = await operation(client)
                watch.done = True
                return result
    except (_NotStreamable, MCPToolError):
        raise
    except Exception as error:  # noqa: BLE001 -- every failure of a remote server, whatever the library raised
        raise _failure(watch.failure or error, server, connected=watch.connected) from None
    if watch.failure is not None:
        raise _failure(watch.failure, server, connected=watch.connected)
    raise MCPToolError(f"MCP server '{server.server_label}' closed the connection without an answer.")


PARSE_ERROR = -32700
"""JSON-RPC's code for an answer that could not be read: what an answer that is not MCP is, as a protocol error."""


def _failure(error: BaseException, server: MCPServer, *, connected: bool) -> MCPToolError:
    """The :class:`MCPToolError` of a failed attempt: its sentence (:func:`_describe`) and its shape for the
    item (:func:`_codes`)."""
    status, protocol_code = _codes(_leaf(error))
    return MCPToolError(redact(_describe(error, server), server), connected=connected, status=status,
                        protocol_code=protocol_code)


def _codes(leaf: BaseException) -> tuple[int, int | None]:
    """(HTTP status, JSON-RPC code or None) of a failure: the status the server answered; 504 for a server too
    slow, 502 for one unreachable or that broke the connection or sent too much; a JSON-RPC error, or an answer
    that is not MCP (-32700, JSON-RPC's parse error), is the protocol's."""
    if isinstance(leaf, httpx2.HTTPStatusError):
        return leaf.response.status_code, None
    if isinstance(leaf, MCPError):
        return BAD_GATEWAY, leaf.error.code
    if isinstance(leaf, _CallTimedOut | httpx2.ConnectTimeout | httpcore2.ConnectTimeout | httpx2.TimeoutException
                  | httpcore2.TimeoutException | TimeoutError):
        return GATEWAY_TIMEOUT, None
    if isinstance(leaf, httpx2.SSEError) and "exceeded" in str(leaf):
        return BAD_GATEWAY, None  # too large to read: the gateway's failure, as any answer over the cap
    if isinstance(leaf, ValidationError | ValueError | httpx2.SSEError | orjson.JSONDecodeError):
        return BAD_GATEWAY, PARSE_ERROR
    return BAD_GATEWAY, None


def _transport(server: MCPServer, limits: MCPLimits, policy: HostPolicy, watch: _Watch,
               sse: bool) -> AbstractAsyncContextManager[Any]:
    def http_client(headers: dict[str, str] | None = None, timeout: httpx2.Timeout | None = None,
                    auth: httpx2.Auth | None = None) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(
            headers=headers,
            # Reads may wait as long as a whole operation: the call timeout is enforced per call (so an SSE
            # stream's silence between calls is not an error), the total one around everything.
            timeout=httpx2.Timeout(limits.total_timeout, connect=limits.connect_timeout),
            transport=_WatchedTransport(guarded_transport(policy), watch, limits.max_message_bytes),
            trust_env=False,  # no proxy from the environment: the address connected to is the one checked
            follow_redirects=False,
        )

    headers = dict(server.headers)
    if sse:
        return sse_client(server.server_url, headers=headers, timeout=limits.total_timeout,
                          sse_read_timeout=limits.total_timeout, httpx_client_factory=http_client)
    return _streamable(server.server_url, http_client(headers), limits.max_message_bytes)


def _streamable(url: str, client: httpx2.AsyncClient, max_message_bytes: int) -> AbstractAsyncContextManager[Any]:
    """The Streamable HTTP transport, owning ``client`` (the MCP library leaves a client it was given open)."""

    @asynccontextmanager
    async def transport() -> AsyncIterator[Any]:
        async with client, streamable_http_client(url, http_client=client,
                                                  max_sse_event_size=max_message_bytes) as streams:
            yield streams

    return transport()


class GuardedNetworkBackend(httpcore2.AsyncNetworkBackend):
    """The socket layer of the MCP client's HTTP connections: resolve, check, connect to the checked address.

    httpcore hands ``connect_tcp`` the URL's host; this backend never passes that name on, only an address that
    passed :class:`HostPolicy`, so the resolver cannot be asked twice and answer differently. TLS still names the
    original host (httpcore takes the server name for SNI and certificate checks from the request, not from the
    socket), and the ``Host`` header is built from the URL.
    """

    def __init__(self, policy: HostPolicy) -> None:
        self._policy = policy
        self._inner = AutoBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> httpcore2.AsyncNetworkStream:
        with anyio.fail_after(timeout) if timeout is not None else nullcontext():
            addresses = await check_host(self._policy, host, port)
        last_error: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(str(address), port, timeout=timeout,
                                                      local_address=local_address, socket_options=socket_options)
            except (httpcore2.ConnectError, httpcore2.ConnectTimeout) as error:
                last_error = error
        assert last_error is not None  # check_host never returns an empty list
        raise last_error

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None) -> httpcore2.AsyncNetworkStream:
        raise HostNotAllowed("MCP servers are reached over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """The process's one TLS client context for MCP servers and OAuth token endpoints: making one loads the
    system's CA certificates (~20 ms of CPU), which each MCP session paid twice before, and a context holds nothing
    of a connection's, so every pool shares it (the certificates are read once, at the first MCP request)."""
    return httpx2.create_ssl_context(trust_env=False)


def guarded_transport(policy: HostPolicy) -> httpx2.AsyncHTTPTransport:
    """httpx's own transport over a connection pool whose sockets come from :class:`GuardedNetworkBackend`.

    httpx does not take a network backend as an argument, so its pool is replaced by one built with the same
    TLS settings plus the backend; the rest of the transport (request and response mapping) stays httpx's.
    """
    transport = httpx2.AsyncHTTPTransport(verify=_tls_context(), trust_env=False)
    transport._pool = httpcore2.AsyncConnectionPool(
        ssl_context=_tls_context(),
        max_connections=8,
        max_keepalive_connections=4,
        network_backend=GuardedNetworkBackend(policy),
    )
    return transport


class _Watch:
    """What one attempt's HTTP traffic saw: the first transport failure, and the scope to end the attempt with."""

    def __init__(self) -> None:
        self.scope: anyio.CancelScope | None = None
        self.failure: BaseException | None = None
        self.connected = False
        self.done = False

    def failed(self, error: BaseException) -> None:
        if self.done or self.failure is not None:
            return  # a failure after the answer (closing the session) does not undo it
        self.failure = error
        if self.scope is not None:
            self.scope.cancel()


class _WatchedStream(httpx2.AsyncByteStream):
    """An answer's body as it arrives. ``cap``: the bytes a whole body may have (a JSON answer is read whole by
    the MCP client, so it is bounded here while it is read, and the connection dropped at the cap); None for an
    event stream, whose events the client reads one at a time under its own per-event bound."""

    def __init__(self, inner: httpx2.AsyncByteStream, watch: _Watch, cap: int | None) -> None:
        self._inner = inner
        self._watch = watch
        self._cap = cap

    async def __aiter__(self) -> AsyncIterator[bytes]:
        read, cap = 0, self._cap
        try:
            async for chunk in self._inner:
                if cap is not None:
                    read += len(chunk)
                    if read > cap:
                        raise _AnswerTooLarge(cap)
                yield chunk
        except Exception as error:
            self._watch.failed(error)
            raise

    async def aclose(self) -> None:
        await self._inner.aclose()


class _WatchedTransport(httpx2.AsyncBaseTransport):
    """Reports every transport failure (connect, send, read, refused host) to the attempt's :class:`_Watch`, and
    bounds every answer that is not an event stream to ``max_body_bytes`` while it is read."""

    def __init__(self, inner: httpx2.AsyncBaseTransport, watch: _Watch, max_body_bytes: int) -> None:
        self._inner = inner
        self._watch = watch
        self._max_body_bytes = max_body_bytes

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        try:
            response = await self._inner.handle_async_request(request)
        except Exception as error:
            self._watch.failed(error)
            raise
        events = "text/event-stream" in response.headers.get("content-type", "")
        stream = _WatchedStream(response.stream, self._watch,  # type: ignore[arg-type]
                                None if events else self._max_body_bytes)
        return httpx2.Response(response.status_code, headers=response.headers, stream=stream,
                               extensions=response.extensions)

    async def aclose(self) -> None:
        await self._inner.aclose()


class _NotStreamable(Exception):
    """The server answered the Streamable HTTP handshake, but not as a Streamable HTTP server."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _AnswerTooLarge(Exception):
    def __init__(self, cap: int) -> None:
        super().__init__(f"an answer over {cap} bytes")
        self.cap = cap


class _CallTimedOut(Exception):
    def __init__(self, seconds: float) -> None:
        super().__init__(f"no answer within {seconds:g} s")
        self.seconds = seconds


def _describe(error: BaseException, server: MCPServer) -> str:
    """A sentence for the failed item. Only the server's label and the kind of failure: never the URL (it may hold
    a token) or anything the request sent."""
    leaf = _leaf(error)
    label = f"MCP server '{server.server_label}'"
    if isinstance(leaf, (HostNotAllowed, HostUnresolved)):
        return str(leaf)
    if isinstance(leaf, _AnswerTooLarge):
        return f"{label} sent an answer larger than {leaf.cap} bytes; it was not read."
    if isinstance(leaf, _CallTimedOut):
        return f"{label} did not answer the tool call within {leaf.seconds:g} s."
    if isinstance(leaf, (httpx2.ConnectTimeout, httpcore2.ConnectTimeout)):
        return f"{label} could not be reached: connecting timed out."
    if isinstance(leaf, (httpx2.TimeoutException, httpcore2.TimeoutException, TimeoutError)):
        return f"{label} stopped answering (read timeout)."
    if isinstance(leaf, (httpx2.ConnectError, httpcore2.ConnectError, ConnectionError)):
        return f"{label} could not be reached: {_reason(leaf)}."
    if isinstance(leaf, (httpx2.RemoteProtocolError, httpx2.ReadError, httpcore2.ReadError,
                         httpcore2.RemoteProtocolError)):
        return f"{label} broke the connection: {_reason(leaf)}."
    if isinstance(leaf, httpx2.HTTPStatusError):
        return f"{label} answered HTTP {leaf.response.status_code}."
    if isinstance(leaf, MCPError):
        return f"{label} answered with an error: {first_line(leaf.error.message)}"
    if isinstance(leaf, httpx2.SSEError) and "exceeded" in str(leaf):
        return f"{label} sent an answer too large to read: {_reason(leaf)}"
    if isinstance(leaf, (ValidationError, ValueError, httpx2.SSEError, orjson.JSONDecodeError)):
        return f"{label} sent an answer that is not valid MCP."
    if isinstance(leaf, RuntimeError):
        return f"{label} could not be used: {_reason(leaf)}."
    return f"{label} could not be used ({type(leaf).__name__})."


def _leaf(error: BaseException) -> BaseException:
    """The first cause that says what went wrong, out of exception groups (the MCP client's task groups) and
    cancellation noise."""
    while isinstance(error, BaseExceptionGroup):
        inner = [e for e in error.exceptions if not isinstance(e, anyio.get_cancelled_exc_class())]
        error = (inner or list(error.exceptions))[0]
    return error


def _reason(error: BaseException) -> str:
    return first_line(str(error)) or type(error).__name__


def _quiet_library_logs() -> None:
    """Keep the MCP client's libraries from logging what this module reports itself, unless configured otherwise.

    httpx logs every request line at INFO with the full URL, and MCP server URLs often carry a key in their path
    or query; the MCP client logs transport failures as ERROR tracebacks whose messages may quote the URL too.
    Every failure is reported once by the caller instead, as a structured event with a redacted text. A level an
    operator set on those loggers is left alone.
    """
    for name, level in (("httpx2", logging.WARNING), ("httpcore2", logging.WARNING), ("mcp", logging.CRITICAL)):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(level)
