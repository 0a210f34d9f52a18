"""Automations of the Agents API (``client.beta.agents.automations``): create, retrieve, update, list, delete,
pause and resume, a tenant's own; and the scheduler that fires them, each firing an invocation that starts a
session with the automation's target (its agent, environment, input and metadata) through the session service, as
a client's ``POST /v1/agents/sessions`` would — or, for an ``existing_session`` target, delivers its
``instructions`` to that session as a message of the user, as a client's ``agent.session.input.message`` event would
(queued behind a running turn as any input is; a session deleted meanwhile fails the invocation).

Every process serving the HTTP door runs the scheduler (:meth:`AutomationService.tick`, once a second, on the
second: occurrences fall on whole seconds, so one is fired within moments of its time), within the bounds of
bounds.py: occurrences dealt across tenants in turn, a few at once, each tenant's at most
its rate; an invocation refers to its automation's version rather than copying it, and is kept within a count and an
age. An occurrence is fired by whichever process first inserts its row (the automation, the occurrence) in the database
(:meth:`AgentStore.claim_firing`): exactly one invocation per occurrence across workers on SQLite and replicas on
PostgreSQL, no lock in memory. The schedule is kept in the stored automation (``_next_at``, the next occurrence), so
it survives restarts: occurrences missed while no process ran are fired once, for the first missed one, and the
schedule goes on from the next occurrence after now. A process stopped between claiming an occurrence and starting
its session leaves that occurrence's invocation ``queued``: an occurrence is delivered at most once.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import structlog

from .... import ids
from ....process.off_loop_import import import_off_loop
from ....protocol.agents.automations import (
    ONCE_FIELDS,
    PERIODIC_FIELDS,
    UPDATE_FIELDS,
    automation_not_found,
    check_name,
    check_run_at,
    invocation,
    invocation_not_found,
    next_occurrence,
    public,
    schedule,
)
from ....protocol.agents.automations_tool import automation_body
from ....protocol.agents.inputs import known
from ....protocol.errors import APIError, invalid_request
from ....protocol.lists import list_of
from ....protocol.metadata import check_metadata
from ....store.base_agents import AgentStore
from ...pagination import page_errors
from ..agents import AgentService
from .bounds import AutomationBounds, check_rate, over_rate, version_of, with_sources
from .targets import AutomationTargets, SessionStarter

log = structlog.get_logger(__name__)
CRON = "apscheduler.triggers.cron"
"""A periodic automation's schedule (protocol/agents/automations.py): imported off the event loop by the first one
read (~18 ms of imports), never in a process whose store holds none."""

MAX_AUTOMATIONS_PER_TENANT = 10_000
MAX_AGENT_AUTOMATIONS_PER_SESSION = 20  # what a session's model may schedule for itself, kept at once
TICK_SECONDS = 0.01  # the pause between two ticks, each of which first waits for the next whole second


SCAN_PAGE = 100  # automations read at a time when a list is filtered on the session they target


class AutomationService:
    def __init__(self, store: AgentStore, agents: AgentService, sessions: SessionStarter,
                 bounds: AutomationBounds | None = None) -> None:
        self.store = store
        self.agents = agents
        self.sessions = sessions
        self.bounds = bounds or AutomationBounds()
        self.targets = AutomationTargets(agents, sessions)
        self._swept = 0.0  # when invocations past their age were last forgotten
        sessions.agent_automations = self.create_by_agent  # the sessions' agents' ``automations`` tool

    # --- the API ---------------------------------------------------------------------------------------------

    async def create(self, body: dict[str, Any], *, tenant: str,
                     created_by: dict[str, Any] | None = None) -> dict[str, Any]:
        kind = body.get("type")
        if kind not in ("periodic", "once"):
            raise invalid_request("Invalid value for 'type': expected 'periodic' or 'once'.", param="type",
                                  code="invalid_value")
        known(body, PERIODIC_FIELDS if kind == "periodic" else ONCE_FIELDS, "")
        now = time.time()
        automation: dict[str, Any] = {
            "id": ids.new_id("auto"), "object": "agent.automation", "created_at": int(now),
            "created_by": created_by or {"type": "developer"}, "metadata": self._metadata(body.get("metadata")),
            "name": check_name(body.get("name")), "status": "active", "pause_reason": None,
            "target": await self.targets.check(body.get("target"), tenant), "type": kind,
        }
        if kind == "periodic":
            await import_off_loop(CRON)
            trigger = schedule(body.get("expression"), body.get("timezone"))
            check_rate(trigger, now, self.bounds.tenant_per_minute)
            automation.update(expression=body["expression"], timezone=body["timezone"],
                              _next_at=next_occurrence(trigger, now))
        else:
            automation["run_at"] = automation["_next_at"] = check_run_at(body.get("run_at"), now=now)
        if await self.store.count("automation", tenant=tenant) >= MAX_AUTOMATIONS_PER_TENANT:
            raise APIError(429, f"A project may keep at most {MAX_AUTOMATIONS_PER_TENANT} automations; delete some "
                           "first.", type="invalid_request_error", code="automation_limit_reached")
        await self.store.put("automation", automation["id"], automation, tenant=tenant)
        return public(automation)

    async def create_by_agent(self, tenant: str, session_id: str, call_id: str, arguments: str) -> str:
        """An agent's ``automations`` tool call: an automation that targets the calling session, made by the agent
        (``created_by``); the model reads what was made, or the refusal's message, as the call's output."""
        body = automation_body(arguments, session_id)
        if isinstance(body, str):
            return body
        if await self._made_by_agent(session_id, tenant) >= MAX_AGENT_AUTOMATIONS_PER_SESSION:
            return (f"The automation was not created: this session's agent keeps {MAX_AGENT_AUTOMATIONS_PER_SESSION} "
                    "automations already (the most it may); delete some first.")
        try:
            made = await self.create(body, tenant=tenant, created_by={"type": "agent", "session_id": session_id,
                                                                      "tool_call_id": call_id})
        except APIError as exc:
            return f"The automation was not created: {exc.message}"
        return orjson.dumps({"automation_id": made["id"], "type": made["type"], "name": made["name"],
                             "run_at": made.get("run_at"), "expression": made.get("expression"),
                             "timezone": made.get("timezone")}).decode()

    async def get(self, automation_id: str, *, tenant: str) -> dict[str, Any]:
        return public(await self._load(automation_id, tenant))

    async def update(self, automation_id: str, body: dict[str, Any], *, tenant: str) -> dict[str, Any]:
        known(body, UPDATE_FIELDS, "")
        automation = await self._load(automation_id, tenant)
        now = time.time()
        periodic = automation["type"] == "periodic"
        for field in ("expression", "timezone") if not periodic else ("run_at",):
            if field in body:
                which = "one-time" if field == "run_at" else "periodic"
                raise invalid_request(f"'{field}' is only accepted for {which} automations.", param=field,
                                      code="invalid_value")
        if "name" in body:
            automation["name"] = check_name(body["name"])
        if "metadata" in body:
            automation["metadata"] = self._metadata(body["metadata"])
        if "target" in body:
            target = await self.targets.check(body["target"], tenant)
            automation["target"] = target
        if periodic and ("expression" in body or "timezone" in body):
            expression = body.get("expression", automation["expression"])
            timezone = body.get("timezone", automation["timezone"])
            await import_off_loop(CRON)
            trigger = schedule(expression, timezone)
            check_rate(trigger, now, self.bounds.tenant_per_minute)
            automation.update(expression=expression, timezone=timezone, _next_at=next_occurrence(trigger, now))
        if not periodic and "run_at" in body:
            if automation["status"] == "completed":
                raise invalid_request("'run_at' can no longer change: this automation has fired.", param="run_at",
                                      code="invalid_value")
            automation["run_at"] = automation["_next_at"] = check_run_at(body["run_at"], now=now)
        await self.store.put("automation", automation_id, automation, tenant=tenant)
        return public(automation)

    async def list_automations(self, *, after: str | None, limit: int, order: str, session_id: str | None,
                               tenant: str) -> dict[str, Any]:
        """``session_id`` lists the automations that target that existing session."""
        if session_id is not None:
            return await self._targeting(session_id, after=after, limit=limit, order=order, tenant=tenant)
        with page_errors("automation"):
            page = await self.store.page("automation", tenant=tenant, after=after, limit=limit, order=order)
        return list_of([public(record) for record in page.data], has_more=page.has_more)

    async def _targeting(self, session_id: str, *, after: str | None, limit: int, order: str,
                         tenant: str) -> dict[str, Any]:
        """A page of the automations whose target is ``session_id``, read through the tenant's automations in the
        list's order (at most :data:`MAX_AUTOMATIONS_PER_TENANT`, a page at a time) until the page is full."""
        found: list[dict[str, Any]] = []
        cursor = after
        while len(found) <= limit:
            with page_errors("automation"):
                page = await self.store.page("automation", tenant=tenant, after=cursor, limit=SCAN_PAGE,
                                             order=order)
            found += [public(record) for record in page.data
                      if record["target"]["type"] == "existing_session"
                      and record["target"]["session_id"] == session_id]
            if not page.has_more or not page.data:
                break
            cursor = page.data[-1]["id"]
        return list_of(found[:limit], has_more=len(found) > limit)

    async def _made_by_agent(self, session_id: str, tenant: str) -> int:
        """How many of the tenant's automations the agent of ``session_id`` made (read a page at a time, at most
        :data:`MAX_AUTOMATIONS_PER_TENANT`): a model calling its tool in a loop fills its own bound, not the
        tenant's."""
        count, cursor = 0, None
        while True:
            page = await self.store.page("automation", tenant=tenant, after=cursor, limit=SCAN_PAGE, order="asc")
            count += sum(1 for record in page.data if record["created_by"].get("type") == "agent"
                         and record["created_by"].get("session_id") == session_id)
            if not page.has_more or not page.data:
                return count
            cursor = page.data[-1]["id"]

    async def delete(self, automation_id: str, *, tenant: str) -> dict[str, Any]:
        """The automation and its invocations go; the sessions they started stay."""
        if not await self.store.delete("automation", automation_id, tenant=tenant):
            raise automation_not_found(automation_id)
        return {"id": automation_id, "object": "agent.automation.deleted", "deleted": True}

    async def pause(self, automation_id: str, *, tenant: str) -> dict[str, Any]:
        automation = await self._load(automation_id, tenant)
        self._not_completed(automation, "paused")
        automation["status"] = "paused"
        await self.store.put("automation", automation_id, automation, tenant=tenant)
        return public(automation)

    async def resume(self, automation_id: str, *, tenant: str) -> dict[str, Any]:
        """Active again: a periodic automation from its next occurrence after now (those passed while it was
        paused are not fired); a one-time one at its ``run_at``, at once if that has passed."""
        automation = await self._load(automation_id, tenant)
        self._not_completed(automation, "resumed")
        if automation["status"] == "paused":
            automation["status"] = "active"
            automation["pause_reason"] = None
            if automation["type"] == "periodic":
                await import_off_loop(CRON)
                trigger = schedule(automation["expression"], automation["timezone"])
                automation["_next_at"] = next_occurrence(trigger, time.time())
            await self.store.put("automation", automation_id, automation, tenant=tenant)
        return public(automation)

    async def list_invocations(self, automation_id: str, *, after: str | None, limit: int, order: str,
                               tenant: str) -> dict[str, Any]:
        await self._load(automation_id, tenant)
        with page_errors("invocation"):
            page = await self.store.page("invocation", tenant=tenant, parent=automation_id, after=after,
                                         limit=limit, order=order)
        return list_of(await with_sources(self.store, automation_id, page.data, tenant=tenant),
                       has_more=page.has_more)

    async def get_invocation(self, automation_id: str, invocation_id: str, *, tenant: str) -> dict[str, Any]:
        found = await self.store.get("invocation", invocation_id, tenant=tenant)
        if found is None or found.get("automation_id") != automation_id:
            raise invocation_not_found(invocation_id)
        shown = await with_sources(self.store, automation_id, [found], tenant=tenant)
        if not shown:
            raise invocation_not_found(invocation_id)
        return shown[0]

    # --- the scheduler ---------------------------------------------------------------------------------------

    async def tick(self) -> int:
        """At the next whole second, :meth:`fire_due`. Every process ticks then, so they race for the same
        occurrences: the claim in the database, not their timing, is what makes each fired once."""
        await asyncio.sleep(1.0 - time.time() % 1.0)
        return await self.fire_due()

    async def fire_due(self, now: float | None = None) -> int:
        """Fire the occurrences due by ``now``, at most the tick's bound of them dealt across tenants in turn,
        a bounded number at once; the number this process fired (another may have fired some). Once a minute,
        forget the invocations past their age. ``now`` by default is the database's time, never this process's
        clock: a replica whose clock is wrong fires nothing early and counts each tenant's rate as the others do."""
        now = await self.store.database_time() if now is None else now
        gate = asyncio.Semaphore(self.bounds.concurrency)

        async def fire(tenant: str, automation: dict[str, Any]) -> int:
            async with gate:
                try:
                    return await self._fire(automation, tenant, now)
                except Exception:  # one automation's failure never holds back the others
                    log.exception("automation_firing_failed", automation_id=automation["id"])
                    return 0

        due = await self.store.due_automations(now, self.bounds.tick_occurrences)
        fired = sum(await asyncio.gather(*(fire(tenant, automation) for tenant, automation in due)))
        if now - self._swept >= 60:
            self._swept = now
            await self.store.forget_expired(now - self.bounds.invocation_days * 86400, settled=now - 60)
        return fired

    async def _fire(self, automation: dict[str, Any], tenant: str, now: float) -> int:
        scheduled_at = int(automation["_next_at"])
        digest, snapshot = version_of(automation)
        # kept before the claim, which lists the invocation that refers to it (a version no invocation refers to is
        # forgotten with the unused ones)
        await self.store.keep_version(automation["id"], digest, snapshot, tenant=tenant, now=now)
        record = invocation(ids.new_id("ainv"), automation, scheduled_at)
        del record["source"]  # put back from the version on read (automation_bounds.with_sources)
        record["_source_version"] = digest
        claimed = await self.store.claim_firing(automation["id"], scheduled_at, record, tenant=tenant,
                                                now=now, per_minute=self.bounds.tenant_per_minute)
        # every process that saw the occurrence due moves the schedule past it, with the same result: one stopped
        # between its claim and this line leaves the next to do it
        if automation["type"] == "periodic":
            await import_off_loop(CRON)
            trigger = schedule(automation["expression"], automation["timezone"])
            await self.store.advance_automation(automation["id"], scheduled_at,
                                                next_occurrence(trigger, max(now, scheduled_at)), "active")
        else:
            await self.store.advance_automation(automation["id"], scheduled_at, None, "completed")
        if claimed is None:
            return 0
        if claimed == "over_rate":
            log.warning("automation_invocation_over_rate", automation_id=automation["id"])
            record.update(status="failed", error=over_rate(self.bounds.tenant_per_minute))
            await self.store.put("invocation", record["id"], record, tenant=tenant, parent=automation["id"])
        else:
            await self._deliver(record, automation, tenant)
        await self.store.forget_invocations(automation["id"], keep=self.bounds.invocations_kept, tenant=tenant,
                                            settled=now - 60)
        return 1 if claimed == "fired" else 0

    async def _deliver(self, record: dict[str, Any], automation: dict[str, Any], tenant: str) -> None:
        target = automation["target"]
        if target["type"] == "existing_session":
            await self._notify(record, automation, tenant)
            return
        body: dict[str, Any] = {"environment": target["environment"], "metadata": target["metadata"],
                                "input": [{"role": "user", "content": message["content"]}
                                          for message in target["input"]]}
        if target["agent_id"] is not None:
            body["agent_id"] = target["agent_id"]
        else:
            body["agent"] = target["agent"]
        try:
            session = await self.sessions.create(body, tenant=tenant, authorization=None)
        except APIError as exc:
            log.warning("automation_invocation_failed", automation_id=automation["id"], code=exc.code)
            record.update(status="failed", error={"code": exc.code or "invocation_failed", "message": exc.message})
        else:
            record.update(status="completed", session_id=session["id"])
        await self.store.put("invocation", record["id"], record, tenant=tenant, parent=automation["id"])

    async def _notify(self, record: dict[str, Any], automation: dict[str, Any], tenant: str) -> None:
        """An existing session's invocation: the instructions as a message of the user, a turn of the session's
        (queued behind the one running). The invocation's id is the input's idempotency key, so a delivery is
        never made twice; a session deleted or failed meanwhile fails the invocation with the session's 4xx."""
        target = automation["target"]
        record["session_id"] = target["session_id"]
        message = {"type": "agent.session.input.message", "input": [
            {"role": "user", "content": [{"type": "input_text", "text": target["instructions"]}]}]}
        try:
            await self.sessions.post_events(target["session_id"], {"events": [message]},
                                            idempotency_key=record["id"], tenant=tenant, authorization=None)
        except APIError as exc:
            log.warning("automation_invocation_failed", automation_id=automation["id"], code=exc.code)
            record.update(status="failed", error={"code": exc.code or "invocation_failed", "message": exc.message})
        else:
            record["status"] = "completed"
        await self.store.put("invocation", record["id"], record, tenant=tenant, parent=automation["id"])

    # --- helpers ---------------------------------------------------------------------------------------------

    async def _load(self, automation_id: str, tenant: str) -> dict[str, Any]:
        found = await self.store.get("automation", automation_id, tenant=tenant)
        if found is None:
            raise automation_not_found(automation_id)
        return found

    @staticmethod
    def _metadata(value: Any) -> dict[str, str]:
        check_metadata(value)
        return dict(value or {})

    @staticmethod
    def _not_completed(automation: dict[str, Any], verb: str) -> None:
        if automation["status"] == "completed":
            raise invalid_request(f"A completed automation cannot be {verb}.", param="automation_id",
                                  code="invalid_value")
