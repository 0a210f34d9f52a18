"""A session's turns, one at a time: each a background response of the bridge's own run (the driver, its tools and
persistence, services/responses/background.py) over the session's agent, chained on the previous turn's response
(``previous_response_id``), so the turns share the session's context. Its events are followed and told in the
session's log (protocol/agents/events.py); the turn loop learns nothing about agents.

Input that arrives while a turn runs is queued as a turn of its own (``queued``), run in order once the current one
ends; a cancel ends the running turn (its response cancelled) and every queued one.

A queued turn's input waits in the store, not in memory (turn_queue.py). A database outage pauses the turns, never
fails them (session_outage.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import structlog

from ... import ids
from ...engine.tools.multi_agent import ROOT_AGENT
from ...observability import timing, tracing
from ...protocol.agents.automations_tool import FUNCTION_NAME
from ...protocol.agents.events import (
    CLIENT_CALL,
    TERMINAL,
    Shown,
    add_usage,
    token_usage,
    translate,
    turn_error,
    user_item,
)
from ...protocol.errors import APIError
from ...store.base_agents import AgentStore, Record
from ...store.records import LeaseLost
from ...store.transient import is_transient
from ..responses.background import BackgroundService
from ..responses.background_frames import split_frames
from ..responses.kept_authorization import KeptAuthorization
from .async_calls import async_functions, async_results, started
from .auto_review import auto_review
from .computer.calls import ComputerUse
from .environments.environments import Published, SessionEnvironments, expired_event, not_kept
from .environments.mcp import SessionMCP
from .events import SessionLog
from .executor_calls import run_on_executor
from .runner_view import ResponseStarter
from .session_outage import fail_session, let_go, lost_meanwhile, recover
from .session_resume import (
    begin_resumed,
    forget_steps,
    is_boundary,
    kept_credentials,
    record_step,
    started_step,
    stop_response,
)
from .session_waiting import answer_call, decide, decide_computer, kept_usage, wait_for_results
from .subagents.contexts import kept_subagents
from .subagents.tree import SubagentTree
from .traces import TurnTrace, turn_span
from .turn_queue import LOST_INPUT, MAX_QUEUED_TURNS, QUEUED_INPUT, HandOff, QueuedTurn, new_turn, public, queued_input
from .turn_request import turn_request
from .vaults.vaults import VaultService, credentialed

log = structlog.get_logger("responses_bridge.agents")



EXPIRED = ("The session's environment expired (its container was unused too long or deleted); start a new "
           "session.")


class SessionRunner:
    """The turns of one session in this process: a queue and the task working it."""

    def __init__(self, store: AgentStore, background: BackgroundService, start: ResponseStarter,
                 events: SessionLog, session_id: str, tenant: str,
                 environments: SessionEnvironments | None = None) -> None:
        self.store = store
        self.environments = environments
        self.background = background
        self.start = start
        self.events = events
        self.session_id = session_id
        self.tenant = tenant
        self.queue: list[QueuedTurn] = []
        self.current: QueuedTurn | None = None
        self.response_id: str | None = None
        self.cancelling = False
        self.task: asyncio.Task[None] | None = None
        self.on_idle: Callable[[SessionRunner], None] | None = None  # no turn left: the service lets go of it
        self.on_lost: Callable[[str], None] | None = None  # its lease went to another process: the service lets go
        self.recovers = False  # a database outage is waited out, the turns resumed (session_outage.py)
        # on a shared database: raises LeaseLost when another process holds the session now (session_outage.py)
        self.still_ours: Callable[[], Awaitable[None]] | None = None
        # the session's lock (the service's): an update of the session never crosses a change made here
        self.locked: Callable[[], contextlib.AbstractAsyncContextManager[Any]] = contextlib.nullcontext
        self.vaults: VaultService | None = None  # where an MCP tool's ``credential_id`` is opened (the service's)
        self.mcp: SessionMCP | None = None  # the MCP servers in its environment, with metadata or required
        # the agent's ``automations`` tool, run here (the service's): tenant, session, call id, arguments -> output
        self.automations: Callable[[str, str, str, str], Awaitable[str]] | None = None
        self.computer: ComputerUse | None = None  # the agent's ``computer_use`` tool, run here (the service's)
        self._may_idle = False  # the running turn's end may leave the session idle (no other turn queued)
        self._idled = False  # it did: the turn's end told agent.session.idle too
        self.handing_off = False  # a drain: stop at the next step boundary (session_resume.py)
        # keeps the caller's Authorization sealed with each turn whose model calls carry it (the service's): None
        # keeps nothing, and such a turn is not resumed after its process stopped
        self.kept_authorization: KeptAuthorization | None = None

    @property
    def busy(self) -> bool:
        return self.current is not None or bool(self.queue)

    async def session(self) -> dict[str, Any]:
        session = await self.store.get("session", self.session_id, tenant=self.tenant)
        if session is None:
            raise asyncio.CancelledError  # deleted meanwhile
        return session

    async def save_session(self, session: dict[str, Any]) -> None:
        """Stored, fenced by the session's lease as the turn's events are (events.py ``SessionLog.fence``)."""
        await self.store.commit(self.session_id, [Record("session", session["id"], session,
                                                         parent=session["agent"]["id"])], [],
                                tenant=self.tenant, **self.events.fence)

    @contextlib.asynccontextmanager
    async def _changing(self, entry: QueuedTurn | None = None) -> AsyncIterator[dict[str, Any]]:
        """The session as stored, to change and store again inside the block, under the session's lock; with
        ``entry``, the changes its turn's last response made are applied first."""
        async with self.locked():
            session = await self.session()
            if entry is not None and entry.changes is not None:
                changes, entry.changes = entry.changes, None
                if changes["last_response_id"]:
                    session.setdefault("_private", {})["last_response_id"] = changes["last_response_id"]
                session["usage"] = add_usage(session.get("usage"), changes["usage"])
            yield session

    def session_record(self, session: dict[str, Any]) -> Record:
        return Record("session", session["id"], session, parent=session["agent"]["id"])

    def turn_record(self, turn: dict[str, Any]) -> Record:
        return Record("turn", turn["id"], turn, parent=self.session_id)

    def item_record(self, item: dict[str, Any]) -> Record:
        return Record("item", str(item["id"]), item, parent=self.session_id, scope=item["turn_id"])

    async def submit(self, session: dict[str, Any], content: list[list[dict[str, Any]]],
                     authorization: str | None) -> None:
        """Queue one turn of the user's messages (``content``: each message's parts) and make sure it runs."""
        self.check_room(1)
        turn = new_turn(session)
        messages = [user_item(ids.message_id(), parts, turn["id"]) for parts in content]
        kept = kept_credentials(self.kept_authorization, session, authorization)  # sealed, to the turn's end
        if kept:
            turn["_private"] = dict(kept)
        waiting = {**turn, "_private": {QUEUED_INPUT: messages, **kept}}  # the input waits in the store, not here
        entry = QueuedTurn(turn, [], authorization, span=turn_span(session, turn))
        self.queue.append(entry)
        try:  # stored before it is acknowledged (retried through an outage: session_outage.py)
            await self.events.emit({"type": "agent.session.turn.created", "session_id": self.session_id,
                                    "turn_id": turn["id"], "turn": public(turn)},
                                   records=[self.turn_record(waiting)])
        except Exception as exc:  # a cancelled request's write may have been stored: its turn stays queued here
            with contextlib.suppress(ValueError):  # not accepted: never run from memory alone
                self.queue.remove(entry)
            if is_transient(exc):
                raise APIError(503, "The session's input could not be stored: the database is unavailable. It was "
                               "not accepted; send it again.", type="server_error", code="store_unavailable") \
                    from exc
            if isinstance(exc, LeaseLost):  # the session went on elsewhere while the database was away
                if self.on_lost is not None:  # the next input makes a runner that resumes it from the store
                    self.on_lost(self.session_id)
                raise APIError(409, "This session's lease lapsed while the database was unavailable; its turns go "
                               "on from what is stored. Send its input again.", type="invalid_request_error",
                               param="session_id", code="session_busy") from exc
            raise
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._work(), name=f"agent-session:{self.session_id}")

    def check_room(self, turns: int) -> None:
        if len(self.queue) + turns > MAX_QUEUED_TURNS:
            raise APIError(429, f"A session keeps at most {MAX_QUEUED_TURNS} turns queued; wait for them or cancel.",
                           type="invalid_request_error", param="events", code="too_many_queued_turns")

    async def cancel(self) -> None:
        """End the running turn and every queued one."""
        queued, self.queue = self.queue, []
        for entry in queued:
            await self._end(entry, "cancelled", None, None)
        if self.current is not None:
            self.cancelling = True
            self.current.calls.wake()
            if self.response_id is not None:
                with contextlib.suppress(APIError):  # it ended meanwhile: its end stands
                    await self.background.cancel(self.response_id, tenant=self.tenant)

    async def _work(self) -> None:
        try:
            while True:
                try:
                    await self._turns()
                    return
                except LeaseLost:
                    raise
                except Exception as exc:
                    if not (self.recovers and is_transient(exc)):
                        raise
                    await recover(self, exc)  # the turns, again as the store holds them
        except asyncio.CancelledError:
            return
        except HandOff:
            await stop_response(self, self.response_id)
            return
        except LeaseLost:  # a write refused, or the lease lapsed: the session is another process's now, nothing
            await let_go(self)  # more is stored here; it goes on from what is stored
        except Exception as exc:
            if await lost_meanwhile(self):  # e.g. its write collided with the new owner's: not a failure of ours
                await let_go(self)
                return
            log.exception("agent_session_failed", session_id=self.session_id)
            await fail_session(self, exc)
        finally:
            self.current, self.response_id = None, None
            if not self.queue and self.on_idle is not None:
                self.on_idle(self)

    async def _turns(self) -> None:
        """Run the queued turns in order, then leave the session idle."""
        while self.queue and not self.handing_off:
            while self.queue and not self.handing_off:
                self.current = self.queue.pop(0)
                self.cancelling, self._idled, self._may_idle = False, False, True
                try:
                    await self._kept(self.current)
                finally:
                    self._may_idle = False
                self.current, self.response_id = None, None
            if self._idled or self.handing_off:  # the last turn's end made the session idle, in the same write
                continue
            async with self._changing() as session:
                if session["status"] == "in_progress":
                    session["status"] = "idle"
                    session["last_active_at"] = int(time.time())
                    await self.events.emit({"type": "agent.session.idle", "session": public(session)},
                                           records=[self.session_record(session)])
            # input that came while the session went idle is run now: nothing is awaited from the last look
            # at the queue to the task's end, so a submit either sees this task done or is seen here

    async def _kept(self, entry: QueuedTurn) -> None:
        """The turn, the spans it makes kept as its trace (traces.py)."""
        clock = timing.begin()  # the turn's clock: its responses' timings join it (observability/timing.py)
        try:
            with tracing.keep(*entry.span) as kept:
                entry.trace = TurnTrace(kept, timing.current())
                await self._run(entry)
        finally:
            timing.end(clock)

    async def _run(self, entry: QueuedTurn) -> None:
        turn = entry.turn
        if entry.waiting:  # a stopped process's turn waiting on the client: it waits on here (session_waiting.py)
            entry.review = (session := await self.session()).get("review")
            await self._steps(entry, session, [])
            return
        if entry.resuming:  # a stopped process's turn, continued from its step in flight (session_resume.py)
            resumed = await begin_resumed(self, entry)
            if resumed is not None or entry.wait_first:  # the session's review mode as it is now (not kept)
                entry.review = (session := await self.session()).get("review")
                await self._steps(entry, session, resumed or [])
            return
        if not await queued_input(self.store, entry, self.tenant):
            await self._end(entry, "failed", {"code": "server_error", "message": LOST_INPUT}, None)
            return
        records = [self.turn_record(turn), *(self.item_record(message) for message in entry.messages)]
        async with self._changing() as session:
            if session["status"] != "in_progress":
                session["status"] = "in_progress"
                records.append(self.session_record(session))
                await self.events.emit({"type": "agent.session.in_progress", "session": public(session)})
            turn["status"], turn["started_at"] = "in_progress", int(time.time())
            entry.review = session.get("review")  # the turn keeps its mode if the session's changes
            await self.events.emit({"type": "agent.session.turn.in_progress", "session_id": self.session_id,
                                    "turn_id": turn["id"], "turn": public(turn)})
            for message in entry.messages:
                await self.events.emit({"type": "agent.session.turn.item.added", "session_id": self.session_id,
                                        "turn_id": turn["id"], "output_index": None, "item": message})
            await self.events.flush(records)  # the turn, its input and the events so far: one write
        failed = session.get("_private", {}).get("environment_error")
        if failed is not None:  # its packages could not be installed at its start (environments/environments.py)
            await self._end(entry, "failed", {"code": "sandbox_error", "message": failed["message"]}, None)
            return
        expired = await expired_event(self.environments, session, turn["id"], tenant=self.tenant,
                                      session_id=self.session_id)
        if expired is not None:
            await self.events.emit(expired)
            await self._end(entry, "failed", {"code": "sandbox_error", "message": EXPIRED}, None)
            return
        await self._steps(entry, session, [{"type": "message", "role": "user", "content": message["content"]}
                                           for message in entry.messages])

    async def _steps(self, entry: QueuedTurn, session: dict[str, Any], turn_input: list[dict[str, Any]]) -> None:
        """The turn's responses from ``turn_input`` on, each step recorded as it starts (session_resume.py)."""
        turn, first = entry.turn, not (entry.resuming or entry.waiting)
        # the skills and AGENTS.md of the environment's capability directories, as they are when the turn starts
        capabilities = await self.environments.capabilities(session, tenant=self.tenant) \
            if self.environments is not None else ""
        total: dict[str, Any] | None = kept_usage(turn) if entry.waiting or entry.wait_first else None
        if entry.waiting or entry.wait_first:  # a stopped process's wait, or the one it was about to begin
            await run_on_executor(self, entry, session)  # on an exec-server connected already
            answered = await wait_for_results(self, entry, total)
            if answered is None:
                await self._end(entry, "cancelled", None, total)
                return
            turn_input, session = answered, await self.session()
        while True:  # one response, then another with the client's tool results, until no call is left open
            try:
                if self.environments is not None:  # the container's vault credentials as they are now
                    await self.environments.refresh_credentials(session, tenant=self.tenant)
                turn_input = [*turn_input, *await async_results(self, session)]  # async calls' results
                entry.kept = await kept_subagents(self.store, session, tenant=self.tenant)  # resumable ones
                request = await credentialed(self.vaults, session, turn_request(session, turn_input, capabilities,
                                                                                  entry.kept), self.tenant)
                if self.handing_off:
                    raise HandOff
                if not first:  # the first step's input is the turn's messages, stored with its start
                    await record_step(self, turn, turn_input)
                overlays = await self.mcp.prepare(session, request, tenant=self.tenant) if self.mcp else {}
                self.response_id = await self.start(request, self.tenant, entry.authorization, overlays)
            except APIError as error:
                await self._end(entry, "failed", turn_error({"code": error.code, "message": error.message},
                                                            error.status), total)
                return
            await started_step(self, turn, self.response_id)
            first = False
            if self.cancelling:
                with contextlib.suppress(APIError):
                    await self.background.cancel(self.response_id, tenant=self.tenant)
            response = (await self._follow(entry, session)).get("response") or {}
            usage = add_usage(token_usage(response.get("usage")), entry.review_usage)  # with its reviews'
            entry.review_usage = None
            total = add_usage(total, usage)
            status = str(response.get("status") or "failed")
            # stored with the turn's end, or when it waits
            entry.changes = {"usage": usage, "last_response_id": self.response_id
                             if status in ("completed", "incomplete") else None}
            if status != "completed" or not entry.calls.pending:
                break
            await run_on_executor(self, entry, session)  # a self_hosted session's commands, on its exec-server
            answered = await wait_for_results(self, entry, total)
            if answered is None:
                await self._end(entry, "cancelled", None, total)
                return
            turn_input = answered
            session = await self.session()
        if status == "completed":
            await self._end(entry, "completed", None, total)
        elif status == "cancelled":
            await self._end(entry, "cancelled", None, total)
        elif status == "incomplete":
            reason = (response.get("incomplete_details") or {}).get("reason")
            code = "max_output_tokens" if reason == "max_output_tokens" else "context_length_exceeded"
            await self._end(entry, "failed", {"code": code, "message": f"The turn ended incomplete: {reason}."},
                            total)
        else:
            await self._end(entry, "failed", turn_error(response.get("error")), total)

    async def tool_result(self, result: dict[str, Any], session: dict[str, Any] | None = None) -> None:
        """A client's result for an open call of the running turn, or for an ``async`` call (session_waiting.py)."""
        await answer_call(self, result, session)

    async def approval(self, result: dict[str, Any]) -> None:
        """The client's decision on an MCP call the running turn holds (session_waiting.py)."""
        await decide(self, result)

    async def computer_approval(self, answer: dict[str, Any]) -> None:
        """The client's answer to a desktop's approval request the running turn holds (session_waiting.py)."""
        await decide_computer(self, answer)

    async def _follow(self, entry: QueuedTurn, session: dict[str, Any]) -> dict[str, Any]:
        """Tell the turn's response events in the session's log (``session``: as the response's request was made
        from it); its terminal event."""
        assert self.response_id is not None
        turn_id, shown = entry.turn["id"], Shown()
        final: dict[str, Any] = {}
        tree = SubagentTree(session, turn_id, entry.kept) if session["agent"]["multi_agent"]["enabled"] else None
        asynchronous = async_functions(session)
        async for data in self.background.events_after(self.response_id, -1, tenant=self.tenant):
            for frame in split_frames(data):
                start = frame.find(b"data: ")
                if start < 0:
                    continue
                event = orjson.loads(frame[start + 6:])
                if event.get("type") in TERMINAL:
                    if self.handing_off and event.get("type") == "response.failed":
                        raise HandOff  # the drain ended it under us: the step is made again elsewhere
                    final = event
                    continue
                if self.computer is not None and event.get("type") == "response.output_item.done" and \
                        (event.get("item") or {}).get("type") == "computer_call" and \
                        (event["item"].get("agent") or {}).get("agent_name", ROOT_AGENT) == ROOT_AGENT:
                    await self.computer.call(self, entry, session, event["item"],  # on the session's desktop
                                             int(event.get("output_index") or 0))
                    continue
                told = tree.take(event) if tree is not None else None
                if told is not None:  # the subagents' doings, told as the session's subagents and their turns
                    for said_by_tree, records in told:
                        await self.events.emit(said_by_tree, records=records or None)
                    continue
                said, item = translate(event, self.session_id, turn_id, shown)
                if item is not None and item["type"] == "function_call" and item["name"] == FUNCTION_NAME and \
                        any(tool["type"] == "automations" for tool in (await self.session())["agent"]["tools"]):
                    await self._automate(entry, item)  # the bridge's own function: no item, no client call
                    continue
                if item is not None and item["type"] == "function_call" and item["name"] in asynchronous:
                    await started(self, entry, item, said)  # the turn goes on without its result
                    continue
                if item is not None and item["type"] == "function_call":
                    entry.calls.opened(item)  # before the client can see it: its result is expected from now
                    entry.trace.call_opened(str(item["call_id"]), str(item["name"]))
                elif item is not None and CLIENT_CALL in item:  # a command the client runs (self_hosted)
                    client_call = item.pop(CLIENT_CALL)
                    entry.calls.opened({**client_call, "command_item": item})
                    entry.trace.call_opened(str(client_call["call_id"]), "shell")
                elif event.get("type") == "response.output_item.done" and \
                        (event.get("item") or {}).get("type") == "mcp_approval_request":
                    held = {**event["item"], "turn_id": turn_id}  # a call held for the client's word
                    if entry.review == "auto_review":  # judged by a model call, never asked
                        await auto_review(self, entry, session, held)
                    else:
                        entry.calls.asked(held)
                if said is not None:  # a finished item is stored with the event that shows it
                    await self.events.emit(said, records=None if item is None else [self.item_record(item)])
                if self.handing_off and is_boundary(event):
                    raise HandOff
        for said_by_tree, records in tree.finish() if tree is not None else ():
            await self.events.emit(said_by_tree, records=records or None)
        return final

    async def _automate(self, entry: QueuedTurn, call: dict[str, Any]) -> None:
        """The ``automations`` tool's call, made now; its output goes to the turn's next response."""
        arguments = orjson.dumps(call["arguments"]).decode() if not isinstance(call["arguments"], str) \
            else call["arguments"]
        output = "The automation was not created: this server makes no automations." if self.automations is None \
            else await self.automations(self.tenant, self.session_id, str(call["call_id"]), arguments)
        entry.calls.made(str(call["call_id"]), output)

    async def _end(self, entry: QueuedTurn, status: str, error: dict[str, Any] | None,
                   usage: dict[str, Any] | None) -> None:
        turn = entry.turn
        forget_steps(turn)  # its queued input, and how it was to be resumed, go
        turn.update(status=status, error=error, usage=usage, completed_at=int(time.time()))
        event = {"type": f"agent.session.turn.{status}", "session_id": self.session_id, "turn_id": turn["id"],
                 "turn": public(turn), "usage": usage}
        trace = entry.trace.record(self.session_id, turn, usage)  # published with the turn's end, in one write
        traces = [trace] if trace is not None else []
        publishing = status == "completed" and self.environments is not None
        # the last turn of the queue: the session's idle is stored with the turn's end, one write and one read of
        # the session instead of two each
        idling = self._may_idle and entry is self.current and not self.queue
        if entry.changes is None and not publishing and not idling:
            await self.events.emit(event, records=[self.turn_record(turn), *traces])
            return
        async with self._changing(entry) as session:  # with the session's state after the turn's last response
            published = Published() if self.environments is None or status != "completed" else \
                await self.environments.publish(session, turn["id"], tenant=self.tenant)
            records = [self.turn_record(turn), self.session_record(session), *published.records, *traces]
            told = not_kept(self.session_id, published)  # files not kept for the storage limit, before the end
            if not (idling and session["status"] == "in_progress" and not self.queue):
                await self.events.emit_together([*told, event], records=records)
                return
            session["status"], session["last_active_at"] = "idle", int(time.time())
            self._idled = True
            idle = {"type": "agent.session.idle", "session": public(session)}
            await self.events.emit_together([*told, event, idle], records=records)
