"""A subagent's piece of work as a response of its own, driven by the one driver over the root's upstream.

The root's request gives the subagent its model, instructions and tools (the multi-agent set-up itself excepted: a
subagent spawns none); its input is its context so far and its task. The response is not stored or streamed itself:
its output items become the subagent's context for a follow-up task and, tagged with its ``agent``, items of the
root's output (:class:`RootOutput`); its text the result the root reads, its usage a part of the root's. Its
upstream and credentials are the root's (upstream_scope.py), so its turns go where the root's go, through Envoy
when the root's do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from ..engine.responses.output_builder import OutputBuilder
from ..engine.tools.multi_agent import agent_message_item, agent_of
from ..protocol.errors import APIError
from ..protocol.responses.request import ResponsesRequest
from .drive import BufferSink, drive
from .multi_agent import KEPT_SUBAGENTS, AgentTree, SubagentAnswer, Worker
from .runs import Run
from .server_tools import ServerToolRun
from .upstream_scope import current_upstream

if TYPE_CHECKING:
    from ..engine.responses.translator import Translator

SUBAGENT_INSTRUCTIONS = ("You are a subagent: another agent gave you the task below. Do it with the tools you have and "
                         "answer with the result it asked for; nobody else reads your answer.")


class Held(Protocol):
    def release(self) -> None: ...


Admission = Callable[[str], Held]
"""Takes one of a tenant's places for requests in flight (services/tenancy/limits.py: ``TenantLimits.acquire``), or
raises the ``APIError`` (429) of its limit."""

Charge = Callable[[str, int], Awaitable[Held]]
"""Holds bytes of the process's memory budget for a tenant (services/tenancy/memory_budget.py: ``MemoryBudget.charge``),
or raises the ``APIError`` (503) of the budget or the tenant's fair share of it."""

COST_PER_SHARED_BYTE = 3
"""What a subagent's piece of work is charged per byte of the JSON of its tools and context: its request shares the
root's tools and items (not copied), but its translation and its upstream body are its own — measured at 1.3 times
(2 MiB of function tools, 64 subagents: tests/integration/test_subagent_budget.py) to 2.1 times (16 MiB, every
subagent's upstream call in flight at once), with room for the allocator's slack."""


class SubagentRun(Run, Protocol):
    """A run a subagent's work is driven through (a ``ResponseRun``)."""

    async def begin(self, body: bytes | dict[str, Any], *, large: bool = False) -> Any: ...


def wants_agents(request: ResponsesRequest, *, loop: bool) -> bool:
    """Does ``request`` turn the multi-agent beta on? ``loop``: this run drives a tool loop over a Chat Completions
    upstream, which subagents need; without one the field is a 400 rather than dropped."""
    config = request.multi_agent
    if config is None or not config.enabled:
        return False
    if not loop:
        raise APIError(400, "'multi_agent' is not served on this route: it needs the sidecar's HTTP door (the "
                       "Envoy route to it is missing) and a Chat Completions upstream.", param="multi_agent",
                       code="unsupported_parameter")
    return True


def attach_agents(tool_run: ServerToolRun | None, translator: Translator, new_run: Callable[[], SubagentRun],
                  tenant: str, admit: Admission | None, charge: Charge | None = None) -> None:
    """With the multi-agent beta on: the tree of subagents the root's ``multi_agent_call`` items act on, its
    messages between agents ``agent_message`` items of the root's output, its usage the root's."""
    config = translator.request.multi_agent
    if tool_run is None or config is None or not config.enabled:
        return
    builder = translator.builder
    tool_run.runner.agents = AgentTree(
        config, subagent_worker(translator.request, new_run, tenant, admit, charge), builder.count_usage,
        RootOutput(builder), KEPT_SUBAGENTS.get())  # a session's subagents of its earlier turns, closed


class RootOutput:
    """The tree's items in the root's output, each ``output_item.added`` / ``.done`` in the root's stream: the
    messages between agents, and each subagent's own items tagged with its ``agent`` (the root's model never reads
    those: engine/responses/request_translation.py leaves out what another agent made)."""

    __slots__ = ("_builder",)

    def __init__(self, builder: OutputBuilder) -> None:
        self._builder = builder

    def message(self, author: str, recipient: str, text: str) -> object:
        return self._builder.add_item(agent_message_item(author, recipient, text))

    def agent_items(self, agent_name: str, items: list[dict[str, Any]]) -> object:
        agent = agent_of(agent_name)
        for item in items:
            self._builder.add_item({**item, "agent": agent})
        return None


def subagent_worker(request: ResponsesRequest, new_run: Callable[[], SubagentRun], tenant: str,
                    admit: Admission | None = None, charge: Charge | None = None) -> Worker:
    """The :data:`~responses_bridge.run.multi_agent.Worker` of ``request``'s subagents: ``new_run`` makes the
    run each piece of work is driven through; ``admit``: the tenant's limits, which bound a subagent's work as
    they bound any request of the tenant's (at the limit the piece of work fails with the 429's message);
    ``charge``: the memory budget, which each piece of work reserves in before it is begun — what its tools and
    context cost (:data:`COST_PER_SHARED_BYTE`) — so a response's tree holds no more than the budget lets it (past
    the tenant's fair share the piece of work fails with the 503's message). The tools list is the root's own
    object in every subagent's request, never a copy."""
    params = request.params
    instructions = params.instructions if isinstance(params.instructions, str) else None
    # the root's sampling and reasoning settings go to its subagents too; its output format does not (a subagent
    # answers its root, not the client)
    settings: dict[str, Any] = {name: value for name, value in (
        ("temperature", params.temperature), ("top_p", params.top_p),
        ("parallel_tool_calls", params.parallel_tool_calls),
        ("reasoning", params.reasoning.model_dump(exclude_none=True) if params.reasoning is not None else None),
    ) if value is not None}

    tools_bytes: list[int] = []  # the JSON size of the tools, measured once for the whole tree

    def cost(items: list[dict[str, Any]]) -> int:
        if not tools_bytes:
            tools_bytes.append(len(orjson.dumps(params.tools)) if params.tools else 0)
        return COST_PER_SHARED_BYTE * (tools_bytes[0] + len(orjson.dumps(items)))

    async def work(items: list[dict[str, Any]]) -> SubagentAnswer:
        scope = current_upstream()
        if scope is None:
            return SubagentAnswer("The subagent could not start: no upstream.", "failed")
        body: dict[str, Any] = {"model": params.model, "input": items, "store": False, "stream": False,
                                "instructions": "\n\n".join(filter(None, [instructions, SUBAGENT_INSTRUCTIONS]))}
        if params.tools:
            body["tools"] = params.tools
        body.update(settings)
        try:
            held = admit(tenant) if admit is not None else None
        except APIError as refused:
            return SubagentAnswer(f"The subagent could not start: {refused.message}", "failed")
        try:
            memory = await charge(tenant, cost(items)) if charge is not None else None
        except APIError as refused:
            if held is not None:
                held.release()
            return SubagentAnswer(f"The subagent could not start: {refused.message}", "failed")
        try:
            run = new_run()
            try:
                call = await run.begin(body)
            except APIError as refused:
                return SubagentAnswer(f"The subagent could not start: {refused.message}", "failed")
            try:
                reply = await drive(run, call, scope.client, scope.authorization, BufferSink())
            except asyncio.CancelledError:  # interrupted, or the root ended: its tools are let go too
                await run.abandon()
                raise
            return answer_of(reply.status, reply.body, items)
        finally:
            if memory is not None:
                memory.release()
            if held is not None:
                held.release()

    return work


def answer_of(status: int, body: bytes, items: list[dict[str, Any]]) -> SubagentAnswer:
    """A subagent's answer from its response's JSON (or error) body."""
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError:
        return SubagentAnswer(f"The subagent failed (HTTP {status}).", "failed")
    if status != 200 or not isinstance(decoded, dict) or "output" not in decoded:
        error = decoded.get("error") if isinstance(decoded, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        return SubagentAnswer(f"The subagent failed: {message or f'HTTP {status}'}", "failed")
    output = [item for item in decoded["output"] if isinstance(item, dict)]
    usage = chat_usage(decoded.get("usage"))
    waiting = left_open(output)
    if waiting:  # its response ended for the client to run a tool: nobody will, and the call cannot stay open
        dropped = {id(item) for item in waiting}
        names = ", ".join(sorted({str(item.get("name")) for item in waiting if item["type"] != "program"}))
        return SubagentAnswer(f"The subagent failed: it called {names or 'a tool'}, which the client runs or must "
                              "approve; a subagent can use only the tools the bridge runs unasked.", "failed", usage,
                              items,
                              [item for item in output if id(item) not in dropped])
    text = "\n".join(part.get("text", "") for item in output if item.get("type") == "message"
                     for part in item.get("content") or () if part.get("type") == "output_text")
    status_text = str(decoded.get("status") or "completed")
    if status_text == "failed":
        error = decoded.get("error") or {}
        text = f"The subagent failed: {error.get('message') or 'unknown error'}"
    return SubagentAnswer(text, status_text, usage, [*items, *output], output)


_LEFT_OPEN = frozenset({"function_call", "custom_tool_call", "shell_call", "local_shell_call", "computer_call",
                        "apply_patch_call", "program"})


def left_open(output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The calls in a response's output that no output answers: what it ended with for its client to run, and the
    programs waiting on those (the hosted shell's calls come with their outputs, a finished program with its
    ``program_output``), and the MCP calls it holds for the client's approval, which nobody can give a subagent."""
    answered = {item.get("call_id") for item in output if str(item.get("type", "")).endswith("_output")}
    return [item for item in output if (item.get("type") in _LEFT_OPEN and item.get("call_id") not in answered)
            or item.get("type") == "mcp_approval_request"]


def chat_usage(usage: object) -> dict[str, Any] | None:
    """A Responses ``usage`` in the Chat Completions shape the output builder sums."""
    if not isinstance(usage, dict):
        return None
    inputs = usage.get("input_tokens_details") or {}
    outputs = usage.get("output_tokens_details") or {}
    return {"prompt_tokens": usage.get("input_tokens") or 0, "completion_tokens": usage.get("output_tokens") or 0,
            "total_tokens": usage.get("total_tokens") or 0,
            "prompt_tokens_details": {"cached_tokens": inputs.get("cached_tokens") or 0},
            "completion_tokens_details": {"reasoning_tokens": outputs.get("reasoning_tokens") or 0}}
