"""``/v1/agents/sessions/{session_id}/traces`` of the HTTP door (``client.beta.agents.sessions.traces``): a
session's traces, one per root turn, as OTLP JSON (services/agents/traces.py). A tenant's own sessions only."""

from __future__ import annotations

from aiohttp import web

from ....services.agents.traces import SessionTraces
from ....store.base_agents import AgentStore
from ..identity import request_tenant
from ..params import json_reply, page_query
from ..routes import api_routes


class TraceRoutes:
    def __init__(self, store: AgentStore) -> None:
        self.traces = SessionTraces(store)

    def register(self, app: web.Application) -> None:
        with api_routes(app) as routes:
            routes.get("/agents/sessions/{session_id}/traces", self.list)

    async def list(self, request: web.Request) -> web.Response:
        return json_reply(await self.traces.list_traces(request.match_info["session_id"],
                                                        **page_query(request, before=False),
                                                        tenant=request_tenant(request)))
