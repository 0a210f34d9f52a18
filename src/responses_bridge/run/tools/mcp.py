"""The remote MCP tool, as the tool loop uses it: check a server, list its tools, call one.

This is the part of the loop that talks to MCP servers, and nothing else: it knows no engine, door or store. Per
request, the loop:

- parses each ``{"type": "mcp", …}`` tool with :func:`parse_mcp_tool` (400s naming the field);
- calls :meth:`MCPTools.check_server` up front for each (a refused host is a 400 before anything is sent);
- gets the tools with :meth:`MCPTools.list_tools`, or reuses the previous response's ``mcp_list_tools`` item
  (:func:`tools_from_list_item`, then :meth:`MCPTools.seed` so later calls know the tools' annotations); a server
  that cannot be listed raises :class:`MCPToolError`, whose text is the failed item's ``error``;
- asks :func:`approval_required` before each call, then :meth:`MCPTools.call_tool`, which never raises for a
  server's failure: its :class:`MCPCallResult` carries the ``mcp_call`` item's output or error.

One :class:`MCPTools` serves the whole process (it holds the tool-list cache), built from ``Settings.mcp_limits()``.
The MCP client library is loaded on the first list or call (``mcp_session``), not when the bridge starts.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import orjson
import structlog

from ...net.host_policy import HostNotAllowed, HostPolicy, HostUnresolved, check_host
from ...process.off_loop_import import import_off_loop
from ...protocol.errors import APIError
from .mcp_config import ApprovalRule, MCPLimits, MCPServer, MCPToolInfo, ToolFilter, approval_required, parse_mcp_tool
from .mcp_connectors import ConnectorRegistry
from .mcp_model import EMPTY_SCHEMA, MCPCallResult, MCPToolError, mask_authorization, redact

__all__ = [
    "ApprovalRule", "MCPCallResult", "MCPLimits", "MCPServer", "MCPToolError", "MCPToolInfo", "MCPTools",
    "ToolFilter", "approval_required", "parse_mcp_tool", "tools_from_list_item",
]

log = structlog.get_logger(__name__)

_CACHE_ENTRIES = 512


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
            input_schema=schema if isinstance(schema, Mapping) else EMPTY_SCHEMA,
            annotations=annotations if isinstance(annotations, Mapping) else None,
        ))
    return tools


class MCPTools:
    """The MCP client of one bridge process: its limits, its host policy and its tool-list cache."""

    def __init__(self, limits: MCPLimits, *, clock: Callable[[], float] = time.monotonic,
                 connectors: ConnectorRegistry | None = None) -> None:
        self.limits = limits
        self.connectors: ConnectorRegistry = connectors or {}  # the operator's connector ids (mcp_connectors.py)
        self.policy = HostPolicy.parse(limits.allowed_hosts)
        self.cache = _ListCache(limits.list_ttl, clock)

    async def check_server(self, server: MCPServer) -> None:
        """Refuse, as a 400 on ``tools[i].server_url``, a URL that is not http(s) or whose host the policy refuses.

        A host that does not resolve is not refused here: that is the server's failure, reported on the
        ``mcp_list_tools`` item like any unreachable server.
        """
        if server.connector is not None:  # reached from an agent's environment, under its network policy
            return
        param = server.param("server_url")
        try:
            parts = urlsplit(server.server_url)
            port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        except ValueError:
            raise APIError(400, "server_url is not a valid URL.", param=param, code="invalid_value") from None
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise APIError(400, "server_url must be an http:// or https:// URL.", param=param, code="invalid_value")
        await import_off_loop("anyio")  # by the first MCP server named: an idle sidecar has reached none
        import anyio

        try:
            with anyio.fail_after(self.limits.connect_timeout):
                await check_host(self.policy, parts.hostname, port)
        except HostNotAllowed as refused:
            if server.connector_id is not None:  # the operator's server: its address is not the caller's to see
                log.warning("mcp_connector_host_not_allowed", connector_id=server.connector_id, error=str(refused))
                raise APIError(400, f"The connector '{server.connector_id}' is served by an MCP server whose "
                               "address the MCP egress rules refuse (the operator's "
                               "RESPONSES_BRIDGE_MCP_ALLOWED_HOSTS does not list it).", param=param,
                               code="mcp_host_not_allowed") from None
            raise APIError(400, str(refused), param=param, code="mcp_host_not_allowed") from None
        except (HostUnresolved, TimeoutError):
            return

    def seed(self, server: MCPServer, tools: Iterable[MCPToolInfo]) -> None:
        """Remember ``tools`` (a previous response's ``mcp_list_tools`` item) for the ``read_only`` check of calls.
        Such an item lists only what that request's ``allowed_tools`` let through, so it never stands in for the
        server's whole listing: :meth:`list_tools` of a request with other ``allowed_tools`` still lists."""
        if server.connector is None and self.cache.get(server, partial=True) is None:
            self.cache.put(server, tools, complete=False)

    async def list_tools(self, server: MCPServer) -> list[MCPToolInfo]:
        """The server's tools that ``allowed_tools`` lets through, from the cache when fresh.

        Raises :class:`MCPToolError` when the server cannot be listed (unreachable, refused, too slow, not MCP).
        """
        tools = self.cache.get(server) if server.connector is None else None
        if tools is None:
            await import_off_loop(".mcp_session", __package__)
            from .mcp_session import list_server_tools

            try:  # a connector's server is its session's environment's: never in the process's cache
                tools = tuple(await server.connector.list_tools(server) if server.connector is not None
                              else await list_server_tools(server, self.limits, self.policy))
            except MCPToolError as failure:
                log.info("mcp_list_tools_failed", server_label=server.server_label, error=str(failure))
                raise
            if server.connector is None:
                self.cache.put(server, tools)
            log.info("mcp_tools_listed", server_label=server.server_label, tools=len(tools))
        return [tool for tool in tools if server.allows(tool.name, tool.read_only)]

    async def call_tool(self, server: MCPServer, name: str, arguments: Mapping[str, Any]) -> MCPCallResult:
        """Call ``name``; the server's failure of any kind is the result's ``error``, never an exception
        (cancellation of the caller still propagates). Output past ``max_output_bytes`` is cut with a marker."""
        if not self._may_call(server, name):
            return MCPCallResult(error=f"Tool '{name}' is not in allowed_tools for MCP server "
                                       f"'{server.server_label}'.")
        await import_off_loop(".mcp_session", __package__)
        from .mcp_session import call_server_tool

        try:
            text, is_error = await server.connector.call_tool(server, name, arguments) \
                if server.connector is not None else \
                await call_server_tool(server, self.limits, self.policy, name, arguments)
        except MCPToolError as failure:
            log.info("mcp_call_failed", server_label=server.server_label, tool=name, error=str(failure))
            return MCPCallResult(error=str(failure), error_item=failure.item_error())
        text = cap_output(text, self.limits.max_output_bytes)
        if is_error:  # the server's own text, so redacted like every error text
            return MCPCallResult(error=redact(text, server) or f"Tool '{name}' reported an error without a message.")
        return MCPCallResult(output=mask_authorization(text, server))

    def _may_call(self, server: MCPServer, name: str) -> bool:
        """``allowed_tools`` holds for calls too, not only for what the model was offered. A ``read_only`` filter
        needs the tool's annotations: they come from the cached listing, the one the model was offered."""
        if server.allowed_tools is None:
            return True
        if server.allowed_tools.tool_names is not None and name not in server.allowed_tools.tool_names:
            return False
        if server.allowed_tools.read_only is None:
            return True
        listed = {tool.name: tool for tool in self.cache.get(server, partial=True) or ()}
        return name in listed and server.allows(name, listed[name].read_only)


def cap_output(text: str, max_bytes: int) -> str:
    """``text`` cut to ``max_bytes`` of UTF-8 (on a character boundary) with a marker saying how much was cut."""
    encoded = text.encode()
    if len(encoded) <= max_bytes:
        return text
    kept = encoded[:max_bytes].decode("utf-8", "ignore")
    return f"{kept}\n[output truncated: {len(encoded) - len(kept.encode())} of {len(encoded)} bytes omitted]"


class _ListCache:
    """Tool lists per server URL and headers, for ``ttl`` seconds.

    The key is an HMAC of the URL and the headers under a key made for this process, so the cache holds no
    credential (URLs may carry one too) and two requests with different credentials never share a list.
    """

    def __init__(self, ttl: float, clock: Callable[[], float]) -> None:
        self._ttl = ttl
        self._clock = clock
        self._secret = os.urandom(32)
        # key → (deadline, tools, complete): an incomplete entry is a seeded, maybe filtered, listing
        self._entries: OrderedDict[bytes, tuple[float, tuple[MCPToolInfo, ...], bool]] = OrderedDict()

    def key(self, server: MCPServer) -> bytes:
        material = orjson.dumps([server.server_url, sorted((k.lower(), v) for k, v in server.headers.items())])
        return hmac.new(self._secret, material, hashlib.sha256).digest()

    def get(self, server: MCPServer, *, partial: bool = False) -> tuple[MCPToolInfo, ...] | None:
        """The fresh listing of ``server``; a seeded (maybe filtered) one only with ``partial``."""
        key = self.key(server)
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._clock() >= entry[0]:
            del self._entries[key]
            return None
        return entry[1] if entry[2] or partial else None

    def put(self, server: MCPServer, tools: Iterable[MCPToolInfo], *, complete: bool = True) -> None:
        if self._ttl <= 0:
            return
        key = self.key(server)
        self._entries[key] = (self._clock() + self._ttl, tuple(tools), complete)
        self._entries.move_to_end(key)
        while len(self._entries) > _CACHE_ENTRIES:
            self._entries.popitem(last=False)

    def keys(self) -> list[bytes]:
        return list(self._entries)
