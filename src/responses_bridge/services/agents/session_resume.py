"""A session's turn outlives the process running it: resumed after ``kill -9``, a drain, or a lost replica.

What a turn keeps so another process can continue it (in the turn's record, under ``_private``, which no reader is
shown), written as the turn goes:

* ``step_input``: the input of the response in flight (absent: the turn's first response, whose input is the
  turn's own user messages, stored as its items), written before that response is started; the response chains on
  the session's ``last_response_id``, which is stored whenever a response of the turn ends with calls left open.
* ``step_response``: that response's id, written right after it is started: its stored event log says what of the
  step was done (services/responses/background_run.py keeps it).
* ``resumes``: how many times the turn was resumed, written before a resumed turn makes any call: the bound of a
  crash loop (``RESPONSES_BRIDGE_BACKGROUND_MAX_RESUMES``, the background responses' setting).
* ``client_credentials``: true once a response of the turn called the upstream with the client's own
  ``Authorization`` (no upstream key configured), stored with that response's id. It stays with the turn after it
  ends: it tells of the session's later turns too.
* ``client_authorization``: that ``Authorization``, sealed (services/responses/kept_authorization.py), kept from
  the turn's queueing to its end (completed, failed, cancelled), when it is what the model calls carry.

A turn whose calls carry the client's credentials is resumed with the kept ones: the resumed call reaches the
upstream with the same ``Authorization`` the client sent, whichever process makes it. Where none was kept
(``RESPONSES_BRIDGE_DURABLE_CLIENT_CREDENTIALS=false``, a record stored before credentials were kept, a blob the
sealing key no longer opens), a turn of a session any of whose turns recorded ``client_credentials`` is not resumed
after its process stopped: it fails saying why (``CREDENTIALS``), and so does each such turn queued behind it
(``QUEUED_CREDENTIALS``): its input was accepted, but the Authorization that came with it was held by the stopped
process only; the session goes idle and takes new input (with its credentials) as before. No model call is ever
made without the client's credentials.

Who resumes: alone on the database (SQLite, one process) the next start (:meth:`SessionService.recover`); shared
(PostgreSQL replicas, ``serve --workers``) any process whose sweep finds the session unfinished and its lease
lapsed (or let go by a drain), and takes the lease: that conditional write is what makes it one process, once. The
session's input that waits behind the turn is stored already (turn_queue.py); the resuming runner
queues it again in order, each turn exactly once.

A step whose response had already ended when the process stopped (the stop came between its end and the turn's)
is not made again: the turn ends from the stored response (:func:`~.session_ended_step.ended_step`).

What a resumed step does: the response in flight is made again, from the step's input, plus what its stored log
shows it completed: each server-side call with its result (an MCP call, a code cell, a hosted shell command and
its output, a search) is given to the model as done, never run again; a server-side call that had started but has
no result is not run again either, the model is told it was interrupted (a developer message), except the reads
that are safe to repeat (web search, file search, MCP tool listings), which are simply left to the model. What the
interrupted call had streamed stays in the session's log; an ``agent.session.turn.in_progress`` starts the
resumed step, and its events continue the session's numbering (no event type the SDK does not know, and never a
``failed`` turn that then completes).

A drain hands off: each running turn stops at its next step boundary (a server-side call's result stored, or the
response's end; at the latest at half the drain timeout, when the model call in flight is abandoned to be made
again), its lease is let go, and the session's readers here get their streams ended after the last stored event, to
resume elsewhere with ``Last-Event-ID`` or ``after``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from ...protocol.errors import APIError
from ...store.base_agents import Record
from ..responses.background_run import until_started
from .session_ended_step import ended_step
from .session_waiting import restored
from .subagents.subagents import left_open
from .traces import turn_span
from .turn_queue import (
    CLIENT_AUTHORIZATION,
    EXECUTOR_STARTED,
    QUEUED_INPUT,
    STEP_INPUT,
    STEP_RESPONSE,
    WAITING,
    QueuedTurn,
    private,
    public,
)

if TYPE_CHECKING:
    from ..responses.kept_authorization import KeptAuthorization
    from .runner_view import SessionHost, TurnRunner

log = structlog.get_logger("responses_bridge.agents")

RESUMES = "resumes"
HANDOFF_SHARE = 0.5  # of the drain timeout: how long a drain waits for its turns' next step boundary

CLIENT_ITEM_TYPES = frozenset({"message", "reasoning", "function_call", "custom_tool_call"})
"""Output items of the model's own turn: none is a server-side step with effects."""
RESULT_ITEMS = frozenset({"mcp_call", "code_interpreter_call", "web_search_call", "file_search_call",
                          "image_generation_call"})
"""Server-side items that hold their call's result once done (``*_output`` items are results too)."""
SAFE_TO_REPEAT = frozenset({"web_search_call", "file_search_call", "mcp_list_tools"})
NOT_STEPS = CLIENT_ITEM_TYPES | {"mcp_approval_request", "mcp_list_tools"}
CLIENT_CREDENTIALS = "client_credentials"
CREDENTIALS = ("The server running this turn stopped, and the turn is not resumed: its upstream call carried the "
               "client's own Authorization, which was not kept (RESPONSES_BRIDGE_DURABLE_CLIENT_CREDENTIALS is "
               "false, or the sealing key changed); configure the upstream key, or let the bridge keep it sealed, "
               "for durable turns.")
QUEUED_CREDENTIALS = ("The server stopped before this turn started, and it is not run: its upstream call would carry "
                      "the client's own Authorization, which came with its input and was not kept; send the input "
                      "again, or configure the upstream key (or let the bridge keep it sealed) for durable turns.")
RESTARTED = ("The server restarted while this turn waited for the client's tool results or decisions, which were held "
             "by the stopped process; it was not finished and will not be resumed.")
SUBAGENT_RESTARTED = ("The server restarted while this subagent's turn ran; it was not finished, and the session's "
                      "turn went on without it.")
INTERRUPTED = ("The server running this turn stopped while these tool calls were being made; they were not made "
               "again and their results are unknown (they may or may not have taken effect): {calls}.")


def is_boundary(event: dict[str, Any]) -> bool:
    """A step of the turn's response completed: a server-side call's result is in its log."""
    if event.get("type") != "response.output_item.done":
        return False
    kind = str((event.get("item") or {}).get("type"))
    return kind in RESULT_ITEMS or (kind.endswith("_output") and kind not in NOT_STEPS)


def carried(frames: list[bytes]) -> list[dict[str, Any]]:
    """What the resumed call starts from, of the interrupted response's stored frames: its finished items up to its
    last completed server-side step, and a developer message naming the server-side calls started there without a
    result (but the ones safe to repeat)."""
    done: list[dict[str, Any]] = []
    started: dict[str, dict[str, Any]] = {}
    for frame in frames:
        name = frame[7:frame.find(b"\n")] if frame.startswith(b"event: ") else b""
        if name not in (b"response.output_item.added", b"response.output_item.done"):
            continue
        item = orjson.loads(frame[frame.index(b"\ndata: ") + 7:]).get("item") or {}
        if name == b"response.output_item.added":
            started[str(item.get("id"))] = item
        else:
            done.append(item)
            started.pop(str(item.get("id")), None)
    answered = {item.get("call_id") for item in done if str(item.get("type")).endswith("_output")}
    cut = max((index for index, item in enumerate(done) if is_boundary(
        {"type": "response.output_item.done", "item": item})), default=-1)
    kept: list[dict[str, Any]] = []
    open_calls = [item for item in started.values() if item.get("type") not in NOT_STEPS]
    for index, done_item in enumerate(done):
        kind = str(done_item.get("type"))
        if kind not in NOT_STEPS and not kind.endswith("_output") and kind not in RESULT_ITEMS and \
                done_item.get("call_id") not in answered:
            open_calls.append(done_item)  # a call (a hosted shell command...) whose output never came
        elif index <= cut and kind not in ("function_call", "custom_tool_call"):  # the client's: made again
            kept.append(done_item)
    named = [_call_name(item) for item in open_calls if item.get("type") not in SAFE_TO_REPEAT]
    if named:
        kept.append({"type": "message", "role": "developer", "content": INTERRUPTED.format(calls="; ".join(named))})
    return kept


def _call_name(item: dict[str, Any]) -> str:
    kind = str(item.get("type"))
    name = item.get("name")
    label = item.get("server_label")
    said = f"{kind} '{name}'" + (f" on MCP server '{label}'" if label else "") if name else kind
    action = item.get("action")
    command = (action.get("commands") if isinstance(action, dict) else action) or item.get("code") or \
        item.get("arguments")
    return said + (f" ({str(command)[:500]})" if command else "")


async def resumed_input(runner: TurnRunner, turn: dict[str, Any], *,
                        recovered: bool = False) -> list[dict[str, Any]] | str:
    """The input of the step the turn continues from, or why it cannot be continued (its ``failed`` message);
    ``recovered``: its own process continues it after a database outage, which no crash bound counts."""
    kept = private(turn)
    limit = runner.background.max_resumes
    if int(kept.get(RESUMES) or 0) >= limit and not recovered:
        return (f"The turn was resumed {kept.get(RESUMES)} times after the server running it stopped, and did not "
                f"finish (the limit is {limit}, RESPONSES_BRIDGE_BACKGROUND_MAX_RESUMES); it is not resumed again.")
    step = kept.get(STEP_INPUT)
    if step is None:  # the first response: the turn's user messages, stored as its items
        step, after = [], None
        while True:
            page = await runner.store.page("item", tenant=runner.tenant, parent=runner.session_id,
                                           scope=turn["id"], after=after, limit=100, order="asc")
            step += [{"type": "message", "role": "user", "content": item["content"]} for item in page.data
                     if item.get("type") == "message" and item.get("role") == "user"]
            if not page.has_more or not page.data:
                break
            after = page.data[-1]["id"]
        if not step:
            return "The turn's input could not be read back from the store; send it again."
    response_id = kept.get(STEP_RESPONSE)
    frames = [] if not response_id else [frame for _, frame in await runner.background.events.after(
        response_id, -1, tenant=runner.tenant)]
    return [*step, *carried(frames)]


async def record_step(runner: TurnRunner, turn: dict[str, Any], step_input: list[dict[str, Any]]) -> None:
    """Before a later step's response starts: its input (the first step's is the turn's messages)."""
    private(turn).update({STEP_INPUT: step_input, STEP_RESPONSE: None})
    await runner.store.commit(runner.session_id, [Record("turn", turn["id"], turn, parent=runner.session_id)], [],
                              tenant=runner.tenant, **runner.events.fence)  # fenced as the turn's events


async def started_step(runner: TurnRunner, turn: dict[str, Any], response_id: str) -> None:
    """Right after a step's response started: its id, stored with the session's events so far (one write)."""
    private(turn)["response_ids"].append(response_id)
    private(turn)[STEP_RESPONSE] = response_id
    run = runner.background.runs.get(response_id)
    if run is not None and run.client_credentials:  # whether; what, only sealed (CLIENT_AUTHORIZATION)
        private(turn)[CLIENT_CREDENTIALS] = True
    await runner.events.flush([runner.turn_record(turn)])


def forget_steps(turn: dict[str, Any]) -> None:
    """A turn that ended keeps neither its queued input, nor how it was to be resumed, nor the client's credentials
    its calls carried."""
    for kept in (QUEUED_INPUT, STEP_INPUT, STEP_RESPONSE, WAITING, EXECUTOR_STARTED, CLIENT_AUTHORIZATION):
        (turn.get("_private") or {}).pop(kept, None)


async def begin_resumed(runner: TurnRunner, entry: QueuedTurn) -> list[dict[str, Any]] | None:
    """The resumed turn's step input, its resume counted and told before any call is made; None: it ended instead
    (from its step response that had ended already, :func:`~.session_ended_step.ended_step`), or failed (past the
    limit, or its input gone), saying why."""
    turn = entry.turn
    if await ended_step(runner, entry, private(turn).get(STEP_RESPONSE)):  # ended from it: no call made again
        return None
    step = await resumed_input(runner, turn, recovered=entry.recovered)
    if isinstance(step, str):
        await runner._end(entry, "failed", {"code": "server_error", "message": step}, None)
        return None
    if not entry.recovered:  # a process that stopped: counted toward the crash loop's bound
        private(turn)[RESUMES] = int(private(turn).get(RESUMES) or 0) + 1
    await runner.events.emit({"type": "agent.session.turn.in_progress", "session_id": runner.session_id,
                              "turn_id": turn["id"], "turn": public(turn)}, records=[runner.turn_record(turn)])
    return step


async def stop_response(runner: TurnRunner, response_id: str | None) -> None:
    """The turn's response stops without an end of its own: what its readers saw is stored, the rest is the
    resumed step's (services/responses/background_run.py, ``handoff``)."""
    run = runner.background.runs.get(response_id) if response_id else None
    if run is None or run.task is None or run.done:
        return
    await until_started(run)
    if not run.finishing:
        run.stop_reason = "handoff"
        run.task.cancel()
    await asyncio.wait([run.task])


def kept_credentials(kept: KeptAuthorization | None, session: dict[str, Any],
                     authorization: str | None) -> dict[str, str]:
    """What a new turn keeps of the caller's ``Authorization`` (``CLIENT_AUTHORIZATION``, sealed), from its queueing
    to its end: whichever process runs or resumes it calls the upstream with it. Nothing when the session's model's
    upstream gets a configured key instead, or keeping is off."""
    sealed = None if kept is None else kept.seal(authorization, (session.get("agent") or {}).get("model"))
    return {} if sealed is None else {CLIENT_AUTHORIZATION: sealed}


def with_kept_credentials(runner: TurnRunner, entries: list[QueuedTurn]) -> list[QueuedTurn]:
    """Each entry given the ``Authorization`` kept with its turn (none kept: None); the entries none was kept for."""
    keeper = runner.kept_authorization
    for entry in entries:
        entry.authorization = None if keeper is None else keeper.open(private(entry.turn).get(CLIENT_AUTHORIZATION))
    return [entry for entry in entries if entry.authorization is None]


async def fail_credentialed(runner: TurnRunner, entries: list[QueuedTurn]) -> None:
    """The turns a stopped process left, of a session whose model calls carry the client's own ``Authorization``,
    none kept for them: each fails saying why (the running one with ``CREDENTIALS``, the queued ones with
    ``QUEUED_CREDENTIALS``), none makes a call."""
    for entry in entries:
        message = CREDENTIALS if entry.resuming or entry.waiting else QUEUED_CREDENTIALS
        await runner._end(entry, "failed", {"code": "server_error", "message": message}, entry.turn.get("usage"))
    if entries:
        log.info("agent_session_not_resumed", session_id=runner.session_id, turns=len(entries),
                 reason="client_credentials")


async def stored_turns(runner: TurnRunner, session: dict[str, Any]) -> tuple[list[QueuedTurn], bool]:
    """The session's unfinished turns as the store holds them, in order, to run (again) here: the running one
    continued from its step, the queued ones from their stored input; a turn that waited on the client without a
    kept wait fails (``RESTARTED``), and so do the subagents a stopped turn left open. Also: whether a turn of the
    session called the upstream with the client's own Authorization."""
    entries: list[QueuedTurn] = []
    waiting: list[dict[str, Any]] = []
    credentialed = False
    after = None
    while True:
        page = await runner.store.page("turn", tenant=runner.tenant, parent=runner.session_id, after=after,
                                       limit=100, order="asc")
        for turn in page.data:
            credentialed = credentialed or bool(private(turn).get(CLIENT_CREDENTIALS))
            if turn["status"] == "waiting":
                entry_or_none = restored(turn)
                if entry_or_none is None:
                    waiting.append(turn)
                else:
                    entry_or_none.span = turn_span(session, public(turn))
                    entries.append(entry_or_none)
            elif turn["status"] in ("queued", "in_progress"):
                messages = private(turn).pop(QUEUED_INPUT, None) or []
                entry = QueuedTurn(turn, messages, None, span=turn_span(session, public(turn)))
                entry.resuming = turn["status"] == "in_progress"
                entries.append(entry)
        if not page.has_more or not page.data:
            break
        after = page.data[-1]["id"]
    for turn in waiting:
        await runner._end(QueuedTurn(turn, [], None), "failed", {"code": "server_error", "message": RESTARTED},
                          turn.get("usage"))
    if waiting or any(entry.resuming or entry.waiting for entry in entries):  # its subagents: ended
        for said, records in await left_open(runner.store, runner.session_id, {
                "code": "server_error", "message": SUBAGENT_RESTARTED}, tenant=runner.tenant):
            await runner.events.emit(said, records=records)
    return entries, credentialed


class SessionResumer:
    """The sessions' side of durability in one process: resumes (at start, by a shared sweep, on input that finds
    a stopped process's turn) and the drain's hand-off."""

    def __init__(self, service: SessionHost) -> None:
        self.service = service
        self._sweeper: asyncio.Task[None] | None = None
        self.handed_off = False

    async def resume(self, runner: TurnRunner, session: dict[str, Any]) -> None:
        """``runner`` (this process's, holding the session's lease) takes the turns a stopped process left: the
        running one continues, the queued ones run after it in order. A turn that waited for the client's tool
        results or decisions (``waiting``) waits on here, for the same calls, the session still ``requires_action``
        (session_waiting.py); one whose record keeps no wait (stored before waits were kept) fails as before."""
        entries, credentialed = await stored_turns(runner, session)
        unkept = with_kept_credentials(runner, entries)
        if credentialed and unkept:  # nobody could make their calls again: they fail, the others go on
            await fail_credentialed(runner, unkept)
            entries = [entry for entry in entries if entry.authorization is not None]
        if not entries:
            session.update(status="idle", required_actions=[], last_active_at=int(time.time()))
            await runner.events.emit({"type": "agent.session.idle", "session": public(session)},
                                     records=[runner.session_record(session)])
            return
        if session["status"] == "requires_action" and not entries[0].waiting:
            session.update(status="in_progress", required_actions=[])
            await runner.events.emit({"type": "agent.session.in_progress", "session": public(session)},
                                     records=[runner.session_record(session)])
        runner.queue = entries + runner.queue
        log.info("agent_session_resumed", session_id=runner.session_id, turns=len(entries),
                 running=sum(1 for entry in entries if entry.resuming), waiting=entries[0].waiting)
        runner.task = asyncio.create_task(runner._work(), name=f"agent-session:{runner.session_id}")

    # --- shared database: the sweep ---------------------------------------------------------------------

    def start_sweeps(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_forever(), name="agent-sessions:sweep")

    async def _sweep_forever(self) -> None:
        period = max(self.service.leases.lease_seconds / 3, 0.2)
        while not self.handed_off:
            try:
                await self.sweep()
            except Exception:  # the next sweep retries
                log.warning("agent_session_sweep_failed", exc_info=True)
            await asyncio.sleep(period)

    async def sweep(self) -> int:
        """Take every unfinished session no live process holds (its lease lapsed or let go) and resume it here;
        a session another process holds is left alone (its lease is its own)."""
        service, taken = self.service, 0
        for tenant, stored in await service.store.unfinished_sessions():
            session_id = stored["id"]
            if session_id in service.runners or self.handed_off:
                continue
            if not await service.store.claim_session(session_id, service.leases.owner,
                                                     seconds=service.leases.lease_seconds):
                continue
            async with service._locked(session_id):
                try:
                    runner = await service._runner(session_id, tenant)  # resumes what the session left
                except (APIError, asyncio.CancelledError):
                    continue
                if not runner.busy:
                    service._idle(runner)
            taken += 1
        return taken

    # --- the drain --------------------------------------------------------------------------------------

    async def hand_off(self, drain_timeout: float) -> None:
        """Every running turn stops at its next step boundary (or at ``HANDOFF_SHARE`` of the drain timeout), its
        response stopped without an end, its session's events stored and its lease let go; every stream of a
        session here ends after the last stored event."""
        self.handed_off = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        runners = list(self.service.runners.values())
        for runner in runners:
            runner.on_idle = None  # not let go as idle: handed off below
            runner.handing_off = True
            if runner.current is not None:
                runner.current.calls.wake()
        tasks = [runner.task for runner in runners if runner.task is not None and not runner.task.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=drain_timeout * HANDOFF_SHARE)
        for runner in runners:
            response_id = runner.response_id
            if runner.task is not None and not runner.task.done():
                runner.task.cancel()  # mid-step: the model call in flight is made again where it resumes
                await asyncio.wait([runner.task])
            with contextlib.suppress(Exception):
                await stop_response(runner, response_id)
            try:
                await runner.events.flush()
                if self.service.shared:
                    await self.service.store.release_session(runner.session_id, self.service.leases.owner)
            except Exception:  # its lease lapses; what was not stored is made again
                log.warning("agent_session_handoff_failed", session_id=runner.session_id, exc_info=True)
            log.info("agent_session_handed_off", session_id=runner.session_id)
        self.service.runners.clear()
        for live in list(self.service.events.logs.values()):
            with contextlib.suppress(Exception):
                await live.flush()
            live.close()  # its readers end after the last stored event

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
