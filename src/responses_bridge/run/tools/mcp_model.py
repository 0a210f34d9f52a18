"""The values the MCP tool hands to the tool loop: a server's tools, a call's outcome, and the error of a server
that could not be used. Kept apart from the I/O so that the loop can hold them without loading the MCP client."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .mcp_config import MCPServer

EMPTY_SCHEMA: Mapping[str, Any] = {"type": "object", "properties": {}}


BAD_GATEWAY = 502
"""An ``http_error``'s code for a server that could not be reached or broke the connection (no status of its own)."""
GATEWAY_TIMEOUT = 504
"""An ``http_error``'s code for a server that did not answer in time."""


class MCPToolError(Exception):
    """An MCP server could not be used. ``str()`` is a sentence fit for the ``error`` of an ``mcp_list_tools`` or
    ``mcp_call`` item: it never holds the request's headers or authorization. ``status``: the HTTP status the
    server answered, or the gateway's own (502 unreachable or broken, 504 too slow) for a transport failure;
    ``protocol_code``: the JSON-RPC code of a server that answered but not as MCP does (then not a transport
    failure)."""

    def __init__(self, message: str, *, connected: bool = False, status: int = BAD_GATEWAY,
                 protocol_code: int | None = None) -> None:
        super().__init__(message)
        self.connected = connected  # the MCP handshake had succeeded before the failure
        self.status = status
        self.protocol_code = protocol_code

    def item_error(self) -> dict[str, Any]:
        """The ``mcp_call`` item's ``error`` as the SDK types it (``McpToolCallError``): ``http_error`` for a
        transport failure (OpenAI's shape for a server it could not reach or that answered with an HTTP error),
        ``mcp_protocol_error`` for a server that broke the protocol."""
        if self.protocol_code is not None:
            return {"type": "mcp_protocol_error", "code": self.protocol_code, "message": str(self)}
        return {"type": "http_error", "code": self.status, "message": str(self)}


@dataclass(frozen=True, slots=True)
class MCPCallResult:
    """The outcome of one ``tools/call``: exactly one of ``output`` and ``error`` is set. ``error_item``: the
    item's error as the SDK types it, where it is not the tool's own error text (``mcp_tool_execution_error``):
    a server that could not be used (:meth:`MCPToolError.item_error`)."""

    output: str | None = None
    error: str | None = None
    error_item: dict[str, Any] | None = None


def redact(text: str, server: MCPServer) -> str:
    """Remove any header value (and bearer token) of the request from ``text``: the last guard on error texts,
    which may quote what a library or a server said."""
    return _without(text, server.headers.values())


def mask_authorization(text: str, server: MCPServer) -> str:
    """``text`` (a call's output) without the request's ``Authorization`` value or its bearer token: a server
    that echoes the credential it was given (an OAuth token, a vault's credential) does not hand it to the model,
    the response's items or anything stored. Other headers are the client's own and may be echoed — but for a
    connector's server (mcp_connectors.py) they are the operator's, so every header value is masked."""
    if server.connector_id is not None:
        return _without(text, server.headers.values())
    return _without(text, [value for name, value in server.headers.items() if name.lower() == "authorization"])


def _without(text: str, values: Iterable[str]) -> str:
    for value in values:
        candidates = [value]
        if value.lower().startswith("bearer "):
            candidates.append(value[7:])
        for secret in candidates:
            if len(secret) >= 4:
                text = text.replace(secret, "[redacted]")
    return text


def first_line(text: str, limit: int = 200) -> str:
    """Messages from libraries and servers can run to pages (a validation error per field): an item's error text
    keeps their first line, bounded."""
    line = text.strip().split("\n", 1)[0].strip()
    return line if len(line) <= limit else line[: limit - 1] + "…"
