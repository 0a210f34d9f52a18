"""``/v1/agents/automations`` routes of the HTTP door (``client.beta.agents.automations``): automations, their
pause and resume, and their invocations; and the scheduler that fires them, run by every process of the door
(services/automations.py: a firing is claimed in the database, so one process makes its invocation)."""

from __future__ import annotations

from aiohttp import web

from ...periodic import Periodic
from ...services.agents import AgentService
from ...services.automation_bounds import AutomationBounds
from ...services.automations import TICK_SECONDS, AutomationService, SessionStarter
from .identity import request_tenant
from .params import json_object, json_reply, page_query
from .routes import api_routes


class AutomationRoutes:
    def __init__(self, agents: AgentService, sessions: SessionStarter, bounds: AutomationBounds) -> None:
        self.automations = AutomationService(agents.store, agents, sessions, bounds)
        self.scheduler = Periodic(TICK_SECONDS, self.automations.tick, name="agent-automations",
                                  failure="automation_scheduler_failed")

    def register(self, app: web.Application) -> None:
        """Before ``/agents/{agent_id}``: ``automations`` is not an agent's id."""
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)
        with api_routes(app) as routes:
            automations = "/agents/automations"
            automation = f"{automations}/{{automation_id}}"
            routes.post(automations, self.create)
            routes.get(automations, self.list)
            routes.get(automation, self.retrieve)
            routes.post(automation, self.update)
            routes.delete(automation, self.delete)
            routes.post(f"{automation}/pause", self.pause)
            routes.post(f"{automation}/resume", self.resume)
            routes.get(f"{automation}/invocations", self.list_invocations)
            routes.get(f"{automation}/invocations/{{invocation_id}}", self.retrieve_invocation)

    async def _start(self, app: web.Application) -> None:
        self.scheduler.start()

    async def _stop(self, app: web.Application) -> None:
        await self.scheduler.stop()

    async def create(self, request: web.Request) -> web.Response:
        return json_reply(await self.automations.create(await json_object(request),
                                                        tenant=request_tenant(request)))

    async def list(self, request: web.Request) -> web.Response:
        return json_reply(await self.automations.list_automations(
            **page_query(request, before=False), session_id=request.query.get("session_id"),
            tenant=request_tenant(request)))

    async def retrieve(self, request: web.Request) -> web.Response:
        return json_reply(await self.automations.get(request.match_info["automation_id"],
                                                     tenant=request_tenant(request)))

    async def update(self, request: web.Request) -> web.Response:
        return json_reply(await self.automations.update(request.match_info["automation_id"],
                                                        await json_object(request), tenant=request_tenant(request)))

    async def delete(self, request: web.Request) -> web.Response:
        return json_reply(await self.automations.delete(request.match_info["automation_id"],
                                                        tenant=request_tenant(request)))

    async def pause(self, request: web.Request) -> web.Response:
        return json_reply(await self.automations.pause(request.match_info["automation_id"],
                                                       tenant=request_tenant(request)))

    async def resume(self, request: web.Request) -> web.Response:
        return json_reply(await self.automations.resume(request.match_info["automation_id"],
                                                        tenant=request_tenant(request)))

    async def list_invocations(self, request: web.Request) -> web.Response:
        return json_reply(await self.automations.list_invocations(
            request.match_info["automation_id"], **page_query(request, before=False),
            tenant=request_tenant(request)))

    async def retrieve_invocation(self, request: web.Request) -> web.Response:
        return json_reply(await self.automations.get_invocation(
            request.match_info["automation_id"], request.match_info["invocation_id"],
            tenant=request_tenant(request)))
