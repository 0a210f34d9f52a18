"""The secrets of an agent's MCP transports: an HTTP server's ``authorization`` and a ``stdio`` server's ``env``
(the SDK's ``McpTransportConfigParamHTTP`` / ``McpTransportConfigParamStdio``).

Both are write-only, as OpenAI's ``Persisted...`` types say by leaving them out: protocol/agents/agents.py checks them
and holds them under :data:`~responses_bridge.protocol.agents.agents.TRANSPORT_SECRET`; before any record is written the
service seals them (sealing.py, purpose :data:`PURPOSE`, under :data:`SEALED` in the tool), and every answer shows the
tool without that key (:func:`shown_agent`). They are opened only when a turn reaches the server: the ``authorization``
as the response's MCP tool's (the bridge's MCP client sends it as ``Authorization: Bearer``, a response never stores nor
echoes it, and a call's output and errors are masked of it as of a vault credential: run/tools/mcp_model.py), the
``env`` as the ``stdio`` server process's environment inside the session's sandbox call
(services/agents/environments/mcp.py, which masks its values in what the server answers, as a vault's
``environment_variable`` credential is kept out of a command's output).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ....protocol.agents.agents import TRANSPORT_SECRET
from ....sealing import Sealer

PURPOSE = "agent-mcp-transport"
SEALED = "_sealed_transport"
"""Where a stored MCP tool keeps its transport's secrets, sealed: never in an answer (:func:`shown_agent`)."""
_PRIVATE = (TRANSPORT_SECRET, SEALED)


def seal_tools(config: dict[str, Any], sealer: Sealer) -> dict[str, Any]:
    """``config`` with each MCP tool's checked secrets sealed: what may be stored."""
    tools = config.get("tools") or []
    if not any(TRANSPORT_SECRET in tool for tool in tools):
        return config
    sealed = []
    for tool in tools:
        if TRANSPORT_SECRET in tool:
            secret = tool[TRANSPORT_SECRET]
            tool = {key: value for key, value in tool.items() if key != TRANSPORT_SECRET}
            tool[SEALED] = sealer.seal(PURPOSE, secret)
        sealed.append(tool)
    return {**config, "tools": sealed}


def shown_agent(agent: dict[str, Any]) -> dict[str, Any]:
    """An agent (or a session's snapshot of one) as answered: its MCP tools without their secrets."""
    tools = agent.get("tools")
    if not tools or not any(key in tool for tool in tools for key in _PRIVATE):
        return agent
    return {**agent, "tools": [{key: value for key, value in tool.items() if key not in _PRIVATE}
                               for tool in tools]}


HTTP_SHOWN = frozenset({"server_url", "type"})
"""What a session's snapshot shows of an HTTP transport: the SDK's ``McpTransportResourceHTTP`` (a session's
``AgentTool``) has no ``headers``, which the agent it was made from (``PersistedMcpTransportResourceHTTP``) has;
the snapshot keeps them for its calls."""


def shown_record(record: dict[str, Any]) -> dict[str, Any]:
    """A session (its ``agent``) as answered: :func:`shown_agent` of its snapshot, its HTTP transports as a
    session's ``AgentTool`` types them."""
    agent = record.get("agent")
    if not isinstance(agent, dict):
        return record
    shown = shown_agent(agent)
    tools = shown.get("tools") or []
    if any(_extra_http(tool) for tool in tools):
        shown = {**shown, "tools": [{**tool, "transport": {key: value for key, value in tool["transport"].items()
                                                           if key in HTTP_SHOWN}} if _extra_http(tool) else tool
                                    for tool in tools]}
    return record if shown is agent else {**record, "agent": shown}


def _extra_http(tool: dict[str, Any]) -> bool:
    transport = tool.get("transport") if tool.get("type") == "mcp" else None
    return isinstance(transport, dict) and transport.get("type") == "http" and not HTTP_SHOWN.issuperset(transport)


def opened(tool: dict[str, Any], sealer: Sealer) -> dict[str, Any]:
    """The tool's transport secrets (``authorization``, ``env``), or ``{}``."""
    if SEALED not in tool:
        return {}
    value = sealer.open(PURPOSE, tool[SEALED], param="agent.tools")
    return value if isinstance(value, dict) else {}


def with_authorizations(tools: Iterable[dict[str, Any]], request: dict[str, Any], sealer: Sealer) -> None:
    """The response's MCP tools given the agent's own ``authorization`` where a vault credential did not set one
    (``credential_id`` is the more specific choice)."""
    sent_by_label = {sent["server_label"]: sent for sent in request.get("tools") or () if sent.get("type") == "mcp"}
    for tool in tools:
        if tool["type"] != "mcp" or SEALED not in tool or tool["transport"]["type"] != "http":
            continue
        sent = sent_by_label.get(tool["server_label"])
        authorization = opened(tool, sealer).get("authorization")
        if sent is not None and authorization and not sent.get("authorization"):
            sent["authorization"] = authorization


def mask(text: str, values: Iterable[str]) -> str:
    """``text`` without any of ``values`` (of at least 4 characters): a server that prints its environment."""
    for value in values:
        if len(value) >= 4:
            text = text.replace(value, "[redacted]")
    return text
