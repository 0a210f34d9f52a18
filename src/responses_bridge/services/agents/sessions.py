"""Sessions of the Agents API (``client.beta.agents.sessions``): create, retrieve, update, list, delete; input and
cancel events in (with ``Idempotency-Key``); the event stream out; turns and items. A session's turns run in
turns.py, its events in events.py.

Served: the ``none`` environment (the model alone, no workspace), ``openai_hosted`` (a container for the
session's life, the hosted shell over it, the files its turns leave as artifacts:
services/agents/environments/environments.py) and ``self_hosted`` (the client runs the commands), agents whose tools are
the client's own functions (their calls wait for ``tool_result`` events: ``requires_action``) and MCP servers over HTTP,
with a credential of the session's vaults (``vault_ids``), and the agent's subagents (``multi_agent``: each turn's
response runs the bridge's tree, told as the session's subagents in services/agents/subagents/tree.py), and
``computer_use`` on the environment's desktop (computer/). Other tools are
refused with a 400 naming what is not served yet: never accepted and silently dropped.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

from ... import ids
from ...protocol.agents.agents import SESSION_AGENT_FIELDS, apply_config, default_config, require_model
from ...protocol.agents.computer_approvals import redacted_body
from ...protocol.agents.inputs import (
    MAX_EVENTS_PER_CALL,
    cache_options,
    check_environment,
    check_environment_computer,
    check_environment_mcp,
    check_servable,
    first_input,
    has_desktop,
    input_event,
    known,
    not_served,
    review_mode,
    session_tools,
)
from ...protocol.containers.environments import hosted_plan, self_hosted
from ...protocol.errors import APIError, invalid_request, not_found
from ...protocol.lists import list_of
from ...protocol.metadata import check_metadata
from ...store.base_agents import AgentStore
from ...store.owners import new_owner_id
from ..containers.containers import ContainerService
from ..pagination import page_errors
from ..responses.background import BackgroundService
from ..responses.kept_authorization import KeptAuthorization
from .agents import AgentService
from .computer.calls import ComputerUse
from .environments.environments import SessionEnvironments, environment_state, session_not_found
from .environments.mcp import SessionMCP
from .environments.templates import TemplateService
from .events import SessionEvents, replayed
from .leases import SessionLeases, SessionLock
from .runner_view import ResponseStarter
from .session_outage import lease_check, retrying_store
from .session_resume import SessionResumer
from .turn_queue import public, stored_response_ids
from .turns import SessionRunner
from .vaults.mcp_secrets import seal_tools
from .vaults.vaults import VaultService

MAX_SESSIONS_PER_TENANT = 100_000
POLL_SECONDS = 1.0  # a reader of a session another process runs reads the store this often
SESSION_FIELDS = ("environment", "agent", "agent_id", "input", "metadata", "prompt_cache_options", "review",
                  "stream", "stream_options", "vault_ids")
UPDATE_FIELDS = ("agent", "metadata", "prompt_cache_options", "review")


class SessionService:
    def __init__(self, store: AgentStore, agents: AgentService, background: BackgroundService,
                 start: ResponseStarter, containers: ContainerService | None = None, *,
                 vaults: VaultService | None = None) -> None:
        # every read and write waits out a database outage (session_outage.py); the leases' own calls do not
        self.store = retrying_store(store, background.store_retry)
        self.environments = SessionEnvironments(store, containers, vaults)
        self.templates: TemplateService | None = None  # ``environment_template_id`` (environment_routes.py sets it)
        self.agents = agents
        self.background = background
        self.start = start
        self.vaults = vaults  # a session's ``vault_ids`` and its MCP tools' ``credential_id`` (vaults/vaults.py)
        self.mcp: SessionMCP | None = None  # MCP servers in the environment, with metadata, required (the door's)
        # the agents' ``automations`` tool (services/agents/automations/automations.py sets it): tenant, session, call
        # id, arguments
        self.agent_automations: Callable[[str, str, str, str], Awaitable[str]] | None = None
        # the agents' ``computer_use`` tool on the sessions' desktops (computer/calls.py; the door sets it)
        self.computer: ComputerUse | None = None
        # several workers or replicas on one database: a session's turns run where its lease is (claim_session)
        self.shared = background.leases.shared
        self.leases = SessionLeases(store, background.lease_owner or new_owner_id(), background.leases.lease_seconds,
                                    on_lost=self._lost)
        self.events = SessionEvents(self.store, poll=POLL_SECONDS if self.shared else None)
        self.runners: dict[str, SessionRunner] = {}
        self._locks: dict[str, SessionLock] = {}
        self.resumer = SessionResumer(self)  # turns a stopped process left, and the drain's hand-off
        # the caller's Authorization kept sealed with each turn whose model calls carry it (the door sets it from
        # the runtime's); None: nothing kept, and such turns are not resumed after their process stopped
        self.kept_authorization: KeptAuthorization | None = None

    # --- sessions ------------------------------------------------------------------------------------------

    async def create(self, body: dict[str, Any], *, tenant: str, authorization: str | None) -> dict[str, Any]:
        known(body, SESSION_FIELDS, "")
        if self.templates is not None:
            body = {**body, "environment": await self.templates.resolve(body.get("environment"), tenant=tenant)}
        kind = check_environment(body.get("environment"))
        hosted = hosted_plan(body["environment"]) if kind == "openai_hosted" else None
        agent = await self._agent(body, tenant)
        check_environment_mcp(agent["tools"], kind)
        if hosted is None or hosted.environment_id is None:  # an existing environment's desktop: its own say
            check_environment_computer(agent["tools"], hosted is not None and hosted.desktop)
        check_metadata(body.get("metadata"))
        stream = body.get("stream")
        if stream not in (None, True, False):
            raise invalid_request("Invalid type for 'stream': expected a boolean.", param="stream",
                                  code="invalid_type")
        if body.get("stream_options") is not None and stream is not True:
            raise invalid_request("'stream_options' is only allowed when 'stream' is true.", param="stream_options",
                                  code="invalid_value")
        vault_ids = await self._vault_ids(body.get("vault_ids"), agent, tenant)
        content = first_input(body, kind)
        if await self.store.count("session", tenant=tenant) >= MAX_SESSIONS_PER_TENANT:
            raise APIError(429, f"A project may keep at most {MAX_SESSIONS_PER_TENANT} sessions; delete some first.",
                           type="invalid_request_error", code="session_limit_reached")
        now = int(time.time())
        session_id = ids.new_id("sess")
        if kind == "self_hosted":
            environment = self_hosted(body["environment"], session_id)
        elif hosted is not None:
            environment = await self.environments.provision(session_id, hosted, tenant=tenant, vault_ids=vault_ids)
        else:
            environment = {"type": "none"}
        session: dict[str, Any] = {
            "id": session_id, "object": "agent.session", "agent": agent, "created_at": now,
            "environment": environment, "error": None, "last_active_at": now,
            "metadata": dict(body.get("metadata") or {}), "required_actions": [], "status": "idle", "usage": None,
            "vault_ids": vault_ids, "prompt_cache_options": cache_options(body.get("prompt_cache_options")),
        }
        review = review_mode(body.get("review"))
        if review is not None:
            session["review"] = review
        try:
            runner = await self._runner(session["id"], tenant)
            await runner.events.emit({"type": "agent.session.created", "session": public(session)},
                                     records=[runner.session_record(session)])
        except BaseException:
            if hosted is not None:  # never a container without its session
                await self.environments.release(session, tenant=tenant)
            raise
        if hosted is not None:  # made with the session: pending, its packages installed, then ready (or failed)
            await self._environment_event(runner, session_id, environment_state(environment["id"], "pending"))
            error = await self.environments.install(session, hosted, tenant=tenant)
            state = environment_state(environment["id"], "failed" if error else "ready", error)
            await self._environment_event(runner, session_id, state,
                                          records=[runner.session_record(session)] if error else None)
        if content is not None:  # its first turn, queued: the session is in progress from its answer on
            async with self._locked(session_id):
                await runner.submit(session, content, authorization)
                await self._in_progress(runner, session)
        return public(session)

    @staticmethod
    async def _in_progress(runner: SessionRunner, session: dict[str, Any]) -> None:
        """An idle session that was just given a turn is in progress, stored so (under the session's lock, which
        its turn's start waits for, and which then finds it so and says nothing more): an answer or a retrieve
        right after the input never says ``idle`` while the turn waits to start."""
        if session["status"] == "idle":
            session["status"] = "in_progress"
            await runner.events.emit({"type": "agent.session.in_progress", "session": public(session)},
                                     records=[runner.session_record(session)])

    @staticmethod
    async def _environment_event(runner: SessionRunner, session_id: str, state: dict[str, Any],
                                 records: list[Any] | None = None) -> None:
        await runner.events.emit({"type": f"agent.session.environment.{state['status']}", "session_id": session_id,
                                  "turn_id": None, "environment": state}, records=records)

    async def _vault_ids(self, value: Any, agent: dict[str, Any], tenant: str) -> list[str]:
        """The session's vaults (the tenant's own), and every MCP tool's ``credential_id`` found in them for that
        tool's server, checked before the session starts (a 400 naming the tool, never a failed first turn)."""
        if self.vaults is None:
            if value:
                raise not_served("Vaults ('vault_ids')", "vault_ids")
            return []
        vault_ids = await self.vaults.check_session_vaults(value, tenant=tenant)
        await self.check_credentials(agent, vault_ids, tenant)
        return vault_ids

    async def check_credentials(self, agent: dict[str, Any], vault_ids: list[str], tenant: str) -> None:
        for index, tool in enumerate(agent["tools"]):
            if tool["type"] == "mcp" and tool.get("credential_id"):
                if self.vaults is None:
                    raise not_served("A vault credential for an MCP server ('credential_id')",
                                     f"agent.tools[{index}].credential_id")
                await self.vaults.check_mcp_credential(vault_ids, tool["credential_id"],
                                                       tool["transport"]["server_url"], tenant=tenant,
                                                       param=f"agent.tools[{index}].credential_id")

    async def _agent(self, body: dict[str, Any], tenant: str) -> dict[str, Any]:
        """The session's agent: the saved one (``agent_id``) with ``agent``'s overrides, or ``agent`` alone."""
        overrides = body.get("agent")
        if overrides is not None and not isinstance(overrides, dict):
            raise invalid_request("Invalid type for 'agent': expected an object.", param="agent",
                                  code="invalid_type")
        agent_id = body.get("agent_id")
        if agent_id is not None:
            if not isinstance(agent_id, str):
                raise invalid_request("Invalid type for 'agent_id': expected a string.", param="agent_id",
                                      code="invalid_type")
            base = await self.agents.stored(agent_id, tenant=tenant)  # its MCP transports' secrets still sealed
        elif overrides is None:
            raise invalid_request("Missing required parameter: 'agent' or 'agent_id'.", param="agent",
                                  code="missing_required_parameter")
        else:
            base = {**default_config(), "id": ids.new_id("agent")}
        config = seal_tools(apply_config(base, overrides or {}, SESSION_AGENT_FIELDS, prefix="agent."),
                            self.agents.sealer)
        require_model(config, "agent.model")
        check_servable(config)
        return {"id": base["id"], "name": base.get("name"),
                **{key: config[key] for key in SESSION_AGENT_FIELDS}, "tools": session_tools(config["tools"])}

    async def get(self, session_id: str, *, tenant: str) -> dict[str, Any]:
        return public(await self._load(session_id, tenant))

    async def _load(self, session_id: str, tenant: str) -> dict[str, Any]:
        session = await self.store.get("session", session_id, tenant=tenant)
        if session is None:
            raise session_not_found(session_id)
        return session

    async def _save(self, session: dict[str, Any], tenant: str) -> None:
        await self.store.put("session", session["id"], session, tenant=tenant, parent=session["agent"]["id"])

    async def update(self, session_id: str, body: dict[str, Any], *, tenant: str) -> dict[str, Any]:
        known(body, UPDATE_FIELDS, "")
        async with self._locked(session_id):
            session = await self._load(session_id, tenant)
            if "agent" in body:
                changes = body["agent"]
                if not isinstance(changes, dict):
                    raise invalid_request("Invalid type for 'agent': expected an object.", param="agent",
                                          code="invalid_type")
                config = seal_tools(apply_config(session["agent"], changes, ("model", "reasoning", "service_tier",
                                                                             "tools"), prefix="agent."),
                                    self.agents.sealer)
                check_servable(config)
                check_environment_mcp(config["tools"], session["environment"]["type"])
                check_environment_computer(config["tools"], has_desktop(session["environment"]))
                await self.check_credentials(config, session.get("vault_ids") or [], tenant)
                session["agent"] = {**config, "tools": session_tools(config["tools"])}
            if "metadata" in body:
                check_metadata(body["metadata"])
                session["metadata"] = dict(body["metadata"] or {})
            if "prompt_cache_options" in body:
                session["prompt_cache_options"] = cache_options(body["prompt_cache_options"])
            if "review" in body:
                review = review_mode(body["review"])
                session.pop("review", None)
                if review is not None:
                    session["review"] = review
            await self._save(session, tenant)
        return public(session)

    async def list_sessions(self, *, after: str | None, limit: int, order: str, agent_id: str | None,
                            metadata: list[tuple[str, str]], tenant: str) -> dict[str, Any]:
        with page_errors("session"):
            page = await self.store.page("session", tenant=tenant, parent=agent_id, after=after, limit=limit,
                                         order=order, metadata=metadata)
        return list_of([public(session) for session in page.data], has_more=page.has_more)

    async def delete(self, session_id: str, *, tenant: str) -> dict[str, Any]:
        """The session, its turns, items and events go; its running turn is stopped and its turns' stored
        responses are deleted with it."""
        stored = await self._load(session_id, tenant)
        runner = self.runners.pop(session_id, None)
        if runner is not None and runner.task is not None:
            runner.task.cancel()
        response_ids = await stored_response_ids(self.store, session_id, tenant)
        if runner is not None and runner.response_id:
            response_ids.append(runner.response_id)
        await self.environments.release(stored, tenant=tenant)
        if self.computer is not None:  # its desktop, if it has one running here
            await self.computer.stop(session_id)
        if not await self.store.delete("session", session_id, tenant=tenant):
            raise session_not_found(session_id)
        self.events.forget(session_id)
        for response_id in response_ids:
            await self.background.forget(response_id, tenant=tenant)
            await self.background.store.delete_response(response_id, tenant=tenant)
        return {"id": session_id, "object": "agent.session.deleted", "deleted": True}

    # --- events ---------------------------------------------------------------------------------------------

    async def post_events(self, session_id: str, body: dict[str, Any], *, idempotency_key: str | None,
                          tenant: str, authorization: str | None) -> None:
        known(body, ("events",), "")
        events = body.get("events")
        if not isinstance(events, list) or not events:
            raise invalid_request("'events' must be a non-empty array.", param="events", code="invalid_value")
        if len(events) > MAX_EVENTS_PER_CALL:
            raise invalid_request(f"'events' may have at most {MAX_EVENTS_PER_CALL} events.", param="events",
                                  code="array_above_max_length")
        plan = [input_event(event, f"events[{index}]") for index, event in enumerate(events)]
        async with self._locked(session_id):
            session = await self._load(session_id, tenant)
            # the key's digest is of the body without its sign-in values: what is stored never derives from them
            if idempotency_key is not None and await replayed(self.store, session_id, idempotency_key,
                                                              redacted_body(body), tenant):
                return
            if session["status"] == "failed":
                raise invalid_request("This session failed; it takes no more events.", param="session_id",
                                      code="session_failed")
            runner = await self._runner(session_id, tenant)
            runner.check_room(sum(1 for kind, _ in plan if kind == "message"))  # all the events, or none
            for kind, content in plan:
                if kind == "cancel":
                    await runner.cancel()
                elif kind == "tool_result":
                    await runner.tool_result(content, session)
                elif kind == "approval":
                    await runner.approval(content)
                elif kind == "computer_approval":
                    await runner.computer_approval(content)
                else:
                    await runner.submit(session, content, authorization)
                    await self._in_progress(runner, session)

    async def stream(self, session_id: str, *, after_event: str | None, tenant: str,
                     until_idle: bool) -> AsyncGenerator[bytes, None]:
        """The session's event frames after ``after_event`` (from its first without), live ones as they come."""
        await self._load(session_id, tenant)
        after = -1
        if after_event:
            found = await self.events.sequence_of(session_id, after_event, tenant=tenant)
            if found is None:
                raise invalid_request(f"No event found with id '{after_event}' in this session.", param="after",
                                      code="invalid_value")
            after = found
        return self.events.follow(session_id, after, tenant=tenant, until_idle=until_idle)

    async def _runner(self, session_id: str, tenant: str) -> SessionRunner:
        runner = self.runners.get(session_id)
        if runner is None or runner.tenant != tenant:
            if self.shared:
                await self.leases.claim(session_id, self.runners)
                self._log_to_store(session_id)  # another process may have written since
            log_ = await self.events.log_of(session_id, tenant)
            # its writes wait out an outage, each retry first making sure the session is still this process's
            still_ours = lease_check(self.store, session_id, self.leases) if self.shared else None
            log_.store = store = retrying_store(self.store, self.background.store_retry, still_ours)
            runner = SessionRunner(store, self.background, self.start, log_, session_id, tenant, self.environments)
            runner.on_idle = self._idle
            runner.on_lost = self._lost
            runner.still_ours = still_ours
            runner.recovers = self.background.store_retry > 0
            runner.locked = functools.partial(self._locked, session_id)
            runner.vaults = self.vaults
            runner.mcp = self.mcp
            runner.automations = self.agent_automations
            runner.computer = self.computer
            runner.kept_authorization = self.kept_authorization
            self.runners[session_id] = runner
            runner.events.active = True
            if self.shared:  # its turn's writes, fenced by the lease just claimed
                runner.events.fence = {"owner": self.leases.owner}
                runner.events.on_fenced = functools.partial(self._fenced, runner)
            if self.shared:  # claimed while its turns say they run: their process stopped (its lease ran out)
                stored = await self.store.get("session", session_id, tenant=tenant)
                if stored is not None and stored["status"] in ("in_progress", "requires_action"):
                    await self.resumer.resume(runner, stored)
        runner.events.active = True
        return runner

    def turn_running(self, session_id: str) -> bool:
        """Does the session have a turn running (or queued) in this process — between two calls, or waiting on the
        client? Its desktop is then not idle and never yields to another session's (computer/desktops.py)."""
        runner = self.runners.get(session_id)
        return runner is not None and runner.busy

    def _idle(self, runner: SessionRunner) -> None:
        """A runner with no turn left is let go (a later input makes a new one): memory holds active sessions
        only; on a shared database its lease goes too (any process may take the session's next input)."""
        if self.runners.get(runner.session_id) is runner:
            del self.runners[runner.session_id]
            if self.shared:
                self.leases.release_soon(runner.session_id, self._locked, self.runners)
        runner.events.active = False
        runner.events.fence, runner.events.on_fenced = {}, None  # its lease goes: what is written now is no turn's
        self.events.release(runner.events)

    def _fenced(self, runner: SessionRunner) -> None:
        """A write of the runner's was refused for its lease (another process may hold it now): the runner stops at
        once, as when the heartbeat finds the lease taken, and is let go; its log stays fenced, so nothing it still
        tries to store lands."""
        if runner.task is not None and not runner.task.done():
            runner.task.cancel()
        if self.runners.get(runner.session_id) is runner:
            self._lost(runner.session_id)

    def _lost(self, session_id: str) -> None:
        """Another process took the session's lease (this one stalled past it): its runner here is let go, the
        lease not given back (it is not ours), and its log's readers read the store, as when a claim finds a log
        another process may have written since."""
        self.runners.pop(session_id, None)
        self.leases.renewed.pop(session_id, None)
        self._log_to_store(session_id)

    def _log_to_store(self, session_id: str) -> None:
        """The session's log in memory is let go: its readers read the store, which another process writes."""
        stale = self.events.logs.pop(session_id, None)
        if stale is not None:
            stale.active = False

    @contextlib.asynccontextmanager
    async def _locked(self, session_id: str) -> AsyncIterator[None]:
        """One change of a session at a time; the lock lives only while someone holds or waits for it."""
        entry = self._locks.setdefault(session_id, SessionLock())
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0 and self._locks.get(session_id) is entry:
                del self._locks[session_id]

    # --- turns and items ------------------------------------------------------------------------------------

    async def list_turns(self, session_id: str, *, after: str | None, limit: int, order: str,
                         tenant: str) -> dict[str, Any]:
        await self._load(session_id, tenant)
        with page_errors("turn"):
            page = await self.store.page("turn", tenant=tenant, parent=session_id, after=after, limit=limit,
                                         order=order)
        return list_of([public(turn) for turn in page.data], has_more=page.has_more)

    async def get_turn(self, session_id: str, turn_id: str, *, tenant: str) -> dict[str, Any]:
        await self._load(session_id, tenant)
        turn = await self.store.get("turn", turn_id, tenant=tenant)
        if turn is None or turn.get("session_id") != session_id:
            raise not_found(f"No turn found with id '{turn_id}' in session '{session_id}'.", param="turn_id",
                            code="not_found")
        return public(turn)

    async def list_items(self, session_id: str, *, turn_id: str | None, after: str | None, limit: int,
                         order: str, tenant: str) -> dict[str, Any]:
        if turn_id is not None:
            await self.get_turn(session_id, turn_id, tenant=tenant)
        else:
            await self._load(session_id, tenant)
        with page_errors("item"):
            page = await self.store.page("item", tenant=tenant, parent=session_id, scope=turn_id, after=after,
                                         limit=limit, order=order)
        return list_of(page.data, has_more=page.has_more)

    async def recover(self) -> int:
        """At start, alone on the database: the turns a stopped process left are resumed here, their queued input
        after them (session_resume.py). Shared by replicas, a session's turn may be running on another
        one: a sweep (now, then every third of a lease period) resumes the sessions whose lease lapsed."""
        if self.background.leases.shared:
            self.resumer.start_sweeps()
            return 0
        recovered = 0
        for tenant, session in await self.store.unfinished_sessions():
            async with self._locked(session["id"]):
                runner = await self._runner(session["id"], tenant)
                await self.resumer.resume(runner, session)
                if not runner.busy:
                    self._idle(runner)
            recovered += 1
        return recovered

    async def hand_off(self, drain_timeout: float) -> None:
        """A drain: the running turns stop at their next step boundary and are let go, for another process (or
        the next start) to resume (session_resume.py)."""
        await self.resumer.hand_off(drain_timeout)

    async def close(self) -> None:
        self.resumer.close()
        self.leases.close()
        for runner in list(self.runners.values()):
            if runner.task is not None and not runner.task.done():
                runner.task.cancel()
        if self.computer is not None:  # every desktop of this process stopped
            await self.computer.desktops.close()
