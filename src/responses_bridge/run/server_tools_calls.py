"""Running the server calls of one model turn, and deciding how the response goes on after it.

Calls run concurrently (asyncio tasks, at most ``max_parallel`` at once) unless the request set
``parallel_tool_calls: false``; each reports its outcome to the output builder as it ends (``complete_*``), and the
results come back in the order of the turn's calls, as the follow-up turn must list them. A call that fails —
an MCP server down, a search provider refusing, a bug below — is a failed item and an error text for the model;
nothing but cancellation leaves :meth:`CallRunner.run_turn` as an exception, and cancellation cancels the calls
still running (their connections are closed by the clients' own context managers).

A call with effects (MCP, the code interpreter, the hosted shell) marks the output builder (``effects_made``) just
before it goes out: from then on the response never ends as a status a client retries (translator_stream.py).

``max_tool_calls`` counts every call made in the response, set-up's approved calls included. Calls of a turn past
the limit are not made: each becomes a failed item saying so, so the model reads why. Once the limit is reached
the next turn is sent without tools (engine/responses/turns.py explains why that is what OpenAI does).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import orjson
import structlog

from .. import ids
from ..engine.responses.output_builder import OutputBuilder
from ..engine.responses.request_translation import mcp_result_text, tool_search_result_text
from ..engine.responses.turns import ToolResult
from ..engine.tools.multi_agent import call_output_item
from ..engine.tools.server import image_request_of
from ..engine.tools.tools import ToolPlan
from ..engine.tools.turn_result import TurnCall, TurnResult
from ..fairness.memory_charge import COST_PER_TOOL_OUTPUT_BYTE, charge
from ..observability import gen_ai, metrics, timing, tracing
from ..protocol.responses.request import ResponsesRequest
from .calls.live_output import flushing
from .calls.refusal import limit_message, refusal
from .cancellation import raise_if_cancelled
from .server_tools_setup import ApprovedCall
from .tools.code_interpreter import OUTPUTS_INCLUDE, CodeRun, find_container_citations
from .tools.file_search import (
    FileSearchError,
    FileSearchToolOptions,
    FileSource,
    file_search_results,
    find_file_citations,
    run_file_search,
    sources_for_model,
)
from .tools.image_generation import ImageGenerationError, ImageToolOptions, generate_image
from .tools.mcp import MCPServer
from .tools.shell import LiveShellOutput, ShellRun
from .tools.tool_search import ToolIndex, search_query, tool_search_output_item
from .tools.web_search import (
    SearchResult,
    WebSearchError,
    WebSearchToolOptions,
    find_citations,
    results_for_model,
    search_for_model,
    web_search_action,
)

if TYPE_CHECKING:
    from ..store.records import StoredContainerFile
    from .multi_agent import AgentTree
    from .programs.calls import ProgramCalls
    from .server_tool_services import ServerToolServices

log = structlog.get_logger(__name__)

SOURCES_INCLUDE = "web_search_call.action.sources"
RESULTS_INCLUDE = "file_search_call.results"

EndReason = Literal["answered", "client_calls", "approval_requested", "cut_short", "tools_exhausted"]


@dataclass(frozen=True, slots=True)
class TurnOutcome:
    """How the response goes on after a turn.

    ``end``: the response ends now (the run calls ``builder.finish``); ``reason`` says why — ``answered`` (the turn
    made no call), ``client_calls`` (the client runs the turn's function/custom/… calls; the server calls of the
    turn were made first), ``approval_requested`` (an MCP call waits for the client's approval), ``cut_short``
    (the turn ended on the token limit or a content filter: its calls were never made), ``tools_exhausted`` (the
    turn after the last allowed call still called tools). Otherwise the run asks the upstream again with
    ``follow_up_request(…, results, tools_exhausted=tools_exhausted)``: ``results`` has one entry per call of the
    turn, in order; ``tools_exhausted`` means ``max_tool_calls`` is reached, so no tools are offered."""

    results: list[ToolResult]
    end: bool
    reason: EndReason | None = None
    tools_exhausted: bool = False


class CallRunner:
    """The server calls of one response, turn after turn."""

    def __init__(self, services: ServerToolServices, request: ResponsesRequest, plan: ToolPlan,
                 builder: OutputBuilder, servers: dict[str, MCPServer], index: ToolIndex | None,
                 web_options: WebSearchToolOptions | None, *,
                 file_options: FileSearchToolOptions | None = None,
                 image_options: ImageToolOptions | None = None, tenant: str) -> None:
        params = request.params
        self.tenant = tenant  # the response's owner: the file_search tool searches only its vector stores
        self.services = services
        self.plan = plan
        self.builder = builder
        self.servers = servers
        self.index = index
        self.web_options = web_options
        self.file_options = file_options
        self.image_options = image_options
        self.max_tool_calls: int | None = params.max_tool_calls
        self.parallel = params.parallel_tool_calls is not False
        self.include_sources = SOURCES_INCLUDE in (params.include or ())
        self.include_results = RESULTS_INCLUDE in (params.include or ())
        self.include_outputs = OUTPUTS_INCLUDE in (params.include or ())
        self.container_files: list[StoredContainerFile] = []  # what the response's code wrote, for citations
        self.calls_made = 0
        # set by the run while a turn's calls run: sends the events made so far to the client now (a streamed
        # tool's progress: partial images), rather than when every call of the turn has ended
        self.live: Callable[[], Awaitable[None]] | None = None
        self.agents: AgentTree | None = None  # the multi-agent beta's subagents (multi_agent.py), when enabled
        self.sources: list[SearchResult] = []  # every web search's results, in the order they were numbered
        self.numbered: list[SearchResult | FileSource] = []  # web and file sources: one numbering per response
        self._exhausted_turn_sent = False
        # programmatic tool calling's programs (run/programs/), where the plan offers ``program`` (set-up imported
        # their modules: server_tools.py); their calls of the bridge's tools run as the model's
        self.programs: ProgramCalls | None = None
        if ("program", None, None) in plan.names:
            from .programs.calls import ProgramCalls

            self.programs = ProgramCalls(request, builder, plan, self._program_call, services.programs, tenant)
        if web_options is not None or file_options is not None or plan.server_names("code_interpreter") \
                or plan.server_names("hosted_shell"):
            # the sources' lists, not the runner: the builder outlives the tools (the answer's last text is cited
            # after they close), and a bound method would make runner and builder a cycle only a full collection frees
            builder.cite = functools.partial(cite, self.container_files, self.sources, self.numbered)

    @property
    def tools_exhausted(self) -> bool:
        """Has the response made ``max_tool_calls`` calls? (Then no turn offers tools any more.)"""
        return self.max_tool_calls is not None and self.calls_made >= self.max_tool_calls

    # --- one turn -------------------------------------------------------------------------------------------------

    async def run_turn(self, turn: TurnResult) -> TurnOutcome:
        if not turn.calls:
            return TurnOutcome([], end=True, reason="answered")
        if any(call.status != "completed" for call in turn.calls):
            return TurnOutcome([], end=True, reason="cut_short")  # the builder marks its items incomplete
        runnable = [call for call in turn.server_calls if not call.target.approval]  # type: ignore[union-attr]
        over_limit = self._exhausted_turn_sent
        jobs: list[tuple[TurnCall, Callable[[], Awaitable[ToolResult]]]] = []
        for call in runnable:
            if self.tools_exhausted:
                jobs.append((call, self._refusal(call)))
            else:
                self.calls_made += 1
                jobs.append((call, self._job(call)))
        results = await self._run_all(jobs)
        # held from now to the request's end: in the output, the next turns' upstream bodies (fairness/memory_charge.py)
        charge(sum(len(result.content) for result in results), COST_PER_TOOL_OUTPUT_BYTE)
        if len(runnable) < len(turn.calls) or self.programs_suspended:  # a program waits for client tools too
            ran = {id(call) for call in runnable}
            approval = any(call.server for call in turn.calls if id(call) not in ran)
            return TurnOutcome(results, end=True, reason="approval_requested" if approval else "client_calls")
        if over_limit:
            return TurnOutcome(results, end=True, reason="tools_exhausted")
        if self.tools_exhausted:
            self._exhausted_turn_sent = True
        return TurnOutcome(results, end=False, tools_exhausted=self.tools_exhausted)

    async def _run_all(self, jobs: list[tuple[TurnCall, Callable[[], Awaitable[ToolResult]]]]) -> list[ToolResult]:
        if not self.parallel or len(jobs) < 2:
            return [await job() for _, job in jobs]
        limit = asyncio.Semaphore(max(1, self.services.max_parallel))

        async def bounded(job: Callable[[], Awaitable[ToolResult]]) -> ToolResult:
            async with limit:
                return await job()

        async with asyncio.TaskGroup() as group:  # cancelled with its caller: every running call is cancelled
            tasks = [group.create_task(bounded(job)) for _, job in jobs]
        return [task.result() for task in tasks]

    def _job(self, call: TurnCall) -> Callable[[], Awaitable[ToolResult]]:
        kind = call.target.kind  # type: ignore[union-attr]
        runs: dict[str, Callable[[TurnCall], Awaitable[ToolResult]]] = {
            "mcp": self._mcp_call, "web_search": self._web_search, "file_search": self._file_search,
            "code_interpreter": self._code_interpreter, "image_generation": self._image_generation,
            "hosted_shell": self._hosted_shell, "multi_agent": self._multi_agent, "program": self._program}
        run = runs.get(kind, self._tool_search)  # tool_search: the one kind left
        return lambda: _observed(kind, call, run)

    @property
    def programs_suspended(self) -> bool:
        """Does a program of this response now wait for client tools? (Then the response ends.)"""
        return self.programs is not None and self.programs.suspended

    async def _program(self, call: TurnCall) -> ToolResult:
        """The model's call of ``program``: offered only with the response's programs (``self.programs``)."""
        if self.programs is None:
            raise RuntimeError("a program call where the plan offers no program")
        return await self.programs.run_call(call)

    async def _program_call(self, call: TurnCall) -> ToolResult:
        """A program's call of one of the bridge's tools: counted and bounded as the model's are."""
        if self.tools_exhausted:
            return await self._refusal(call)()
        self.calls_made += 1
        return await self._job(call)()

    def _refusal(self, call: TurnCall) -> Callable[[], Awaitable[ToolResult]]:
        return refusal(self.builder, call, self.max_tool_calls, include_outputs=self.include_outputs)

    # --- the tools ------------------------------------------------------------------------------------------------

    async def _mcp_call(self, call: TurnCall) -> ToolResult:
        target = call.target
        assert target is not None
        server = self.servers.get(target.namespace or "")
        output, error = await self._call_mcp(server, target.name or "", call.arguments)
        self.builder.complete_mcp_call(call.output_index, output=output, error=error)
        if error is not None:  # the call's span says it failed; the error's text stays with the model
            tracing.fail_current("the MCP server answered an error")
        return ToolResult(call.call_id, mcp_result_text(output, error))

    async def run_approved(self, approved: list[ApprovedCall]) -> list[dict[str, Any]]:
        """Make the MCP calls the request approved (set-up, before the first turn): each an ``mcp_call`` item with
        its ``approval_request_id``. Returns the items, for the first turn's messages."""
        items: list[dict[str, Any]] = []
        for call in approved:
            index = self.builder.start_mcp_call(call.server.server_label, call.name, call.arguments,
                                                approval_request_id=call.approval_request_id)
            output: str | None
            error: str | dict[str, Any] | None
            if self.tools_exhausted:
                output, error = None, limit_message(self.max_tool_calls)
            else:
                self.calls_made += 1
                output, error = await self._call_mcp(call.server, call.name, call.arguments)
                charge(len(output or ""), COST_PER_TOOL_OUTPUT_BYTE)  # as a turn's results are (run_turn)
            self.builder.complete_mcp_call(index, output=output, error=error)
            items.append({"type": "mcp_call", "id": call.approval_request_id, "server_label": call.server.server_label,
                          "name": call.name, "arguments": call.arguments, "output": output, "error": error})
        self._exhausted_turn_sent = self.tools_exhausted  # then the first turn goes without tools
        return items

    async def _call_mcp(self, server: MCPServer | None, name: str,
                        arguments: str) -> tuple[str | None, str | dict[str, Any] | None]:
        """(output, error) of one MCP call; never raises but for cancellation. The error is a text (the tool's
        own, or the bridge's: an ``mcp_tool_execution_error``) or, for a server that could not be used, the
        item's error as the SDK types it (``http_error``, ``mcp_protocol_error``)."""
        if server is None:
            return None, f"The MCP server of tool '{name}' is not among this request's tools."
        try:
            parsed = orjson.loads(arguments or "{}")
        except orjson.JSONDecodeError:
            return None, f"The arguments of tool '{name}' are not valid JSON."
        if not isinstance(parsed, dict):
            return None, f"The arguments of tool '{name}' must be a JSON object."
        self.builder.effect_made()  # from here a retry of the request would call the tool again
        try:
            result = await self.services.mcp.call_tool(server, name, parsed)
        except Exception as error:  # noqa: BLE001 - a failure below is this call's failure, not the response's
            raise_if_cancelled()
            log.warning("mcp_call_error", server_label=server.server_label, tool=name,
                        error_type=type(error).__name__)
            return None, f"Calling tool '{name}' of MCP server '{server.server_label}' failed ({type(error).__name__})."
        raise_if_cancelled()
        return result.output, result.error_item or result.error

    async def _web_search(self, call: TurnCall) -> ToolResult:
        query = str((call.item.get("action") or {}).get("query") or "")
        provider = self.services.search
        try:
            if provider is None or self.web_options is None:
                raise WebSearchError("no web search provider is configured")
            results, note = await search_for_model(provider, self.services.search_cache, self.tenant, query,
                                                   self.web_options)
        except WebSearchError as failure:
            raise_if_cancelled()
            return self._search_failed(call, str(failure))
        except Exception as error:  # noqa: BLE001 - a failure below is this call's failure, not the response's
            raise_if_cancelled()
            log.warning("web_search_error", error_type=type(error).__name__)
            return self._search_failed(call, f"the search failed ({type(error).__name__})")
        first = len(self.numbered) + 1
        self.sources.extend(results)
        self.numbered.extend(results)
        self.builder.complete_web_search(call.output_index,
                                         action=web_search_action(query, results, self.include_sources))
        shown = results_for_model(results, first_number=first) if results else ""
        return ToolResult(call.call_id, "\n\n".join(text for text in (note, shown) if text))

    def _search_failed(self, call: TurnCall, reason: str) -> ToolResult:
        self.builder.complete_web_search(call.output_index, failed=True)
        return ToolResult(call.call_id, f"The web search failed: {reason}.")

    async def _file_search(self, call: TurnCall) -> ToolResult:
        queries = [query for query in call.item.get("queries") or () if isinstance(query, str)]
        searcher = self.services.file_search
        try:
            if searcher is None or self.file_options is None:
                raise FileSearchError("no vector stores can be searched on this deployment")
            sources = await run_file_search(searcher, queries, self.file_options, tenant=self.tenant)
        except FileSearchError as failure:
            raise_if_cancelled()
            return self._file_search_failed(call, str(failure))
        except Exception as error:  # noqa: BLE001 - a failure below is this call's failure, not the response's
            raise_if_cancelled()
            log.warning("file_search_error", error_type=type(error).__name__)
            return self._file_search_failed(call, f"the search failed ({type(error).__name__})")
        first = len(self.numbered) + 1
        self.numbered.extend(sources)
        self.builder.complete_file_search(
            call.output_index, results=file_search_results(sources) if self.include_results else None)
        return ToolResult(call.call_id, sources_for_model(sources, first_number=first))

    def _file_search_failed(self, call: TurnCall, reason: str) -> ToolResult:
        self.builder.complete_file_search(call.output_index, failed=True)
        return ToolResult(call.call_id, f"The file search failed: {reason.rstrip('.')}.")

    async def _code_interpreter(self, call: TurnCall) -> ToolResult:
        code = str(call.item.get("code") or "")
        container_id = call.target.namespace or ""  # type: ignore[union-attr]
        interpreter = self.services.code
        try:
            if interpreter is None:
                raise RuntimeError("no code interpreter")
            self.builder.effect_made()  # the code may change what outlives the call (its container, the net)
            run = await interpreter.run(code, container_id, tenant=self.tenant)
        except Exception as error:  # noqa: BLE001 - a failure below is this call's failure, not the response's
            raise_if_cancelled()
            log.warning("code_interpreter_error", error_type=type(error).__name__)
            run = CodeRun(container_id, None, error=f"The code could not run ({type(error).__name__}).")
        raise_if_cancelled()
        self.container_files.extend(run.changed)
        self.builder.complete_code_interpreter(call.output_index,
                                               outputs=run.outputs() if self.include_outputs else None,
                                               failed=run.failed)
        return ToolResult(call.call_id, run.text_for_model())

    async def _hosted_shell(self, call: TurnCall) -> ToolResult:
        action = call.item.get("action") or {}
        container_id = call.target.namespace or ""  # type: ignore[union-attr]
        shell = self.services.shell
        wake = asyncio.Event()
        live = LiveShellOutput(self.builder, call.call_id, action.get("max_output_length"), wake.set)
        try:
            if shell is None:
                raise RuntimeError("no hosted shell")
            self.builder.effect_made()  # the commands may change what outlives the call
            run = await flushing(self.live, wake, shell.run(action, container_id, tenant=self.tenant,
                                                                printed=live.printed))
        except Exception as error:  # noqa: BLE001 - a failure below is this call's failure, not the response's
            raise_if_cancelled()
            log.warning("hosted_shell_error", error_type=type(error).__name__)
            run = ShellRun(container_id, [], None, error=f"The commands could not run ({type(error).__name__}).")
        raise_if_cancelled()
        self.container_files.extend(run.changed)
        live.close(run.items(), run.status)
        if run.status != "completed":
            tracing.fail_current(f"the commands ended {run.status}")
        return ToolResult(call.call_id, run.text_for_model())

    async def _image_generation(self, call: TurnCall) -> ToolResult:
        prompt, size = image_request_of(call.arguments)
        settings = self.services.images
        try:
            if settings is None or self.image_options is None:
                raise ImageGenerationError("image generation is not switched on for this deployment")
            image = await generate_image(prompt, size, self.image_options, settings,
                                         functools.partial(self._partial_image, call.output_index))
        except ImageGenerationError as failure:
            raise_if_cancelled()
            self.builder.complete_image_generation(call.output_index, fields={}, failed=True)
            return ToolResult(call.call_id, f"The image generation failed: {str(failure).rstrip('.')}.")
        except Exception as error:  # noqa: BLE001 - a failure below is this call's failure, not the response's
            raise_if_cancelled()
            log.warning("image_generation_error", error_type=type(error).__name__)
            self.builder.complete_image_generation(call.output_index, fields={}, failed=True)
            return ToolResult(call.call_id, f"The image generation failed ({type(error).__name__}).")
        self.builder.complete_image_generation(call.output_index, fields=image.fields)
        return ToolResult(call.call_id, image.text_for_model())

    async def _partial_image(self, output_index: int, image: str, index: int, made: dict[str, Any]) -> None:
        """A partial image of a call, out to the client as it comes."""
        self.builder.partial_image(output_index, image, index, made)
        if self.live is not None:
            await self.live()

    async def _tool_search(self, call: TurnCall) -> ToolResult:
        query = search_query(call.item.get("arguments"))
        found = self.index.search(query) if self.index is not None and query else []
        self.builder.add_item(tool_search_output_item(ids.new_id("tso"), call_id=call.call_id, tools=found))
        self.plan.add_loaded_tools(found)
        self.builder.set_targets(self.plan.targets)
        return ToolResult(call.call_id, tool_search_result_text(found))

    async def _multi_agent(self, call: TurnCall) -> ToolResult:
        action = call.target.name or ""  # type: ignore[union-attr]
        if self.agents is None:  # the functions are offered only with a tree: a replayed name, nothing to act on
            text = "Error: multi-agent is not enabled for this response."
        else:
            text = await self.agents.act(action, str(call.item.get("arguments") or ""))
        self.builder.add_item(call_output_item(action, call.call_id, text))
        return ToolResult(call.call_id, text)

    def close(self) -> None:
        """Every end of the response (run/response_run.py's ``_close_tools``): what the tools hold let go, and the
        programs' way back to this runner cut, so that the response's objects are freed by their reference counts
        when the response ends, not by a full collection of the cyclic collector, which an idle server never runs
        (the function-call items of sixteen programs kept 260 MiB for as long)."""
        if self.programs is not None:  # what programs answered, unless the run took it to release later (take_held)
            self.programs.release()
            self.programs.close()
        if self.agents is not None:
            self.agents.close()
        if self.index is not None:
            self.index.close()
            self.index = None


def cite(container_files: list[StoredContainerFile], sources: list[SearchResult],
         numbered: list[SearchResult | FileSource], text: str) -> list[dict[str, Any]]:
    """``url_citation`` and ``file_citation`` annotations of an answer, against every source the response's
    searches found (a :class:`CallRunner`'s lists, filled as its calls end), in order of position in the text."""
    found = find_container_citations(text, container_files) if container_files else []
    if numbered:
        found += find_citations(text, sources, numbered) + find_file_citations(text, numbered)
    if not found:
        return []
    return sorted(found, key=lambda annotation: annotation.get("start_index", annotation.get("index", 0)))


async def _observed(kind: str, call: TurnCall, run: Callable[[TurnCall], Awaitable[ToolResult]]) -> ToolResult:
    """One tool call, in its own span and counted (``responses_bridge_tool_calls_total``); ``error`` when it
    raised (a failure the tool reports to the model is still a call made)."""
    name = call.target.name  # type: ignore[union-attr]  # an MCP server's tool; the model's name for the others
    attributes = {"responses_bridge.tool.name": name or kind, **gen_ai.tool_call(name or call.name, kind, call.call_id)}
    # the stored timing's span names the call's item (its arguments and result: the console's span page)
    timed = {**attributes, "output_index": call.output_index}
    with tracing.span(f"tool {kind}", attributes), timing.span(f"tool {kind}", "tool", timed):
        try:
            result = await run(call)
        except BaseException:
            metrics.tool_call(kind, "error")
            raise
    metrics.tool_call(kind, "done")
    return result
