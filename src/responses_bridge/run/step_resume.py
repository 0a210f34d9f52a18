"""A tool loop's completed steps, recorded as they complete, and a run rebuilt from them after its process stopped.

A background response's tool loop is a chain of steps: a model call, then the server-side calls it asked for,
then the next model call with their results. Two records make that chain durable (their rows are the background
run's, services/responses/background_steps.py):

* ``turn``: a model call ended asking for server-side calls. Written, and durable, *before* any of them runs: the
  turn's assistant message as the upstream reads it back, and each call (its id, upstream name, arguments, what it
  targets, its output item). A restart that finds a ``turn`` without its ``step`` knows which calls had started.
* ``step``: the calls' results are in and the next model call is built. Each result as the model reads it, and the
  loop's counters (turns, tool calls made, usage so far, how far the output reaches).

A resumed run (``ResponseRun.resumed``) is begun again from its kept request; its set-up lists the MCP servers
again (a listing is safe to repeat; its items and events are the stored ones, not shown twice); its first call is
built, then every completed step is applied to it with the same ``follow_up`` that built it the first time, so the
next model call is the one the stopped process was making (or about to make). A call whose result was recorded
is never run again. For a ``turn`` whose ``step`` never came, each of its server-side calls is settled by
:func:`settle_interrupted` — the rule per tool is stated in docs/state.md:

* a call that finished and whose result shows in its item (an MCP call's output or error) keeps that result;
* a read that is safe to repeat (``web_search``, ``file_search``) is made again;
* anything else (an MCP call, code interpreter, hosted shell, image generation) is never run blindly: its item ends
  failed (or ``incomplete``) and the model reads :data:`INTERRUPTED_RESULT`.

Client-side calls (functions, custom tools, ``self_hosted`` shell) are not the bridge's: a turn that asked for one
ends the response, as before. Server tool search, subagents and programs keep state a restart loses; a run that
used them is not resumed past its first step (background_resume.py says so).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..engine.responses.request_translation import mcp_result_text
from ..engine.responses.turns import ToolResult
from ..engine.tools.server import server_reader_for
from ..engine.tools.tools import CallTarget
from ..engine.tools.turn_result import TurnCall, TurnResult
from ..engine.wire import UpstreamRequest
from .subagents import Admission, Charge, SubagentRun, attach_agents

if TYPE_CHECKING:
    from ..engine.responses.translator import Translator
    from .server_tools import CheckedTools, ServerToolRun

SAFE_TO_REPEAT = frozenset({"web_search", "file_search"})
"""Server-side calls that only read: made again when a restart interrupted them."""

NOT_RESUMABLE = frozenset({"tool_search", "multi_agent", "program"})
"""Server-side calls whose state (loaded tools, subagents, a program's VM) lives only in the process."""

INTERRUPTED_RESULT = ("Error: this tool call was interrupted by a server restart before its result was recorded. "
                      "It may or may not have taken effect; check before repeating it.")


class ResumableRun(Protocol):
    """What a resume sets up again of a run (response_run.py's ResponseRun, declared here where it is used:
    the run records its steps through this module, so the two do not import each other)."""

    tenant: str
    admit_subagent: Admission | None
    charge_memory: Charge | None
    steps: StepRecorder | None
    _tool_run: ServerToolRun | None
    _large: bool
    _turns: int
    _max_turns: int
    _pending_bytes: bytes

    def _begun(self) -> Translator: ...

    def _subagent_run(self) -> SubagentRun: ...

    async def _first_request(self, large: bool) -> UpstreamRequest | None: ...


class StepRecorder(Protocol):
    """Where a tool loop's steps are recorded (a background run's event log)."""

    async def turn_began(self, record: dict[str, Any]) -> None:
        """Durable on return: the turn's server calls run only after."""

    def step_done(self, record: dict[str, Any]) -> None:
        """Recorded with the step's events. May raise to stop the run at this boundary (a drain hands it off)."""


@dataclass
class ResumedSteps:
    """What a resumed run starts from: the completed steps (``turn``, ``step`` records), a ``turn`` whose step never
    came (or None), the output as stored up to the last completed step (or the interrupted turn's end), and the
    output indexes whose item was stored ``done``."""

    steps: list[tuple[dict[str, Any], dict[str, Any]]]
    interrupted: dict[str, Any] | None
    output: list[dict[str, Any]]
    done: set[int] = field(default_factory=set)


def turn_record(turn: TurnResult, tool_run: ServerToolRun) -> dict[str, Any]:
    calls = [{"call_id": call.call_id, "name": call.name, "arguments": call.arguments,
              "output_index": call.output_index, "status": call.status,
              "target": None if call.target is None else [call.target.kind, call.target.name, call.target.namespace,
                                                          call.target.approval],
              "item": call.item if call.server else None} for call in turn.calls]
    return {"message": turn.message, "calls": calls, "output": len(tool_run.builder.output),
            "calls_made": tool_run.runner.calls_made}


def step_record(results: list[ToolResult], tool_run: ServerToolRun, turns: int, exhausted: bool) -> dict[str, Any]:
    runner = tool_run.runner
    return {"results": [[result.call_id, result.content] for result in results], "turns": turns,
            "exhausted": exhausted, "calls_made": runner.calls_made, "exhausted_sent": runner._exhausted_turn_sent,
            "output": len(tool_run.builder.output), "usage": tool_run.builder._usage_past}


async def resumed_first_call(run: ResumableRun, checked: CheckedTools, state: ResumedSteps) -> UpstreamRequest | None:
    """``run.first_call`` of a resumed run: its tools set up again, its completed steps applied, the interrupted
    turn's calls settled; the next model call."""
    translator = run._begun()
    builder = translator.builder
    sequence, kept = builder._sequence, len(builder.output)
    checked.setup.approved = []  # approved calls were made before the restart (a resume refuses such runs)
    tool_run = run._tool_run = await checked.connect()
    attach_agents(tool_run, translator, run._subagent_run, run.tenant, run.admit_subagent, run.charge_memory)
    if _listed_before(builder.output[:kept], builder.output[kept:]):
        builder.take()  # the set-up's items and events are in the stored stream already: not shown twice
        builder._sequence = sequence
        del builder.output[kept:]
    call = await run._first_request(run._large)
    if call is None:
        return None
    for turn, step in state.steps:
        call = translator.follow_up(TurnResult([], turn["message"], "tool_calls"),
                                    [ToolResult(call_id, content) for call_id, content in step["results"]],
                                    tools_exhausted=step["exhausted"])
    if state.steps:
        _, last = state.steps[-1]
        builder._usage_past = last["usage"]
        tool_run.runner.calls_made = last["calls_made"]
        tool_run.runner._exhausted_turn_sent = last["exhausted_sent"]
        run._turns = last["turns"]
    if state.interrupted is not None:
        call = await _finish_turn(run, tool_run, state)
    return call


def _listed_before(stored: list[dict[str, Any]], listed: list[dict[str, Any]]) -> bool:
    """Were the listings the set-up made again stored already? (No: the process stopped while listing, before
    any model call; they are shown as new.)"""
    labels = {item.get("server_label") for item in stored if item.get("type") == "mcp_list_tools"}
    return all(item.get("server_label") in labels for item in listed)


async def _finish_turn(run: ResumableRun, tool_run: ServerToolRun, state: ResumedSteps) -> UpstreamRequest | None:
    """The interrupted turn's calls settled (:func:`settle_interrupted`), recorded as its step, and the next call."""
    translator, builder = run._begun(), tool_run.builder
    record = state.interrupted
    assert record is not None
    calls: list[TurnCall] = []
    for entry in record["calls"]:
        target = None if entry["target"] is None else CallTarget(*entry["target"])
        index = entry["output_index"]
        if entry["item"] is not None and index not in state.done:  # as the turn left it: not the stream's added
            builder.output[index] = entry["item"]
        item = builder.output[index]
        calls.append(TurnCall(entry["call_id"], entry["name"], entry["arguments"], target, index, item,
                              entry["status"]))
    tool_run.runner.calls_made = record["calls_made"]
    results = []
    for call in calls:
        if call.server and not call.target.approval:  # type: ignore[union-attr]
            tool_run.runner.calls_made += 1
            results.append(await settle_interrupted(tool_run, call, call.output_index in state.done))
    run._pending_bytes += translator.take_events()
    run._turns += 1
    exhausted = tool_run.tools_exhausted or run._turns >= run._max_turns
    if tool_run.tools_exhausted:
        tool_run.runner._exhausted_turn_sent = True
    follow = translator.follow_up(TurnResult(calls, record["message"], "tool_calls"), results,
                                  tools_exhausted=exhausted)
    if run.steps is not None:
        run.steps.step_done(step_record(results, tool_run, run._turns, exhausted))
    return follow


async def settle_interrupted(tool_run: ServerToolRun, call: TurnCall, done: bool) -> ToolResult:
    """One server-side call of a turn a restart interrupted (the rule in the module's docstring)."""
    target = call.target
    assert target is not None
    builder, item = tool_run.builder, call.item
    if target.kind == "mcp" and done:
        return ToolResult(call.call_id, mcp_result_text(item.get("output"), item.get("error")))
    if done:  # its effect happened; what the model read of it was not kept
        return ToolResult(call.call_id, INTERRUPTED_RESULT)
    if target.kind == "hosted_shell":
        builder.add_shell_call_output(call.call_id, [], max_output_length=None, status="incomplete")
        return ToolResult(call.call_id, INTERRUPTED_RESULT)
    if target.kind == "mcp":
        builder._run_items[call.output_index] = item
        builder.complete_mcp_call(call.output_index, error=INTERRUPTED_RESULT.removeprefix("Error: "))
        return ToolResult(call.call_id, INTERRUPTED_RESULT)
    reader = server_reader_for(target, call.call_id, call.output_index)
    reader.item = item
    builder._pending[call.output_index] = reader
    if target.kind in SAFE_TO_REPEAT:
        return await tool_run.runner._job(call)()
    builder._complete_pending(call.output_index, "", True, {})  # failed: no completed event
    return ToolResult(call.call_id, INTERRUPTED_RESULT)
