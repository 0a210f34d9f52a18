"""The server-side tools of one response, run asynchronously between the model's turns (the tool loop).

This is the layer between the run (which drives the upstream turns and the output builder) and the leaf tools in
``run/tools/`` (MCP, web search, tool search). It knows no door and no store. For one response the run::

    tools = ServerTools(services)                              # once per process: ServerToolServices
    plan = plan_request_tools(request, history, options, served=services.served)
    run = await tools.prepare(request, history, plan, builder, tenant=tenant)  # before response.created; 400s here
    try:
        body = build_chat_request(request, history, options, plan)
        body["messages"] += run.first_turn_messages(options)  # approved MCP calls made at set-up
        if run.tools_exhausted: drop body's tools / tool_choice / parallel_tool_calls (max_tool_calls reached)
        while True:
            … feed the turn's chunks into builder …; turn = builder.end_turn()
            outcome = await run.run_turn(turn)
            if outcome.end: break                              # then builder.finish(now)
            builder.begin_turn()
            body = follow_up_request(body, turn, outcome.results, plan=plan, tool_choice=…,
                                     parallel_tool_calls=…, tools_exhausted=outcome.tools_exhausted)
    finally:
        run.close()

Set-up (:meth:`ServerTools.prepare`) parses and host-checks every ``mcp`` tool (a refused host is a 400 before any
MCP server or upstream is contacted), lists each server's tools or reuses the previous ``mcp_list_tools`` item of
the chain for that server (then no new item is made, as OpenAI does), offers the tools, the web search, the file
search and the server tool search, and runs or skips the MCP calls the request's ``mcp_approval_response``
items answer.

A tool's failure is a failed item and an error text the model reads, never an exception out of this module; only
cancellation propagates (and cancels the calls still running).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..engine.options import EngineOptions
from ..engine.responses.output_builder import OutputBuilder
from ..engine.responses.request_translation import items_to_messages
from ..engine.tools.tools import ToolPlan
from ..engine.tools.turn_result import TurnResult
from ..process.off_loop_import import import_off_loop
from ..protocol.responses.request import ResponsesRequest
from .server_tool_services import ServerToolServices
from .server_tools_calls import CallRunner, TurnOutcome
from .server_tools_setup import SetUp, storable_tools
from .tools.mcp_config import MCPServerOverlay

if TYPE_CHECKING:
    from ..engine.responses.translator import Translator

__all__ = ["CheckedTools", "ServerToolRun", "ServerToolServices", "ServerTools", "TurnOutcome", "storable_tools"]

class ServerTools:
    """The entry point the run holds: one per process, :meth:`prepare` per response."""

    def __init__(self, services: ServerToolServices) -> None:
        self.services = services

    async def prepare(self, request: ResponsesRequest, history: list[dict[str, Any]], plan: ToolPlan,
                      builder: OutputBuilder, *, tenant: str) -> ServerToolRun:
        """Set up the server tools of one response, before its first model turn. ``plan`` must come from
        ``plan_request_tools(…, served=self.services.served)``; it is extended in place and the builder reads its
        targets. Call it before ``response.created`` is emitted: it removes the MCP tools' ``headers`` and
        ``authorization`` from the response's echo of ``tools`` (``builder.response``).

        Raises ``APIError`` (400) for a malformed ``mcp`` or ``file_search`` tool, a refused MCP host, or an
        ``mcp_approval_response`` that answers no known approval request; nothing has been sent then (except the
        DNS lookups of the host check). ``tenant``: the response's owner, whose objects the tools may use (the
        vector stores file_search searches)."""
        checked = await self.check(request, history, plan, builder, tenant=tenant)
        return await checked.connect()

    async def check(self, request: ResponsesRequest, history: list[dict[str, Any]], plan: ToolPlan,
                    builder: OutputBuilder, *, tenant: str,
                    overlays: Mapping[str, MCPServerOverlay] | None = None) -> CheckedTools:
        """The first half of :meth:`prepare`: every refusal (``APIError``), the echo's credentials removed. The
        response may begin after it; :meth:`CheckedTools.connect` does the rest (the servers' time)."""
        if isinstance(builder.response.get("tools"), list):  # the echo must not carry MCP credentials
            builder.response["tools"] = storable_tools(builder.response["tools"])
        setup = SetUp(self.services, request, history, plan, builder, tenant=tenant, overlays=overlays)
        await setup.check()
        return CheckedTools(self.services, request, plan, builder, setup, tenant)


@dataclass(slots=True)
class CheckedTools:
    """A response's server tools once nothing can refuse them: :meth:`connect` lists the servers and makes the
    calls the request approved."""

    services: ServerToolServices
    request: ResponsesRequest
    plan: ToolPlan
    builder: OutputBuilder
    setup: SetUp
    tenant: str

    async def connect(self) -> ServerToolRun:
        setup = self.setup
        await setup.connect()
        if ("program", None, None) in self.plan.names:  # the first response offering programs imports their modules
            await import_off_loop(".programs.calls", __package__)
        runner = CallRunner(self.services, self.request, self.plan, self.builder, setup.servers, setup.index,
                            setup.web_options, file_options=setup.file_options,
                            image_options=setup.image_options, tenant=self.tenant)
        try:
            first_turn_items = await runner.run_approved(setup.approved)
            if runner.programs is not None:  # programs offered: those waiting for client tools are resumed first
                first_turn_items += await runner.programs.resume([*setup.history, *self.request.input_items])
        except BaseException:  # cancelled during an approved call: free the index before going
            runner.close()
            raise
        return ServerToolRun(self.plan, self.builder, runner, first_turn_items)


@dataclass(slots=True)
class ServerToolRun:
    """The server tools of one response after set-up: run each model turn's server calls."""

    plan: ToolPlan
    builder: OutputBuilder
    runner: CallRunner
    first_turn_items: list[dict[str, Any]] = field(default_factory=list)

    def first_turn_messages(self, options: EngineOptions) -> list[dict[str, Any]]:
        """The chat messages the first turn's body must end with: the MCP calls approved in this request and made
        at set-up (an assistant tool call and its result each), so the model reads what they returned."""
        messages: list[dict[str, Any]] = []
        items_to_messages(self.first_turn_items, messages, options, self.plan)
        return messages

    @property
    def suspended(self) -> bool:
        """A program resumed at set-up waits for client tools again: the response ends with no model turn."""
        return self.runner.programs_suspended

    @property
    def tool_calls(self) -> int:
        """Tool calls made so far in this response (what ``max_tool_calls`` counts)."""
        return self.runner.calls_made

    @property
    def tools_exhausted(self) -> bool:
        """``max_tool_calls`` is reached (also before the first turn: ``max_tool_calls: 0``, or approved calls
        used it up): the next turn must be sent without tools."""
        return self.runner.tools_exhausted

    async def run_turn(self, turn: TurnResult) -> TurnOutcome:
        """Run the server calls of ``turn`` (a ``TurnResult``) and say how the response goes on."""
        return await self.runner.run_turn(turn)

    def close(self) -> None:
        """Free the tool search index (an in-memory SQLite database)."""
        self.runner.close()


def offers_server_tools(request: ResponsesRequest, served: frozenset[str]) -> bool:
    """Does the request offer a tool the loop runs, or answer an MCP approval request (the call runs now)?"""
    tools = request.params.tools or ()
    if any(isinstance(tool, dict) and tool.get("type") in served for tool in tools):
        return True
    return any(item.get("type") == "mcp_approval_response" for item in request.input_items)


async def write_events(translator: Translator, write: Callable[[bytes], Awaitable[None]]) -> None:
    """The events the turn's calls made so far, to the client now (a streamed tool's progress)."""
    events = translator.take_events()
    if events:
        await write(events)
