"""``/v1/agents/automations`` routes of the HTTP door (``client.beta.agents.automations``): automations, their
pause and resume, and their invocations; and the scheduler that fires them, run by every process of the door
(services/agents/automations/automations.py: a firing is claimed in the database, so one process makes its
invocation)."""

from __future__ import annotations

from aiohttp import web

from ....process.periodic import Periodic
from ....services.agents.agents import AgentService
from ....services.agents.automations.automations import TICK_SECONDS, AutomationService, SessionStarter
from ....services.agents.automations.bounds import AutomationBounds
from ..identity import request_tenant
from ..params import json_reply, page_query
from ..routes import answer, api_routes


class AutomationRoutes:
    def __init__(self, agents: AgentService, sessions: SessionStarter, bounds: AutomationBounds) -> None:
        self.automations = AutomationService(agents.store, agents, sessions, bounds)
        self.scheduler = Periodic(TICK_SECONDS, self.automations.tick, name="agent-automations",
                                  failure="automation_scheduler_failed")

    def register(self, app: web.Application) -> None:
        """Before ``/agents/{agent_id}``: ``automations`` is not an agent's id."""
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)
        automations = self.automations
        automation = "/agents/automations/{automation_id}"
        with api_routes(app) as routes:
            routes.post("/agents/automations", answer(automations.create, body=True))
            routes.get("/agents/automations", self.list)
            routes.get(automation, answer(automations.get, "automation_id"))
            routes.post(automation, answer(automations.update, "automation_id", body=True))
            routes.delete(automation, answer(automations.delete, "automation_id"))
            routes.post(f"{automation}/pause", answer(automations.pause, "automation_id"))
            routes.post(f"{automation}/resume", answer(automations.resume, "automation_id"))
            routes.get(f"{automation}/invocations", answer(automations.list_invocations, "automation_id", page=True))
            routes.get(f"{automation}/invocations/{{invocation_id}}",
                       answer(automations.get_invocation, "automation_id", "invocation_id"))

    async def _start(self, app: web.Application) -> None:
        self.scheduler.start()

    async def _stop(self, app: web.Application) -> None:
        await self.scheduler.stop()

    async def list(self, request: web.Request) -> web.Response:
        return json_reply(await self.automations.list_automations(
            **page_query(request, before=False), session_id=request.query.get("session_id"),
            tenant=request_tenant(request)))
