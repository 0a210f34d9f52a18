"""The remote MCP tool as a request declares it, validated once, and the rules that only read that declaration.

A request's ``{"type": "mcp", …}`` tool is parsed here into an immutable :class:`MCPServer` (shaped like the
``openai`` SDK's ``Mcp`` tool param) so that the tool loop never looks at the raw dict again, and every mistake in
it is a 400 naming the exact field (``tools[2].allowed_tools``) before anything is sent anywhere. The filters
(``allowed_tools``, ``require_approval``) are evaluated here too: they depend on the declaration and on a tool's
name and read-only hint, nothing else.

The limits the I/O side needs come in as :class:`MCPLimits`, a small frozen value built from the settings, so this
package never imports the configuration.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from ...protocol.errors import APIError
from .mcp_connectors import ConnectorRegistry, unknown_connector

_LABEL = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# RFC 7230 token for header names; values may hold any visible character, spaces and tabs, never CR/LF/NUL.
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_HEADER_VALUE_FORBIDDEN = re.compile(r"[\r\n\x00]")
_Bad = Callable[..., APIError]  # (field, message[, code]) -> the 400 to raise
_KNOWN_FIELDS = frozenset({
    "type", "server_label", "server_url", "headers", "authorization", "allowed_tools", "require_approval",
    "server_description", "connector_id", "tunnel_id", "defer_loading", "allowed_callers",
})


@dataclass(frozen=True, slots=True)
class MCPLimits:
    """What the MCP client may spend: time, output size, and which private hosts it may reach.

    ``allowed_hosts`` is the raw comma-separated list (host names, IPs, CIDRs); see ``host_policy``.
    """

    allowed_hosts: str = ""
    connect_timeout: float = 10.0  # TCP connect (and DNS) to the MCP server, seconds
    call_timeout: float = 60.0  # one tools/list or tools/call request, seconds
    total_timeout: float = 90.0  # one whole operation: connect, handshake and request, seconds
    list_ttl: float = 300.0  # how long a server's tool list is reused, seconds
    max_output_bytes: int = 256 * 1024  # tool output kept for the model; longer output is truncated

    @property
    def max_message_bytes(self) -> int:
        """The largest single MCP message read off the wire: generous next to the output cap (the cap is applied
        to the decoded text), but bounded so a runaway server cannot make the bridge buffer without end."""
        return max(16 * 1024 * 1024, 4 * self.max_output_bytes)


@dataclass(frozen=True, slots=True)
class ToolFilter:
    """``{"tool_names": [...], "read_only": bool}``: a tool matches when it meets every criterion given.

    An empty filter (no criterion) matches every tool, as an empty object constrains nothing.
    """

    tool_names: frozenset[str] | None = None
    read_only: bool | None = None

    def matches(self, name: str, read_only: bool | None) -> bool:
        if self.tool_names is not None and name not in self.tool_names:
            return False
        if self.read_only is not None and bool(read_only) != self.read_only:
            return False
        return True


@dataclass(frozen=True, slots=True)
class ApprovalRule:
    """``require_approval``: ``"always"``/``"never"`` for every tool, or per-tool ``always``/``never`` filters."""

    mode: Literal["always", "never", "filter"] = "always"
    always: ToolFilter | None = None
    never: ToolFilter | None = None


@dataclass(frozen=True, slots=True)
class MCPServer:
    """One ``mcp`` tool of a request. ``headers`` (with ``authorization`` folded in as a Bearer token) are secrets:
    they are sent to the server and nowhere else, and are left out of ``repr``."""

    index: int  # position in the request's ``tools``, for the ``param`` of errors
    server_label: str
    server_url: str
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    allowed_tools: ToolFilter | None = None  # None: every tool the server lists
    require_approval: ApprovalRule = field(default_factory=ApprovalRule)
    server_description: str | None = None
    defer_loading: bool = False
    # bridge-side only, never from a request's wire (MCPServerOverlay): the ``_meta`` sent with each request, and
    # the way the server is reached when the bridge's own HTTP client does not reach it (an agent environment's)
    meta: Mapping[str, Any] | None = field(default=None, repr=False)
    connector: MCPConnector | None = field(default=None, repr=False, compare=False)
    # the request's ``connector_id``, resolved through the operator's registry (mcp_connectors.py): its URL and
    # headers are the operator's, so refusals name the id and every header value is masked in what it answers
    connector_id: str | None = None

    def param(self, name: str) -> str:
        if name == "server_url" and self.connector_id is not None:
            name = "connector_id"  # the caller gave the id, never the URL
        return f"tools[{self.index}].{name}"

    def allows(self, name: str, read_only: bool | None) -> bool:
        return self.allowed_tools is None or self.allowed_tools.matches(name, read_only)


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


class MCPConnector(Protocol):
    """How a server the bridge's HTTP client does not reach itself is used: an MCP server over ``stdio`` run in an
    agent session's environment, or one reached from inside it (services/agents/environments/mcp.py). Each raises
    ``MCPToolError`` (a sentence for the item, never a credential) when the server cannot be used."""

    async def list_tools(self, server: MCPServer) -> list[MCPToolInfo]: ...

    async def call_tool(self, server: MCPServer, name: str, arguments: Mapping[str, Any]) -> tuple[str, bool]:
        """The call's output rendered as text, and whether the tool reported an error."""
        ...


@dataclass(frozen=True, slots=True)
class MCPServerOverlay:
    """What the bridge itself adds to one ``mcp`` tool of a response it starts (an agent session's turn), by
    ``server_label``: never read from a request, so a client of ``/v1/responses`` cannot set it. ``meta``: the
    tool's ``request_metadata``, sent as each request's ``_meta``; ``connector``: how the server is reached, in
    place of the bridge's HTTP client and its host policy (the environment's policy applies instead)."""

    meta: Mapping[str, Any] | None = None
    connector: MCPConnector | None = None


def approval_required(server: MCPServer, tool_name: str, *, read_only: bool | None = None) -> bool:
    """Whether calling ``tool_name`` needs an ``mcp_approval_request`` first.

    Unset ``require_approval`` means ``always``, as in OpenAI's API. With filters, a tool matched by ``always`` needs
    approval even if ``never`` matches it too (the safer reading of a contradiction), one matched only by ``never``
    does not, and one matched by neither needs approval (the default).
    """
    rule = server.require_approval
    if rule.mode != "filter":
        return rule.mode == "always"
    if rule.always is not None and rule.always.matches(tool_name, read_only):
        return True
    if rule.never is not None and rule.never.matches(tool_name, read_only):
        return False
    return True


def parse_mcp_tool(tool: Mapping[str, Any], index: int, connectors: ConnectorRegistry | None = None) -> MCPServer:
    """Validate one request tool of type ``mcp``; every problem is a 400 whose ``param`` names the field. A
    ``connector_id`` is resolved through ``connectors``, the operator's registry (mcp_connectors.py)."""

    def bad(name: str, message: str, code: str = "invalid_value") -> APIError:
        return APIError(400, message, param=f"tools[{index}].{name}" if name else f"tools[{index}]", code=code)

    if not isinstance(tool, Mapping) or tool.get("type") != "mcp":
        raise bad("type", "Expected a tool of type 'mcp'.")
    unknown = sorted(key for key in tool if key not in _KNOWN_FIELDS)
    if unknown:
        raise bad(unknown[0], f"Unknown parameter for an mcp tool: '{unknown[0]}'.", "unknown_parameter")
    label = tool.get("server_label")
    if not isinstance(label, str) or not _LABEL.match(label):
        raise bad("server_label", "server_label must be 1 to 64 letters, digits, '_' or '-'.")
    connector_id = tool.get("connector_id")
    if connector_id is not None and tool.get("server_url") is not None:
        raise bad("connector_id", "Only one of 'server_url' and 'connector_id' may be given for an mcp tool.")
    if tool.get("tunnel_id") is not None:
        raise bad("tunnel_id", "MCP tunnels are not available on this server: give the MCP server's "
                  "server_url instead of tunnel_id.", "unsupported_parameter")
    headers = _parse_headers(tool.get("headers"), bad)
    authorization = tool.get("authorization")
    if authorization is not None and (not isinstance(authorization, str) or not authorization
                                      or _HEADER_VALUE_FORBIDDEN.search(authorization)):
        raise bad("authorization", "authorization must be a non-empty token on one line.")
    if connector_id is not None:
        if not isinstance(connector_id, str) or not connector_id:
            raise bad("connector_id", "connector_id must be a non-empty string.")
        entry = (connectors or {}).get(connector_id)
        if entry is None:
            raise bad("connector_id", unknown_connector(connector_id, connectors or ()))
        url = entry.server_url
        headers = entry.request_headers(headers, authorization)
    else:
        given = tool.get("server_url")
        if not isinstance(given, str) or not given.strip():
            raise bad("server_url", "server_url (or connector_id) is required for an mcp tool.",
                      "missing_required_parameter")
        url = given.strip()
        if not re.match(r"^https?://[^/?#]", url, re.IGNORECASE):
            raise bad("server_url", "server_url must be an http:// or https:// URL.")
        if authorization is not None:
            headers = {key: value for key, value in headers.items() if key.lower() != "authorization"}
            headers["Authorization"] = f"Bearer {authorization}"
    description = tool.get("server_description")
    if description is not None and not isinstance(description, str):
        raise bad("server_description", "server_description must be a string.")
    defer_loading = tool.get("defer_loading", False)
    if not isinstance(defer_loading, bool):
        raise bad("defer_loading", "defer_loading must be a boolean.")
    callers = tool.get("allowed_callers")
    if callers is not None and (not isinstance(callers, list)
                                or any(caller not in ("direct", "programmatic") for caller in callers)):
        raise bad("allowed_callers", "allowed_callers must be a list of 'direct' or 'programmatic'.")
    return MCPServer(
        index=index,
        server_label=label,
        server_url=url,
        headers=headers,
        allowed_tools=_parse_allowed_tools(tool.get("allowed_tools"), bad),
        require_approval=_parse_require_approval(tool.get("require_approval"), bad),
        server_description=description,
        defer_loading=defer_loading,
        connector_id=connector_id,
    )


def _parse_headers(value: Any, bad: _Bad) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise bad("headers", "headers must be an object of header names to string values.")
    headers: dict[str, str] = {}
    for name, header_value in value.items():
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise bad("headers", "headers has a name that is not a valid HTTP header name.")
        if not isinstance(header_value, str) or _HEADER_VALUE_FORBIDDEN.search(header_value):
            # The value is never quoted back: it is likely a credential.
            raise bad("headers", f"headers['{name}'] must be a string on one line.")
        headers[name] = header_value
    return headers


def _parse_filter(value: Any, bad: _Bad, param: str) -> ToolFilter:
    if not isinstance(value, Mapping):
        raise bad(param, f"{param} must be an object with 'tool_names' and/or 'read_only'.")
    unknown = sorted(key for key in value if key not in ("tool_names", "read_only"))
    if unknown:
        raise bad(f"{param}.{unknown[0]}", f"Unknown parameter '{unknown[0]}' in {param}.", "unknown_parameter")
    names = value.get("tool_names")
    if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
        raise bad(f"{param}.tool_names", "tool_names must be a list of strings.")
    read_only = value.get("read_only")
    if read_only is not None and not isinstance(read_only, bool):
        raise bad(f"{param}.read_only", "read_only must be a boolean.")
    return ToolFilter(tool_names=frozenset(names) if names is not None else None, read_only=read_only)


def _parse_allowed_tools(value: Any, bad: _Bad) -> ToolFilter | None:
    if value is None:
        return None
    if isinstance(value, list):
        if not all(isinstance(name, str) for name in value):
            raise bad("allowed_tools", "allowed_tools must be a list of tool names or a filter object.")
        return ToolFilter(tool_names=frozenset(value))
    return _parse_filter(value, bad, "allowed_tools")


def _parse_require_approval(value: Any, bad: _Bad) -> ApprovalRule:
    if value is None:
        return ApprovalRule()
    if value in ("always", "never"):
        return ApprovalRule(mode=value)
    if not isinstance(value, Mapping):
        raise bad("require_approval", "require_approval must be 'always', 'never' or an object with "
                  "'always' and/or 'never' filters.")
    unknown = sorted(key for key in value if key not in ("always", "never"))
    if unknown:
        raise bad(f"require_approval.{unknown[0]}", f"Unknown parameter '{unknown[0]}' in require_approval.",
                  "unknown_parameter")
    always = value.get("always")
    never = value.get("never")
    return ApprovalRule(
        mode="filter",
        always=_parse_filter(always, bad, "require_approval.always") if always is not None else None,
        never=_parse_filter(never, bad, "require_approval.never") if never is not None else None,
    )
