"""A Codex plugin's MCP servers, served in the ``openai_hosted`` environment the plugin is given to.

Codex reads a plugin's servers from its manifest's ``mcpServers`` (a ``./`` path to a JSON file in the plugin, or
the servers inline) or else from the plugin's ``.mcp.json``: ``{"mcpServers": {"<name>": {…}}}``, each server as
Codex's ``config.toml`` has it — ``command``, ``args``, ``env``, ``env_vars``, ``cwd`` for one over ``stdio``;
``url``, ``http_headers`` (or ``headers``), ``bearer_token_env_var``, ``env_http_headers`` for one over HTTP. Each
becomes one MCP server of the session's turns, named as the plugin names it (its tools are
``<name>__<tool>`` as an agent's own server's are), used as an agent's MCP tool is from the environment
(mcp.py): a ``stdio`` server's command runs in the container, in the plugin's own directory
(:data:`PLUGINS_ROOT`/<plugin>, where the plugin's files are laid out; ``${CODEX_PLUGIN_ROOT}``,
``${PLUGIN_ROOT}`` and ``${CLAUDE_PLUGIN_ROOT}`` in its command, arguments, ``cwd`` and ``env`` name it); an HTTP
server is reached from inside the container (``connection_origin: "environment"``), through its egress proxy,
under the environment's network policy, the deployment's egress rules and its vaults' credentials. Each server is
checked as an agent's MCP tool is (protocol/agents/agents.py), its secrets — a ``stdio`` server's ``env`` — sealed in
the environment's record as an agent's transport secrets are (services/agents/vaults/mcp_secrets.py); a bearer token or
header taken from an environment variable is read from the environment's ``env`` when a call is made, and masked
in what the server answers.

A plugin's apps (``apps``, ``.app.json``) join these servers as servers of their own, each a connector id the
operator's registry maps (plugin_apps.py).
"""

from __future__ import annotations

import contextlib
import posixpath
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from ....protocol.agents.agents import checked_mcp_tool
from ....protocol.agents.inputs import response_tools
from ....protocol.containers.environment_fields import container_path
from ....protocol.errors import APIError, invalid_request
from ....sealing import Sealer
from ....store.base_agents import AgentStore
from ...containers.skill_bundle import SkillFile
from ..vaults.mcp_secrets import seal_tools

if TYPE_CHECKING:
    from ....store.records import StoredContainer
    from ...containers.containers import ContainerService

PLUGINS_ROOT = "/workspace/.codex/plugins"  # in the workspace's reserved .codex: no environment file is there
ROOT_VARIABLES = ("${CODEX_PLUGIN_ROOT}", "${PLUGIN_ROOT}", "${CLAUDE_PLUGIN_ROOT}")
STORED = "_plugin_mcp"  # the environment record's key of its plugins' servers (sealed secrets: never shown)
MAX_SERVERS = 16  # of one environment's plugins together
_LABEL = re.compile(r"[A-Za-z0-9_-]{1,64}")
_COMMON = ("type", "enabled", "required", "enabled_tools", "startup_timeout_sec", "startup_timeout_ms",
           "tool_timeout_sec", "description")
_STDIO = ("command", "args", "env", "env_vars", "cwd")
_HTTP = ("url", "headers", "http_headers", "bearer_token_env_var", "env_http_headers")


@dataclass
class PluginServers:
    """What an environment's plugins bring beside their skills: their MCP servers as checked agent MCP tools
    (each with its plugin's name under ``plugin``), and the files of the plugins whose ``stdio`` servers run from
    them, by their workspace path."""

    tools: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)

    def add(self, other: PluginServers, where: str) -> None:
        for tool in other.tools:
            if any(tool["server_label"] == mine["server_label"] for mine in self.tools):
                raise invalid_request(f"Two plugins' MCP servers are named '{tool['server_label']}'; the MCP servers "
                                      "of one environment need names of their own.", param=where,
                                      code="invalid_value")
        self.tools += other.tools
        self.files.update(other.files)
        if len(self.tools) > MAX_SERVERS:
            raise invalid_request(f"An environment's plugins may bring at most {MAX_SERVERS} MCP servers.",
                                  param=where, code="invalid_value")


def plugin_servers(files: list[SkillFile], manifest: dict[str, Any], name: str, where: str) -> PluginServers:
    """The plugin's MCP servers, checked (400s naming ``where``): CPU work, run off the loop with the zip's."""
    declared = manifest.get("mcpServers")
    config: Any
    if isinstance(declared, str):
        config = _json_file(files, declared, where)
    elif declared is not None:
        config = declared
    elif any(file.path == ".mcp.json" for file in files):
        config = _json_file(files, "./.mcp.json", where)
    else:
        return PluginServers()
    servers = config.get("mcpServers", config) if isinstance(config, dict) else None
    if not isinstance(servers, dict):
        raise invalid_request(f"The plugin '{name}' declares its MCP servers in a shape this bridge does not read: "
                              "expected {\"mcpServers\": {\"<name>\": {…}}}.", param=where, code="invalid_value")
    root = f"{PLUGINS_ROOT}/{_directory(name)}"
    found = PluginServers()
    for label, server in servers.items():
        tool = _server(label, server, root, f"{where} (MCP server '{str(label)[:64]}')", where)
        if tool is not None:
            found.add(PluginServers([{**tool, "plugin": name}]), where)
    if any(tool["transport"]["type"] == "stdio" for tool in found.tools):
        found.files = {f"{root}/{file.path}": file.data for file in files}
    return found


def _server(label: Any, server: Any, root: str, what: str, where: str) -> dict[str, Any] | None:
    def bad(message: str) -> APIError:
        return invalid_request(f"The plugin's {what}: {message}", param=where, code="invalid_value")

    if not isinstance(label, str) or not _LABEL.fullmatch(label):
        raise bad("expected a name of 1 to 64 letters, digits, '_' or '-'.")
    if not isinstance(server, dict):
        raise bad("expected an object.")
    if server.get("enabled") is False:
        return None  # the plugin turns it off itself
    kind = server.get("type") or ("stdio" if "command" in server else "http")
    if kind not in ("stdio", "http", "streamable_http", "streamable-http", "sse"):
        raise bad(f"'type' {str(kind)[:32]!r} is not an MCP transport this bridge serves ('stdio', 'http', 'sse').")
    known = _COMMON + (_STDIO if kind == "stdio" else _HTTP)
    for key in server:
        if key not in known:
            raise bad(f"'{str(key)[:64]}' is not served for a server of type '{kind}'.")
    tool: dict[str, Any] = {"type": "mcp", "server_label": label, "required": server.get("required", False),
                            "allowed_tools": server.get("enabled_tools")}
    env_headers: dict[str, str] = {}
    if kind == "stdio":
        def rooted(text: Any) -> Any:
            if not isinstance(text, str):
                return text
            for variable in ROOT_VARIABLES:
                text = text.replace(variable, root)
            return text

        cwd = rooted(server.get("cwd") or root)
        if not isinstance(cwd, str):
            raise bad("'cwd' must be a string.")
        cwd = posixpath.normpath(cwd if cwd.startswith("/") else f"{root}/{cwd}")
        if not cwd.startswith(("/workspace/", "/mnt/data/")) and cwd not in ("/workspace", "/mnt/data"):
            raise bad("'cwd' must be in the plugin or the environment's workspace.")
        env = server.get("env")
        tool["transport"] = {"type": "stdio", "command": rooted(server.get("command")),
                             "args": [rooted(arg) for arg in server.get("args") or []], "cwd": cwd,
                             "env_vars": server.get("env_vars") or [],
                             "env": {key: rooted(value) for key, value in env.items()} if isinstance(env, dict)
                             else env}
    else:
        tool["connection_origin"] = "environment"
        tool["transport"] = {"type": "http", "server_url": server.get("url"),
                             "headers": server.get("http_headers") or server.get("headers") or {}}
        bearer = server.get("bearer_token_env_var")
        if bearer is not None:
            env_headers["Authorization"] = _variable(bearer, bad)
        named = server.get("env_http_headers") or {}
        if not isinstance(named, dict):
            raise bad("'env_http_headers' must map header names to variable names.")
        env_headers.update({str(header): _variable(variable, bad) for header, variable in named.items()})
    try:
        checked = checked_mcp_tool({key: value for key, value in tool.items() if value is not None}, where)
    except APIError as error:  # its message names the field as an agent's tool's: say whose it is
        raise bad(error.message.replace(f"'{where}.", "'")) from None
    if env_headers:
        checked["transport"]["env_headers"] = env_headers
    return checked


def _variable(value: Any, bad: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,255}", value):
        raise bad(f"{str(value)[:64]!r} is not an environment variable's name.")
    return value


def _json_file(files: list[SkillFile], path: str, where: str) -> Any:
    if not path.startswith("./") or ".." in path.split("/"):
        raise invalid_request(f"Invalid path '{path[:200]}' in the plugin's manifest: expected one starting with "
                              "'./' inside the plugin.", param=where, code="invalid_value")
    wanted = posixpath.normpath(path[2:])
    found = next((file for file in files if file.path == wanted), None)
    if found is None:
        raise invalid_request(f"The plugin's manifest names '{path[:200]}', which the plugin does not hold.",
                              param=where, code="invalid_value")
    try:
        return orjson.loads(found.data)
    except orjson.JSONDecodeError:
        raise invalid_request(f"The plugin's '{path[:200]}' is not JSON.", param=where,
                              code="invalid_value") from None


def _directory(name: str) -> str:
    """The plugin's directory name: its name, with what a path cannot hold replaced."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name.strip())[:100]
    return "_" + safe if safe in ("", ".", "..") else safe


def sealed(servers: PluginServers, sealer: Sealer) -> list[dict[str, Any]]:
    """The servers as the environment's record keeps them: their secrets sealed."""
    return list(seal_tools({"tools": servers.tools}, sealer)["tools"])


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def place_plugin_files(containers: ContainerService, container: StoredContainer, files: dict[str, bytes], *,
                             tenant: str) -> None:
    """The plugins' files written into the new container (under :data:`PLUGINS_ROOT`), counted in its bytes as
    any file of it; failing, the container is deleted with them: never an environment half made."""
    try:
        for path, data in files.items():
            await containers.put_bytes(container, container_path(path), _chunks(data), source="user", tenant=tenant,
                                       param="environment.plugins")
    except BaseException:
        with contextlib.suppress(APIError):
            await containers.delete(container.id, tenant=tenant)
        raise


async def stored_servers(store: AgentStore, container_id: str, *, tenant: str) -> list[dict[str, Any]]:
    """The plugins' servers of the environment whose container is ``container_id`` (the tenant's own)."""
    from .setup import ENVIRONMENT

    record = await store.get(ENVIRONMENT, container_id, tenant=tenant)
    return list((record or {}).get(STORED) or [])


def with_plugin_servers(request: dict[str, Any], agent_tools: list[dict[str, Any]],
                        servers: list[dict[str, Any]]) -> None:
    """The turn's response given the plugins' servers as MCP tools beside the agent's own (asking the client's
    approval as those do); a 400 when one has the name of one of the agent's."""
    for server in servers:
        clash = next((index for index, tool in enumerate(agent_tools)
                      if tool["type"] == "mcp" and tool["server_label"] == server["server_label"]), None)
        if clash is not None:
            raise APIError(400, f"The plugin '{server.get('plugin')}' brings an MCP server named "
                           f"'{server['server_label']}', the name of the agent's own MCP server "
                           f"('agent.tools[{clash}].server_label'); rename one of them.",
                           param=f"agent.tools[{clash}].server_label", code="invalid_value")
    request.setdefault("tools", []).extend(response_tools(servers))
