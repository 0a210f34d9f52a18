"""An agent session's MCP servers as the bridge's tool loop reaches them, where they are not plain HTTP servers
reached from the bridge: what a turn's response adds to its ``mcp`` tools (run/tools/mcp_config.MCPServerOverlay),
and the servers ``required`` to start before the session's first turn.

- ``request_metadata`` is sent as the ``_meta`` of each request's params (``tools/list``, ``tools/call``), as MCP
  carries request metadata, whichever way the server is reached.
- A server over ``stdio``, or one with ``connection_origin: "environment"``, is used from inside the session's
  environment (its container, on the bridge's sandbox): each operation — a listing, a call — is one sandbox call in
  the container, a Python job (mcp_driver.py) whose ``mcp`` client starts the ``stdio``
  server's command in the container (its ``cwd``, the environment's variables named in ``env_vars``) or reaches
  the HTTP server through the environment's egress proxy, under its network policy and vault credentials. The call
  has every bound of the container's other calls (time, memory, processes, output bytes), and the files the server
  changes are written back as a command's are. A server over ``stdio`` lives for one operation: the sandbox ends
  every process with its call, so state a server keeps in memory is not kept from one call to the next (files in
  the workspace are).
- A ``required`` server is listed before the session's first turn (until a turn of it completes): a server that
  cannot be listed fails the turn with ``connection_failed``, naming it and why, and no model is called.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from ....process.off_loop_import import import_off_loop
from ....protocol.agents.inputs import in_environment
from ....protocol.errors import APIError
from ....run.tools.mcp import MCPLimits, MCPToolError, MCPToolInfo, MCPTools, parse_mcp_tool
from ....run.tools.mcp_config import MCPServer, MCPServerOverlay
from ....run.tools.mcp_model import GATEWAY_TIMEOUT, first_line, redact
from ....sealing import Sealer
from ..vaults.mcp_secrets import mask, opened, with_authorizations
from .environments import hosted_container
from .plugin_mcp import stored_servers, with_plugin_servers

if TYPE_CHECKING:  # the sandbox's modules load where it runs, not with every session
    from ....sandbox.backend import SandboxSession
    from ....store.base_agents import AgentStore
    from ...containers.runs import ContainerRuns
    from ...tools.hosted_shell import HostedShell

DRIVER_SOURCE = Path(__file__).with_name("mcp_driver.py").read_text()
MARK = "@responses-bridge-mcp-result@ "  # environment_mcp_driver.MARK: the line of the answer in the job's stdout
PARSE_ERROR = -32700  # JSON-RPC's code for an answer that is not MCP (run/tools/mcp_session.PARSE_ERROR)
EnvFor = Callable[[str, str], Awaitable[Mapping[str, str]]]
"""A container's variables (an environment's ``env``): container id, tenant → names and values."""


@dataclass(slots=True)
class EnvironmentServer:
    """One MCP server of a turn used from inside the session's container (a :class:`MCPConnector`)."""

    runs: ContainerRuns
    container_id: str
    tenant: str
    transport: Mapping[str, Any]  # the agent tool's (stdio: command, args, cwd, env_vars; http: server_url)
    limits: MCPLimits
    env_for: EnvFor | None = None
    env: Mapping[str, str] = field(default_factory=dict, repr=False)  # the tool's own ``env`` (a secret), opened
    listed: list[MCPToolInfo] | None = field(default=None, repr=False)  # the required check's, for the response

    async def list_tools(self, server: MCPServer) -> list[MCPToolInfo]:
        if self.listed is not None:
            tools, self.listed = self.listed, None
            return tools
        from mcp_types import Tool

        answer = await self._operate(server, {"operation": "list"})
        if not isinstance(answer, list):
            raise _not_mcp(server)
        tools = []
        for raw in answer:
            try:
                tool = Tool.model_validate(raw)
            except ValueError:
                raise _not_mcp(server) from None
            annotations = tool.annotations.model_dump(by_alias=True, exclude_none=True, mode="json") \
                if tool.annotations is not None else None
            description = mask(tool.description, self.env.values()) if tool.description else tool.description
            tools.append(MCPToolInfo(name=tool.name, description=description,
                                     input_schema=tool.input_schema or {"type": "object", "properties": {}},
                                     annotations=annotations))
        return tools

    async def call_tool(self, server: MCPServer, name: str, arguments: Mapping[str, Any]) -> tuple[str, bool]:
        from mcp_types import CallToolResult

        await import_off_loop("....run.tools.mcp_session", __package__)
        from ....run.tools.mcp_session import render_content

        answer = await self._operate(server, {"operation": "call", "name": name, "arguments": dict(arguments)})
        try:
            result = CallToolResult.model_validate(answer)
        except ValueError:
            raise _not_mcp(server) from None
        return mask(render_content(result), self.env.values()), result.is_error

    async def _operate(self, server: MCPServer, operation: dict[str, Any]) -> Any:
        """One operation, one sandbox call: its answer (MCP's JSON), or :class:`MCPToolError`."""
        label = f"MCP server '{server.server_label}'"
        transport = await self._transport(server)
        try:
            return await self._run(server, label, transport, operation)
        except MCPToolError as failure:  # what the server printed of its own ``env`` stays in it
            if self.env and (masked := mask(str(failure), self.env.values())) != str(failure):
                raise MCPToolError(masked, status=failure.status, connected=failure.connected,
                                   protocol_code=failure.protocol_code) from None
            raise

    async def _run(self, server: MCPServer, label: str, transport: dict[str, Any],
                   operation: dict[str, Any]) -> Any:

        async def work(call: SandboxSession) -> str:
            seconds = max(min(self.limits.call_timeout, call.seconds_for_code - 1.0), 0.5)
            spec = {**operation, "transport": transport, "meta": dict(server.meta or {}), "seconds": seconds,
                    "max_bytes": max(call.limits.output_bytes - 256, 1024)}
            code = f"{DRIVER_SOURCE}\nrun(__import__('json').loads({orjson.dumps(spec).decode()!r}))\n"
            result = await call.run(code, job="python")
            for line in result.stdout.splitlines():
                if line.startswith(MARK):
                    return line[len(MARK):]
            raise MCPToolError(redact(f"{label} could not be used in the environment: the sandbox call ended "
                                      f"({result.outcome}) without an answer"
                                      f"{': ' + first_line(result.stderr) if result.stderr.strip() else ''}.",
                                      server), status=GATEWAY_TIMEOUT if result.outcome == "timeout" else 502)

        ran = await self.runs.run(self.container_id, tenant=self.tenant, job="python", work=work)
        if ran.gone:
            raise MCPToolError(f"{label} could not be used: the session's environment expired.")
        if ran.busy is not None or ran.error is not None:
            reason = ran.error or (ran.busy.note if ran.busy is not None else "") or "no sandbox slot came in time"
            raise MCPToolError(redact(f"{label} could not be used in the environment: {reason}.", server))
        answer = orjson.loads(ran.value or "{}")
        if "too_large" in answer:
            raise MCPToolError(f"{label} sent an answer larger than the environment's output bytes "
                               f"({answer['too_large']} bytes); it was not read.")
        if "error" in answer:
            raise MCPToolError(redact(f"{label} could not be used in the environment: {answer['error']}", server),
                               status=GATEWAY_TIMEOUT if answer.get("timeout") else 502, connected=True)
        return answer.get("result")

    async def _transport(self, server: MCPServer) -> dict[str, Any]:
        """The driver's transport: the ``stdio`` command with the environment's values of its ``env_vars``, or
        the HTTP server's URL and headers (a vault credential among them, for this call alone)."""
        if self.transport["type"] != "stdio":
            headers = dict(server.headers)
            if self.transport.get("env_headers"):  # a plugin's server's, from the environment's variables
                headers.update(await self._env_headers(server))
            return {"type": "http", "url": server.server_url, "headers": headers}
        names = list(self.transport.get("env_vars") or [])
        env = dict(await self.env_for(self.container_id, self.tenant)) if names and self.env_for else {}
        inherited = {name: env[name] for name in names if name in env}
        return {"type": "stdio", "command": self.transport["command"], "args": list(self.transport.get("args") or []),
                "cwd": self.transport.get("cwd") or "", "env_vars": [*names, *self.env],
                "env": {**inherited, **self.env}}  # the tool's own ``env`` over the environment's variables


    async def _env_headers(self, server: MCPServer) -> dict[str, str]:
        """A plugin's HTTP server's headers taken from the environment's variables when a call is made
        (``bearer_token_env_var``, ``env_http_headers``: plugin_mcp.py), masked in what it
        answers."""
        env = dict(await self.env_for(self.container_id, self.tenant)) if self.env_for else {}
        headers: dict[str, str] = {}
        for header, name in self.transport["env_headers"].items():
            if name not in env:
                raise MCPToolError(f"MCP server '{server.server_label}' could not be used: its header '{header}' is "
                                   f"taken from the environment variable '{name}', which the environment does not "
                                   "set ('env').")
            headers[header] = f"Bearer {env[name]}" if header == "Authorization" else env[name]
            self.env = {**self.env, name: env[name]}  # masked as the tool's own env is
        return headers


def _not_mcp(server: MCPServer) -> MCPToolError:
    return MCPToolError(f"MCP server '{server.server_label}' sent an answer that is not valid MCP.",
                        protocol_code=PARSE_ERROR)


class SessionMCP:
    """The process's part in a session's MCP servers: the sandbox's container runs, the environment's variables,
    and the MCP client of the tool loop (for ``required`` servers reached from the bridge)."""

    def __init__(self, mcp: MCPTools, shell: HostedShell | None, sealer: Sealer,
                 store: AgentStore | None = None) -> None:
        self.mcp = mcp
        self.shell = shell  # its container runs, and (once the environments' routes set it) their variables
        self.sealer = sealer  # opens the tools' MCP transport secrets (services/agents/vaults/mcp_secrets.py)
        self.store = store  # the environments' records: their plugins' MCP servers (plugin_mcp.py)

    async def prepare(self, session: dict[str, Any], request: dict[str, Any], *,
                      tenant: str) -> dict[str, MCPServerOverlay]:
        """What the turn's response adds to its ``mcp`` tools, by label; before the session's first turn, its
        ``required`` servers listed (an ``APIError`` naming the first that cannot be, which fails the turn)."""
        overlays: dict[str, MCPServerOverlay] = {}
        container_id = hosted_container(session)
        tools = session["agent"]["tools"]
        plugins = await stored_servers(self.store, container_id, tenant=tenant) \
            if container_id is not None and self.store is not None else []
        if plugins:  # the environment's plugins' servers, beside the agent's own
            with_plugin_servers(request, tools, plugins)
            tools = [*tools, *plugins]
        with_authorizations(tools, request, self.sealer)
        for tool in tools:
            if tool["type"] != "mcp":
                continue
            connector = None
            if in_environment(tool):
                if container_id is None or self.shell is None:  # refused at the start (check_environment_mcp)
                    raise APIError(400, f"The MCP server '{tool['server_label']}' needs the session's environment, "
                                   "which this server cannot run.", param="environment", code="invalid_request")
                env = opened(tool, self.sealer).get("env") if tool["transport"]["type"] == "stdio" else None
                connector = EnvironmentServer(self.shell.runs, container_id, tenant, tool["transport"],
                                              self.mcp.limits, self.shell.env_for, dict(env or {}))
            if connector is not None or tool.get("request_metadata"):
                overlays[tool["server_label"]] = MCPServerOverlay(meta=tool.get("request_metadata") or None,
                                                                  connector=connector)
        if not (session.get("_private") or {}).get("last_response_id"):
            await self._connect_required(tools, request, overlays)
        return overlays

    async def _connect_required(self, tools: list[dict[str, Any]], request: dict[str, Any],
                                overlays: Mapping[str, MCPServerOverlay]) -> None:
        sent = {tool["server_label"]: (index, tool) for index, tool in enumerate(request.get("tools") or ())
                if tool.get("type") == "mcp"}
        for index, tool in enumerate(tools):
            if tool["type"] != "mcp" or not tool.get("required") or tool["server_label"] not in sent:
                continue
            where = f"'agent.tools[{index}].required'" if "plugin" not in tool else \
                f"by the plugin '{tool['plugin']}'"
            position, declared = sent[tool["server_label"]]
            server = parse_mcp_tool(declared, position, self.mcp.connectors)
            overlay = overlays.get(server.server_label)
            if overlay is not None:
                server = replace(server, meta=overlay.meta, connector=overlay.connector)
            try:
                await self.mcp.check_server(server)
                listed = await self.mcp.list_tools(server)
            except (MCPToolError, APIError) as failure:
                reason = failure.message if isinstance(failure, APIError) else str(failure)
                raise APIError(502, f"The MCP server '{tool['server_label']}' is required "
                               f"({where}) and could not be connected before the session's "
                               f"first turn: {reason}", param=f"agent.tools[{index}]" if "plugin" not in tool
                               else "environment.plugins", code="connection_failed") from None
            if isinstance(server.connector, EnvironmentServer):
                server.connector.listed = listed  # the response lists it once, not twice
