"""The programs of one response, in the tool loop: a ``program`` call the model made is run (isolate.py, in a
worker thread) and comes to its ``program_output`` — the model's tool result — or to the client tools it waits for;
a program that waited in an earlier response is resumed before the first turn, once the client's outputs are in.

Each run of a program is made by the process's :class:`~.host.ProgramHost` (made by the process's first program:
run/server_tool_services.py's ``ProgramHosting``): a slot shared fairly among tenants, its memory bound held in the
budget, a worker process bounded at it.

A program waiting for client tools ends the response with their ``function_call`` items (``caller`` the program),
as a turn's own client calls do; their outputs come back in the next request (``previous_response_id``, or the
items sent back with ``store: false``) and the program runs again from its start, replaying the recorded calls
(replay.py): its ``fingerprint`` must bind its code, and it must make the recorded calls in order, else the request
is a 400. Several programs pending at once are resumed in the order they were made.

A program that fails (a syntax error, a thrown error) or meets a bound ends ``incomplete``, its result saying why;
the model reads that and the response goes on. A program calls the request's function tools and the bridge's own
tools (MCP, searches, code interpreter, hosted shell, image generation) whose ``allowed_callers`` include
``programmatic``; calls of the bridge's tools are made here, one after another, each round of them followed by
another run of the program, and streamed as the model's calls of them are.

A program's fingerprint is its tenant's (engine/tools/programs.py: :func:`tenant_signer`): the items a response of one
tenant makes are resumed for that tenant only. What a run answered is held in the memory budget while the response
keeps it (host.py): the last run of each program until the response is let go (:meth:`ProgramCalls.take_held`),
an earlier run of the same program as soon as the next one answers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ...engine.responses.output_builder import OutputBuilder
from ...engine.responses.turns import ToolResult
from ...engine.tools.programs import (
    ProgramSigner,
    made_by_program,
    open_fingerprint,
    program_call_names,
    program_function_call,
    program_output_item,
    tenant_signer,
)
from ...engine.tools.tools import ToolPlan
from ...engine.tools.turn_result import TurnCall
from ...protocol.responses.request import ResponsesRequest
from .isolate import ProgramRun, ToolCall
from .replay import check_replay, mismatch

if TYPE_CHECKING:
    from ..server_tool_services import ProgramHosting

ServerJob = Callable[[TurnCall], Awaitable[ToolResult]]
"""Runs one server-side call the way the loop runs the model's (run/server_tools_calls.py), counted against
``max_tool_calls``."""

MAX_ROUNDS = 64
"""Rounds of server-side calls one program may make in one response: each round runs the program again."""


@dataclass(slots=True)
class ProgramCalls:
    """The programs of one response, whose owner is ``tenant``. ``suspended``: a program now waits for client tools
    (the response ends). ``plan``: what the loop offers (the server-side tools programs may call are among its
    targets); ``server_job``: runs one of their calls; ``host``: where programs run, its host made by the first
    program that runs (None: this process runs none — a ``program`` item cannot come to be without it)."""

    request: ResponsesRequest
    builder: OutputBuilder
    plan: ToolPlan
    server_job: ServerJob
    host: ProgramHosting | None
    tenant: str
    suspended: bool = False
    names: list[str] = field(default_factory=list)
    server_names: set[str] = field(default_factory=set)
    held: list[ProgramRun] = field(default_factory=list)  # the runs whose answers the response keeps

    def __post_init__(self) -> None:
        self.names = program_call_names(self.request.params.tools or (), self.plan.targets)
        self.server_names = {name for name in self.names
                             if (target := self.plan.targets.get(name)) is not None and target.server}
        if self.host is not None:  # the programs this response makes are fingerprinted for its tenant
            self.builder.program_sign = self._sign

    def take_held(self) -> list[ProgramRun]:
        """The runs whose answers are still held in the memory budget: the caller releases them once the
        response's items are let go (after its answer is written and stored)."""
        held, self.held = self.held, []
        return held

    def release(self) -> None:
        """Give back what the runs' answers hold of the memory budget (idempotent)."""
        for run in self.take_held():
            run.release()

    def close(self) -> None:
        """The response's tools are closed: ``server_job`` (its call runner's method, which holds these programs)
        is let go, so that runner and programs are not a cycle only a full collection frees; a call after this is
        refused."""
        self.server_job = _closed

    async def run_call(self, call: TurnCall) -> ToolResult:
        """The model's call of ``program`` in this turn (its item done, with code and fingerprint)."""
        item = call.item
        if not item["code"].strip():  # arguments without a `code` string (a small model's guess at the schema)
            return self._outcome(call.call_id, ProgramRun(
                "incomplete", result='Program stopped: the call carried no code; call program with '
                                     '{"code": "<the JavaScript program>"}.', limit="no_code"))[0]
        world = open_fingerprint(item["code"], item["fingerprint"], "program.fingerprint", self._sign,
                                 item["call_id"])
        run = await self._drive(item["code"], [], world.seed, world.clock_ms)
        return self._outcome(call.call_id, run)[0]

    async def resume(self, history: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Resume every program of ``history`` (the chain's or conversation's items, then the request's input)
        that waits for client tools whose outputs are now all in. Returns the ``program_output`` items made, for
        the first turn's messages; ``suspended`` says whether one waits again (then no turn is made)."""
        made: list[dict[str, Any]] = []
        for index, item in enumerate(self.request.input_items):  # sent back by the client: made by this bridge?
            if item.get("type") == "program":
                open_fingerprint(item["code"], item.get("fingerprint"), f"input[{index}].fingerprint",
                                 self._sign, item["call_id"])
        finished = {item["call_id"] for item in history if item.get("type") == "program_output"}
        outputs = {item["call_id"]: item for item in history if item.get("type") == "function_call_output"}
        for program in history:
            if program.get("type") != "program" or program["call_id"] in finished:
                continue
            call_id = program["call_id"]
            calls = [item for item in history if item.get("type") == "function_call" and made_by_program(item)
                     and item["caller"].get("caller_id") == call_id]
            if not calls:
                continue  # never ran here (cut short): nothing to resume
            missing = [call["call_id"] for call in calls if call["call_id"] not in outputs]
            if missing:
                raise mismatch(call_id, f"no function_call_output for its call '{missing[0][:100]}'")
            world = open_fingerprint(program["code"], program.get("fingerprint"), f"program '{call_id[:100]}'",
                                     self._sign, call_id)
            results = [_output_text(outputs[call["call_id"]]) for call in calls]
            recorded = [ToolCall(call["name"], call["arguments"]) for call in calls]
            run = await self._drive(program["code"], results, world.seed, world.clock_ms, recorded, call_id)
            output = self._outcome(call_id, run)[1]
            if output is not None:
                made.append(output)
        return made

    async def _drive(self, code: str, results: list[str], seed: int, clock_ms: int,
                     recorded: list[ToolCall] | None = None, call_id: str = "") -> ProgramRun:
        """Run the program until it ends or waits for client tools; each round of calls it makes to the bridge's
        own tools is made here and the program run again with their outputs. Client tools can be waited for only
        before the first such call: its output could not be replayed in a later request."""
        results = list(results)
        rounds = 0
        run: ProgramRun | None = None
        try:
            while True:
                if run is not None:
                    run.release()  # each run answers with every call made so far: the last one is what is kept
                run = await self._run(code, results, seed, clock_ms)
                if recorded is not None and run.answer_bytes:  # a run the bridge's bounds ended has no calls
                    check_replay(run.calls, recorded, call_id)
                    recorded = None  # the replay is judged once: what follows is new
                pending = run.pending
                if not pending:
                    return self._kept(run)
                stopped = await self._round(run, pending, results, rounds)
                if stopped is not None:
                    return self._kept(stopped)
                rounds += 1
        except BaseException:
            if run is not None:
                run.release()
            raise

    def _kept(self, run: ProgramRun) -> ProgramRun:
        self.held.append(run)
        return run

    async def _round(self, run: ProgramRun, pending: list[ToolCall], results: list[str],
                     rounds: int) -> ProgramRun | None:
        """One round of the calls ``run`` waits for: their outputs appended to ``results`` when they are all the
        bridge's own tools; else what the program comes to now (``run`` waiting for client tools, or stopped)."""
        server = [call for call in pending if call.name in self.server_names]
        if not server:
            if rounds:
                return _stopped(run, "it waits for a client tool after calling the bridge's own tools, whose "
                                     "outputs cannot be replayed in a later request")
            return run
        if len(server) < len(pending):
            return _stopped(run, "it waits for client tools and the bridge's own tools at once")
        needs_approval = next((call for call in server if self.plan.targets[call.name].approval), None)
        if needs_approval is not None:  # a program cannot wait for the client's approval: the call is never made
            return _stopped(run, f"it calls '{needs_approval.name}', an MCP tool that needs the client's approval; "
                                 "programs call only tools that do not")
        if rounds + 1 > MAX_ROUNDS:
            return _stopped(run, f"more than {MAX_ROUNDS} rounds of calls to the bridge's tools")
        for call in server:
            results.append((await self._server_call(call)).content)
        return None

    async def _server_call(self, call: ToolCall) -> ToolResult:
        target = self.plan.targets[call.name]
        call_id, index, item = self.builder.start_server_call(target, call.arguments)
        return await self.server_job(TurnCall(call_id, call.name, call.arguments, target, index, item, "completed"))

    @property
    def _sign(self) -> ProgramSigner:
        """What fingerprints this tenant's programs (engine/tools/programs.py)."""
        return tenant_signer(self._host.sign, self.tenant)

    @property
    def _host(self) -> ProgramHosting:
        if self.host is None:  # programs are not served without a host (ServerToolServices.served)
            raise RuntimeError("programs run only where the process has a ProgramHost")
        return self.host

    async def _run(self, code: str, results: list[str], seed: int, clock_ms: int) -> ProgramRun:
        host = await self._host.host()
        return await host.run(self.tenant, code, self.names, results, seed=seed, clock_ms=clock_ms)

    def _outcome(self, call_id: str, run: ProgramRun) -> tuple[ToolResult, dict[str, Any] | None]:
        """The items a run comes to: its ``program_output`` (also returned), or the client calls it waits for."""
        if run.status == "suspended":
            self.suspended = True
            for pending in run.pending:
                self.builder.add_function_call(program_function_call(call_id, pending.name, pending.arguments))
            return ToolResult(call_id, ""), None
        output = program_output_item(call_id, run.result, run.status)
        self.builder.add_item(output)
        return ToolResult(call_id, run.result), output


async def _closed(call: TurnCall) -> ToolResult:
    raise RuntimeError("a program called a tool after its response's tools were closed")


def _stopped(run: ProgramRun, why: str) -> ProgramRun:
    """``run`` stopped by the bridge, ``why``; the stopped run holds what ``run`` held of the memory budget."""
    let_go, run.let_go = run.let_go, None
    return ProgramRun("incomplete", result=(run.result + "\n" if run.result else "") + f"Program stopped: {why}.",
                      calls=run.calls, recorded=run.recorded, limit="bridge_tools", answer_bytes=run.answer_bytes,
                      let_go=let_go)


def _output_text(item: dict[str, Any]) -> str:
    """A ``function_call_output``'s output as the program's tools return it: a string (text parts joined)."""
    output = item.get("output")
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        return "".join(str(part.get("text") or "") for part in output if isinstance(part, dict))
    return ""
