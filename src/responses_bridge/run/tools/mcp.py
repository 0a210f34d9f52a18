"""The remote MCP tool's I/O: list a server's tools, call one, within the host policy and the time and size limits.

This is the part of the tool loop that talks to MCP servers, and nothing else: it knows no engine, door or store.
The loop calls, per request:

- :meth:`MCPTools.check_server` up front for every ``mcp`` tool (a refused host is a 400 before anything is sent);
- :meth:`MCPTools.list_tools` (or :func:`tools_from_list_item` on the previous response's ``mcp_list_tools`` item,
  then :meth:`MCPTools.seed`), which raises :class:`MCPToolError` whose text goes into a failed ``mcp_list_tools``;
- :func:`approval_required` before each call, then :meth:`MCPTools.call_tool`, which never raises for a server's
  failure: its :class:`MCPCallResult` carries either the output or the error text of the ``mcp_call`` item.

Transport: Streamable HTTP, the current MCP transport, unless the URL's path ends in ``/sse`` (the conventional
endpoint of the older HTTP+SSE transport), which goes to SSE directly. When a Streamable HTTP handshake is answered
but not as Streamable HTTP (an HTTP 4xx such as 404/405, or a body that is not MCP), the SSE transport is tried once
on the same URL, as the MCP specification's backwards-compatibility note advises. Connection failures and timeouts
are not retried over SSE: a server that cannot be reached over one cannot be reached over the other.

Every operation opens its own connection (handshake included) and closes it: a tool loop calls a server a handful
of times per response, and no connection outlives the request that carries its credentials.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import anyio
import httpcore2
import httpx2
import orjson
import structlog
from mcp.client import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult, Implementation
from pydantic import ValidationError

from ...protocol.errors import APIError
from .mcp_config import (
    ApprovalRule,
    MCPLimits,
    MCPServer,
    ToolFilter,
    approval_required,
    parse_mcp_tool,
)
from .mcp_policy import GuardedNetworkBackend, HostNotAllowed, HostPolicy, HostUnresolved, check_host

__all__ = [
    "ApprovalRule", "MCPCallResult", "MCPLimits", "MCPServer", "MCPToolError", "MCPToolInfo", "MCPTools",
    "ToolFilter", "approval_required", "parse_mcp_tool", "tools_from_list_item",
]

log = structlog.get_logger(__name__)
T = TypeVar("T")

_CLIENT_INFO = Implementation(name="responses-bridge", version="0.1.0")
_LIST_PAGE_CAP = 100  # a server whose cursor never ends cannot keep a listing going forever
_CACHE_ENTRIES = 512
_EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}


class MCPToolError(Exception):
    """An MCP server could not be used. ``str()`` is a sentence fit for the ``error`` of an ``mcp_list_tools`` or
    ``mcp_call`` item: it never holds the request's headers or authorization."""

    def __init__(self, message: str, *, connected: bool = False) -> None:
        super().__init__(message)
        self.connected = connected  # the MCP handshake had succeeded before the failure


@dataclass(frozen=True, slots=True)
class MCPToolInfo:
    """One tool a server offers, as OpenAI's ``mcp_list_tools`` item lists it."""

    name: str
    description: str | None
    input_schema: Mapping[str, Any]
    annotations: Mapping[str, Any] | None = None

    @property
    def read_only(self) -> bool | None:
        """The tool's ``readOnlyHint``, what ``read_only`` filters match against (a hint the server gives)."""
        if not self.annotations:
            return None
        hint = self.annotations.get("readOnlyHint")
        return hint if isinstance(hint, bool) else None

    def as_item(self) -> dict[str, Any]:
        """The entry of ``mcp_list_tools.tools`` (``openai`` SDK: ``McpListToolsTool``)."""
        return {"name": self.name, "description": self.description, "input_schema": dict(self.input_schema),
                "annotations": dict(self.annotations) if self.annotations is not None else None}


@dataclass(frozen=True, slots=True)
class MCPCallResult:
    """The outcome of one ``tools/call``: exactly one of ``output`` and ``error`` is set."""

    output: str | None = None
    error: str | None = None


def tools_from_list_item(item: Mapping[str, Any]) -> list[MCPToolInfo] | None:
    """The tools of a previous response's ``mcp_list_tools`` item, to reuse instead of listing again (as OpenAI
    does in a chain). None when the item cannot stand in for a listing: it failed (``error``) or has no tool list.
    Entries without a name are skipped; a missing or malformed schema becomes an empty object schema."""
    if item.get("type") != "mcp_list_tools" or item.get("error") or not isinstance(item.get("tools"), list):
        return None
    tools: list[MCPToolInfo] = []
    for entry in item["tools"]:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str) or not entry["name"]:
            continue
        schema = entry.get("input_schema")
        description = entry.get("description")
        annotations = entry.get("annotations")
        tools.append(MCPToolInfo(
            name=entry["name"],
            description=description if isinstance(description, str) else None,
            input_schema=schema if isinstance(schema, Mapping) else _EMPTY_SCHEMA,
            annotations=annotations if isinstance(annotations, Mapping) else None,
        ))
    return tools


class _ListCache:
    """Tool lists per server URL and headers, for ``ttl`` seconds.

    The key is an HMAC of the URL and the headers under a key made for this process, so the cache holds no
    credential (URLs may carry one too) and two requests with different credentials never share a list.
    """

    def __init__(self, ttl: float, clock: Callable[[], float]) -> None:
        self._ttl = ttl
        self._clock = clock
        self._secret = os.urandom(32)
        self._entries: OrderedDict[bytes, tuple[float, tuple[MCPToolInfo, ...]]] = OrderedDict()

    def key(self, server: MCPServer) -> bytes:
        material = orjson.dumps([server.server_url, sorted((k.lower(), v) for k, v in server.headers.items())])
        return hmac.new(self._secret, material, hashlib.sha256).digest()

    def get(self, server: MCPServer) -> tuple[MCPToolInfo, ...] | None:
        key = self.key(server)
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._clock() >= entry[0]:
            del self._entries[key]
            return None
        return entry[1]

    def put(self, server: MCPServer, tools: Iterable[MCPToolInfo]) -> None:
        if self._ttl <= 0:
            return
        key = self.key(server)
        self._entries[key] = (self._clock() + self._ttl, tuple(tools))
        self._entries.move_to_end(key)
        while len(self._entries) > _CACHE_ENTRIES:
            self._entries.popitem(last=False)

    def keys(self) -> list[bytes]:
        return list(self._entries)


class MCPTools:
    """The MCP client of one bridge process: its limits, its host policy and its tool-list cache."""

    def __init__(self, limits: MCPLimits, *, clock: Callable[[], float] = time.monotonic) -> None:
        _quiet_library_logs()
        self.limits = limits
        self.policy = HostPolicy.parse(limits.allowed_hosts)
        self.cache = _ListCache(limits.list_ttl, clock)

    async def check_server(self, server: MCPServer) -> None:
        """Refuse, as a 400 on ``tools[i].server_url``, a URL that is not http(s) or whose host the policy refuses.

        A host that does not resolve is not refused here: that is the server's failure, reported on the
        ``mcp_list_tools`` item like any unreachable server.
        """
        param = server.param("server_url")
        try:
            parts = urlsplit(server.server_url)
            port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        except ValueError:
            raise APIError(400, "server_url is not a valid URL.", param=param, code="invalid_value") from None
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise APIError(400, "server_url must be an http:// or https:// URL.", param=param, code="invalid_value")
        try:
            with anyio.fail_after(self.limits.connect_timeout):
                await check_host(self.policy, parts.hostname, port)
        except HostNotAllowed as refused:
            raise APIError(400, str(refused), param=param, code="mcp_host_not_allowed") from None
        except (HostUnresolved, TimeoutError):
            return

    def seed(self, server: MCPServer, tools: Iterable[MCPToolInfo]) -> None:
        """Remember ``tools`` as ``server``'s listing (from a previous response's ``mcp_list_tools`` item)."""
        self.cache.put(server, tools)

    async def list_tools(self, server: MCPServer) -> list[MCPToolInfo]:
        """The server's tools that ``allowed_tools`` lets through, from the cache when fresh.

        Raises :class:`MCPToolError` when the server cannot be listed (unreachable, refused, too slow, not MCP).
        """
        tools = self.cache.get(server)
        if tools is None:
            try:
                tools = tuple(await self._operate(server, "list tools", _list_all))
            except MCPToolError as failure:
                log.info("mcp_list_tools_failed", server_label=server.server_label, error=str(failure))
                raise
            self.cache.put(server, tools)
            log.info("mcp_tools_listed", server_label=server.server_label, tools=len(tools))
        return [tool for tool in tools if server.allows(tool.name, tool.read_only)]

    async def call_tool(self, server: MCPServer, name: str, arguments: Mapping[str, Any]) -> MCPCallResult:
        """Call ``name``; the server's failure of any kind is the result's ``error``, never an exception
        (cancellation of the caller still propagates)."""
        if server.allowed_tools is not None and server.allowed_tools.tool_names is not None \
                and name not in server.allowed_tools.tool_names:
            return MCPCallResult(error=f"Tool '{name}' is not in allowed_tools for MCP server "
                                       f"'{server.server_label}'.")
        limit = self.limits.call_timeout

        async def call(client: Client) -> CallToolResult:
            with anyio.move_on_after(limit) as scope:
                return await client.call_tool(name, dict(arguments))
            raise _CallTimedOut(limit)

        try:
            result = await self._operate(server, f"call tool '{name}'", call)
        except MCPToolError as failure:
            log.info("mcp_call_failed", server_label=server.server_label, tool=name, error=str(failure))
            return MCPCallResult(error=str(failure))
        text = _cap(render_content(result), self.limits.max_output_bytes)
        if result.is_error:  # the server's own text, so redacted like every error text
            return MCPCallResult(error=_redact(text, server) or f"Tool '{name}' reported an error without a message.")
        return MCPCallResult(output=text)

    async def _operate(self, server: MCPServer, what: str, operation: Callable[[Client], Awaitable[T]]) -> T:
        """Run ``operation`` on a fresh connection within the total timeout; any failure is an MCPToolError."""
        use_sse = urlsplit(server.server_url).path.rstrip("/").endswith("/sse")
        try:
            with anyio.fail_after(self.limits.total_timeout):
                if use_sse:
                    return await self._attempt(server, operation, sse=True)
                try:
                    return await self._attempt(server, operation, sse=False)
                except _NotStreamable as mismatch:
                    try:
                        return await self._attempt(server, operation, sse=True)
                    except MCPToolError as over_sse:
                        if over_sse.connected:  # it is an SSE server: its own failure is the one to report
                            raise
                        raise MCPToolError(f"{mismatch.message} (over Streamable HTTP; over SSE: {over_sse})") \
                            from None
        except TimeoutError:
            raise MCPToolError(_redact(
                f"MCP server '{server.server_label}' did not {what} within {self.limits.total_timeout:g} s.",
                server)) from None

    async def _attempt(self, server: MCPServer, operation: Callable[[Client], Awaitable[T]], *, sse: bool) -> T:
        """One connection over one transport. A transport error anywhere under the MCP client (which some of its
        background tasks only log) ends the attempt at once, rather than leaving a request waiting for an answer
        that will not come."""
        watch = _Watch()
        try:
            with anyio.CancelScope() as scope:
                watch.scope = scope
                async with AsyncExitStack() as stack:
                    client = Client(self._transport(server, watch, sse), mode="auto", cache=None,
                                    client_info=_CLIENT_INFO)
                    try:
                        await stack.enter_async_context(client)
                    except Exception as handshake:
                        refused = _leaf(handshake)
                        if not sse and watch.failure is None and isinstance(refused, MCPError):
                            raise _NotStreamable(_redact(
                                f"MCP server '{server.server_label}' did not answer as an MCP server: "
                                f"{_first_line(refused.error.message)}", server)) from None
                        raise
                    watch.connected = True
                    result = await operation(client)
                    watch.done = True
                    return result
        except (_NotStreamable, MCPToolError):
            raise
        except Exception as error:  # every failure of a remote server, whatever the library raised
            raise MCPToolError(_redact(_describe(watch.failure or error, server), server),
                               connected=watch.connected) from None
        if watch.failure is not None:
            raise MCPToolError(_redact(_describe(watch.failure, server), server), connected=watch.connected)
        raise MCPToolError(f"MCP server '{server.server_label}' closed the connection without an answer.")

    def _transport(self, server: MCPServer, watch: _Watch, sse: bool) -> Any:
        limits = self.limits
        headers = dict(server.headers)

        def http_client(headers: dict[str, str] | None = None, timeout: httpx2.Timeout | None = None,
                        auth: httpx2.Auth | None = None) -> httpx2.AsyncClient:
            return httpx2.AsyncClient(
                headers=headers,
                # Reads may wait as long as a whole operation: the call timeout is enforced per call above
                # (so an SSE stream's silence between calls is not an error), the total one around everything.
                timeout=httpx2.Timeout(limits.total_timeout, connect=limits.connect_timeout),
                transport=_WatchedTransport(_guarded_transport(self.policy), watch),
                trust_env=False,  # no proxy from the environment: the address connected to is the one checked
                follow_redirects=False,
            )

        if sse:
            return sse_client(server.server_url, headers=headers, timeout=limits.total_timeout,
                              sse_read_timeout=limits.total_timeout, httpx_client_factory=http_client)
        return _streamable(server.server_url, http_client(headers), limits.max_message_bytes)


def _quiet_library_logs() -> None:
    """Keep the MCP client's libraries from logging what this module reports itself, unless configured otherwise.

    httpx logs every request line at INFO with the full URL, and MCP server URLs often carry a key in their path
    or query; the MCP client logs transport failures as ERROR tracebacks whose messages may quote the URL too.
    Every failure is reported once here instead, as a structured event with a redacted text. A level an operator
    set on those loggers is left alone.
    """
    for name, level in (("httpx2", logging.WARNING), ("httpcore2", logging.WARNING), ("mcp", logging.CRITICAL)):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(level)


async def _list_all(client: Client) -> list[MCPToolInfo]:
    tools: list[MCPToolInfo] = []
    cursor: str | None = None
    for _ in range(_LIST_PAGE_CAP):
        page = await client.list_tools(cursor=cursor)
        for tool in page.tools:
            annotations = tool.annotations.model_dump(by_alias=True, exclude_none=True, mode="json") \
                if tool.annotations is not None else None
            tools.append(MCPToolInfo(name=tool.name, description=tool.description,
                                     input_schema=tool.input_schema or _EMPTY_SCHEMA, annotations=annotations))
        cursor = page.next_cursor
        if not cursor:
            break
    return tools


def render_content(result: CallToolResult) -> str:
    """The text a model sees: text blocks joined by newlines; other blocks named briefly; structured content as
    JSON when there is no text at all."""
    parts: list[str] = []
    for block in result.content:
        kind = getattr(block, "type", "")
        if kind == "text":
            parts.append(block.text)
        elif kind in ("image", "audio"):
            parts.append(f"[{kind} content, {block.mime_type}]")
        elif kind == "resource_link":
            parts.append(f"[resource link: {block.uri}]")
        elif kind == "resource":
            resource = block.resource
            text = getattr(resource, "text", None)
            parts.append(text if isinstance(text, str)
                         else f"[resource {resource.uri}, {resource.mime_type or 'binary'}]")
        else:
            parts.append(f"[{kind or 'unknown'} content]")
    if not parts and result.structured_content is not None:
        return orjson.dumps(result.structured_content).decode()
    return "\n".join(parts)


def _cap(text: str, max_bytes: int) -> str:
    """``text`` cut to ``max_bytes`` of UTF-8 (on a character boundary) with a marker saying how much was cut."""
    encoded = text.encode()
    if len(encoded) <= max_bytes:
        return text
    kept = encoded[:max_bytes].decode("utf-8", "ignore")
    return f"{kept}\n[output truncated: {len(encoded) - len(kept.encode())} of {len(encoded)} bytes omitted]"


class _NotStreamable(Exception):
    """The server answered the Streamable HTTP handshake, but not as a Streamable HTTP server."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _CallTimedOut(Exception):
    def __init__(self, seconds: float) -> None:
        super().__init__(f"no answer within {seconds:g} s")
        self.seconds = seconds


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
    def __init__(self, inner: httpx2.AsyncByteStream, watch: _Watch) -> None:
        self._inner = inner
        self._watch = watch

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                yield chunk
        except Exception as error:
            self._watch.failed(error)
            raise

    async def aclose(self) -> None:
        await self._inner.aclose()


class _WatchedTransport(httpx2.AsyncBaseTransport):
    """Reports every transport failure (connect, send, read, refused host) to the attempt's :class:`_Watch`."""

    def __init__(self, inner: httpx2.AsyncBaseTransport, watch: _Watch) -> None:
        self._inner = inner
        self._watch = watch

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        try:
            response = await self._inner.handle_async_request(request)
        except Exception as error:
            self._watch.failed(error)
            raise
        return httpx2.Response(response.status_code, headers=response.headers,
                               stream=_WatchedStream(response.stream, self._watch),  # type: ignore[arg-type]
                               extensions=response.extensions)

    async def aclose(self) -> None:
        await self._inner.aclose()


def _guarded_transport(policy: HostPolicy) -> httpx2.AsyncHTTPTransport:
    """httpx's own transport over a connection pool whose sockets come from :class:`GuardedNetworkBackend`.

    httpx does not take a network backend as an argument, so its pool is replaced by one built with the same
    TLS settings plus the backend; the rest of the transport (request and response mapping) stays httpx's.
    """
    transport = httpx2.AsyncHTTPTransport(trust_env=False)
    transport._pool = httpcore2.AsyncConnectionPool(  # noqa: SLF001
        ssl_context=httpx2.create_ssl_context(trust_env=False),
        max_connections=8,
        max_keepalive_connections=4,
        network_backend=GuardedNetworkBackend(policy),
    )
    return transport


def _streamable(url: str, client: httpx2.AsyncClient, max_message_bytes: int) -> Any:
    """The Streamable HTTP transport, owning ``client`` (the MCP library leaves a client it was given open)."""

    @asynccontextmanager
    async def transport() -> AsyncIterator[Any]:
        async with client, streamable_http_client(url, http_client=client,
                                                  max_sse_event_size=max_message_bytes) as streams:
            yield streams

    return transport()


def _describe(error: BaseException, server: MCPServer) -> str:
    """A sentence for the failed item. Only the server's label and the kind of failure: never the URL (it may hold
    a token) or anything the request sent."""
    leaf = _leaf(error)
    label = f"MCP server '{server.server_label}'"
    if isinstance(leaf, (HostNotAllowed, HostUnresolved)):
        return str(leaf)
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
        return f"{label} answered with an error: {_first_line(leaf.error.message)}"
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
    return _first_line(str(error)) or type(error).__name__


def _first_line(text: str, limit: int = 200) -> str:
    """Messages from libraries and servers can run to pages (a validation error per field): an item's error text
    keeps their first line, bounded."""
    line = text.strip().split("\n", 1)[0].strip()
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _redact(text: str, server: MCPServer) -> str:
    """Remove any header value (and bearer token) of the request from ``text``: the last guard on error texts,
    which may quote what a library or a server said."""
    for value in server.headers.values():
        candidates = [value]
        if value.lower().startswith("bearer "):
            candidates.append(value[7:])
        for secret in candidates:
            if len(secret) >= 4:
                text = text.replace(secret, "[redacted]")
    return text
