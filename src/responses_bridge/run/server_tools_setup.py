"""Set-up of a response's server tools, before its first model turn: what the model is offered, and the MCP calls
a client approved.

Everything that can refuse the request is checked first — every ``mcp`` tool parsed and its host checked, every
``mcp_approval_response`` matched to its approval request — so a 400 is raised before any MCP server (or the
upstream) is contacted. Only then are the servers listed, concurrently; a server that cannot be listed is a failed
``mcp_list_tools`` item, and the response goes on without its tools.

A server whose ``mcp_list_tools`` item is already in the conversation (the previous response of the chain, or the
input) is not listed again and gets no new item, as OpenAI does: the item's tools are offered, and remembered by
the MCP client (``MCPTools.seed``) so that its calls know the tools' annotations.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

from ..engine.responses.output_builder import OutputBuilder
from ..engine.tools.builtin import WEB_SEARCH_TYPES
from ..engine.tools.tools import ToolPlan
from ..protocol.errors import APIError
from ..protocol.responses.request import ResponsesRequest
from .cancellation import raise_if_cancelled
from .tools.code_interpreter import CodeToolOptions
from .tools.file_search import FileSearchToolOptions
from .tools.image_generation import ImageToolOptions
from .tools.mcp import MCPServer, MCPToolError, MCPToolInfo, approval_required, parse_mcp_tool, tools_from_list_item
from .tools.mcp_config import MCPServerOverlay
from .tools.mcp_model import redact
from .tools.shell import ShellToolOptions
from .tools.tool_search import ToolIndex, is_server_tool_search, search_tool_function
from .tools.web_search import WebSearchToolOptions

if TYPE_CHECKING:
    from .server_tool_services import ServerToolServices

log = structlog.get_logger(__name__)

SECRET_FIELDS = ("headers", "authorization")
T = TypeVar("T")


def storable_tools(tools: Iterable[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """The request's ``tools`` as they may be stored and echoed: ``mcp`` tools without ``headers`` and
    ``authorization`` (credentials for the MCP server; OpenAI does not echo them either), and the ``value`` of
    every domain secret of a container's ``network_policy`` replaced by :data:`REDACTED` (the code interpreter's
    ``container``, the shell's ``environment``). Other tools are kept as they are; the list given is not
    changed."""
    return [{key: value for key, value in tool.items() if key not in SECRET_FIELDS}
            if tool.get("type") == "mcp" else _without_domain_secrets(tool) for tool in tools or ()]


REDACTED = "[redacted]"


def _without_domain_secrets(tool: Mapping[str, Any]) -> dict[str, Any]:
    """A tool with its container's domain secrets' values replaced (their domains and names kept, and the SDK's
    shape, whose ``value`` is required)."""
    kept = dict(tool)
    for key in ("container", "environment"):
        holder = kept.get(key)
        if not isinstance(holder, Mapping):
            continue
        policy = holder.get("network_policy")
        if not isinstance(policy, Mapping) or not isinstance(policy.get("domain_secrets"), list):
            continue
        hidden = [{**secret, "value": REDACTED} if isinstance(secret, Mapping) and "value" in secret else secret
                  for secret in policy["domain_secrets"]]
        kept[key] = {**holder, "network_policy": {**policy, "domain_secrets": hidden}}
    return kept


@dataclass(frozen=True, slots=True)
class ApprovedCall:
    """An ``mcp_approval_request`` of the conversation that the request's input approved."""

    approval_request_id: str
    server: MCPServer
    name: str
    arguments: str


class SetUp:
    """One response's set-up; read its results (``servers``, ``index``, ``approved``, ``web_options``,
    ``file_options``) after :meth:`run`."""

    def __init__(self, services: ServerToolServices, request: ResponsesRequest, history: list[dict[str, Any]],
                 plan: ToolPlan, builder: OutputBuilder, *, tenant: str,
                 overlays: Mapping[str, MCPServerOverlay] | None = None) -> None:
        self.services = services
        self.overlays = overlays or {}
        self.tenant = tenant
        self.request = request
        self.history = history
        self.plan = plan
        self.builder = builder
        self.tools: list[dict[str, Any]] = list(request.params.tools or ())
        self.servers: dict[str, MCPServer] = {}
        self.index: ToolIndex | None = None
        self.approved: list[ApprovedCall] = []
        self.web_options: WebSearchToolOptions | None = None
        self.file_options: FileSearchToolOptions | None = None
        self.code_options: CodeToolOptions | None = None
        self.image_options: ImageToolOptions | None = None
        self.shell_options: ShellToolOptions | None = None
        self.shell_checked: object = None  # what the shell's check resolved, for its container (HostedShellService)

    async def run(self) -> None:
        await self.check()
        await self.connect()

    async def check(self) -> None:
        """Everything that can refuse the request (a 400), before anything is sent: the request is good once this
        returns. Quick (the MCP hosts' DNS lookups are its only waits), so it runs before the response begins."""
        served = self.services.served
        if "file_search" in served:
            self._check_file_search()
        if "code_interpreter" in served:
            await self._check_code_interpreter()
        if "image_generation" in served:
            self.image_options = self._single("image_generation", ImageToolOptions.from_tool)
        if "shell" in served:
            await self._check_shell()
        if "mcp" in served:
            await self._check_servers()
            self.approved = self._approved_calls()

    async def connect(self) -> None:
        """What takes the servers' time (their tool listings): when the client streams, after its stream has
        opened, so it sees ``response.created`` and the listings' own events while they run."""
        if "mcp" in self.services.served:
            await self._list_servers()
        if self.services.search is not None:
            web = next((tool for tool in self.tools if tool.get("type") in WEB_SEARCH_TYPES), None)
            if web is not None:
                self.web_options = WebSearchToolOptions.from_tool(web)
                self.plan.add_web_search()
        if self.file_options is not None:
            self.plan.add_file_search()
        code = self.services.code
        if self.code_options is not None and code is not None:
            container_id = await code.container_for(self.code_options, self.history, tenant=self.tenant)
            self.plan.add_code_interpreter(container_id, await code.skills_note(container_id, tenant=self.tenant))
        shell = self.services.shell
        if self.shell_options is not None and shell is not None:
            container_id = await shell.container_for(self.shell_options, self.history, tenant=self.tenant,
                                                     checked=self.shell_checked)
            self.plan.add_hosted_shell(container_id, await shell.skills_note(container_id, tenant=self.tenant))
        if self.image_options is not None:
            self.plan.add_image_generation(choose_size=self.image_options.choose_size)
        if "programmatic_tool_calling" in self.services.served and any(
                tool.get("type") == "programmatic_tool_calling" for tool in self.tools):
            self.plan.add_program(self.tools)
        else:
            self.plan.withdraw_program_only(self.tools)
        if "tool_search" in self.services.served and any(is_server_tool_search(tool) for tool in self.tools):
            self.index = ToolIndex(self.tools)
            self.plan.add_server_tool_search(search_tool_function(self.index))
        self.builder.set_targets(self.plan.targets)

    # --- checks: every refusal comes before anything is sent ----------------------------------------------------

    def _check_file_search(self) -> None:
        """The ``file_search`` tool's vector stores and search options (a 400 naming the field); one such tool
        per request, as its options could not otherwise say which search a call is."""
        for position, tool in enumerate(self.tools):
            if tool.get("type") != "file_search":
                continue
            if self.file_options is not None:
                raise APIError(400, "A request may have only one file_search tool; list every vector store in "
                               "its 'vector_store_ids'.", param=f"tools[{position}]", code="invalid_value")
            self.file_options = FileSearchToolOptions.from_tool(tool, position)

    def _single(self, kind: str, parse: Callable[[Mapping[str, Any], int], T]) -> T | None:
        """The options of the one tool of ``kind`` the request may have (a 400 naming the second)."""
        found: T | None = None
        for position, tool in enumerate(self.tools):
            if tool.get("type") != kind:
                continue
            if found is not None:
                raise APIError(400, f"A request may have only one {kind} tool.", param=f"tools[{position}]",
                               code="invalid_value")
            found = parse(tool, position)
        return found

    async def _check_code_interpreter(self) -> None:
        """The ``code_interpreter`` tool (one per request, as OpenAI allows): its container, and whether code can
        run here at all (a 400 naming the cause when not: never a silent drop, never code run unsandboxed)."""
        for position, tool in enumerate(self.tools):
            if tool.get("type") != "code_interpreter":
                continue
            if self.code_options is not None:
                raise APIError(400, "A request may have only one code_interpreter tool.", param=f"tools[{position}]",
                               code="invalid_value")
            self.code_options = CodeToolOptions.from_tool(tool, position)
        if self.code_options is not None and self.services.code is not None:
            await self.services.code.check(self.code_options, tenant=self.tenant)

    async def _check_shell(self) -> None:
        """The hosted ``shell`` tool (one per request): its environment, and whether shell commands can run here
        (a 400 naming the cause when not). A ``local`` shell, or one without an environment, is the client's."""
        for position, tool in enumerate(self.tools):
            if tool.get("type") != "shell":
                continue
            options = ShellToolOptions.from_tool(tool, position)
            if options is None:
                continue
            if self.shell_options is not None:
                raise APIError(400, "A request may have only one hosted shell tool.", param=f"tools[{position}]",
                               code="invalid_value")
            self.shell_options = options
        if self.shell_options is not None and self.services.shell is not None:
            self.shell_checked = await self.services.shell.check(self.shell_options, tenant=self.tenant)

    async def _check_servers(self) -> None:
        for position, tool in enumerate(self.tools):
            if tool.get("type") != "mcp":
                continue
            server = parse_mcp_tool(tool, position, self.services.mcp.connectors)
            overlay = self.overlays.get(server.server_label)
            if overlay is not None:
                server = replace(server, meta=overlay.meta, connector=overlay.connector)
            if server.server_label in self.servers:
                raise APIError(400, f"Two mcp tools have the server_label '{server.server_label}'; each MCP server "
                               "needs a label of its own.", param=server.param("server_label"),
                               code="invalid_value")
            self.servers[server.server_label] = server
        for server in self.servers.values():
            await self.services.mcp.check_server(server)

    def _approved_calls(self) -> list[ApprovedCall]:
        """The approval requests this request's input approves, in input order. An answer to an unknown approval
        request, or to one of a server this request does not declare, is a 400; a refusal (``approve: false``)
        and an approval whose call was already made are skipped."""
        answers = self.request.approval_responses
        if not answers:
            return []
        conversation = [*self.history, *self.request.input_items]
        asked = {item.get("id"): item for item in conversation if item.get("type") == "mcp_approval_request"}
        made = {item.get("approval_request_id") for item in conversation if item.get("type") == "mcp_call"}
        approved: list[ApprovedCall] = []
        for request_id, answer in answers.items():
            asked_item = asked.get(request_id)
            if asked_item is None:
                raise APIError(400, f"No mcp_approval_request with id '{request_id}' was found in the conversation "
                               "this mcp_approval_response answers.", param="input", code="invalid_value")
            server = self.servers.get(asked_item.get("server_label") or "")
            if server is None:
                raise APIError(400, f"The approval request '{request_id}' is for MCP server "
                               f"'{asked_item.get('server_label')}', which is not among this request's tools: "
                               "send its mcp tool again.", param="tools", code="invalid_value")
            if answer.get("approve") is not True or request_id in made:
                continue
            approved.append(ApprovedCall(request_id, server, str(asked_item.get("name") or ""),
                                         str(asked_item.get("arguments") or "{}")))
        return approved

    # --- listing ------------------------------------------------------------------------------------------------

    def _previous_listings(self) -> dict[str, list[MCPToolInfo]]:
        """Per server label, the tools of the last successful ``mcp_list_tools`` item of the conversation."""
        found: dict[str, list[MCPToolInfo]] = {}
        for item in [*self.history, *self.request.input_items]:
            if item.get("type") != "mcp_list_tools":
                continue
            tools = tools_from_list_item(item)
            if tools is not None and isinstance(item.get("server_label"), str):
                found[item["server_label"]] = tools
        return found

    async def _list_servers(self) -> None:
        previous = self._previous_listings()
        fresh: list[tuple[MCPServer, int]] = []
        for server in self.servers.values():
            known = previous.get(server.server_label)
            if known is not None:
                self.services.mcp.seed(server, known)
                self._offer(server, [tool for tool in known if server.allows(tool.name, tool.read_only)])
            else:
                fresh.append((server, self.builder.add_mcp_list_tools(server.server_label)))
        if not fresh:
            return
        async with asyncio.TaskGroup() as group:
            listings = [group.create_task(self._list(server)) for server, _ in fresh]
        for (server, index), listing in zip(fresh, listings, strict=True):
            tools, error = listing.result()
            if error is not None:
                self.builder.complete_mcp_list_tools(index, error=error)
                continue
            self.builder.complete_mcp_list_tools(index, tools=[tool.as_item() for tool in tools])
            self._offer(server, tools)

    async def _list(self, server: MCPServer) -> tuple[list[MCPToolInfo], str | None]:
        """The server's tools, or the error text of its failed ``mcp_list_tools`` item. Never raises but for
        cancellation: a bug below is a failed listing too, not a failed response."""
        try:
            tools = await self.services.mcp.list_tools(server)
        except MCPToolError as failure:
            raise_if_cancelled()
            return [], str(failure)
        except Exception as error:  # noqa: BLE001 - any failure of a server's listing is that item's failure
            raise_if_cancelled()
            log.warning("mcp_list_tools_error", server_label=server.server_label, error_type=type(error).__name__)
            return [], redact(f"Listing the tools of MCP server '{server.server_label}' failed "
                              f"({type(error).__name__}).", server)
        raise_if_cancelled()
        return tools, None

    def _offer(self, server: MCPServer, tools: list[MCPToolInfo]) -> None:
        approval = [tool.name for tool in tools if approval_required(server, tool.name, read_only=tool.read_only)]
        self.plan.add_mcp_tools(server.server_label, [tool.as_item() for tool in tools], approval=approval,
                                server_description=server.server_description)
