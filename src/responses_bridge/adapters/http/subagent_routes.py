"""``/v1/agents/sessions/{session_id}/subagents`` routes of the HTTP door (``client.beta.agents.sessions.subagents``,
its ``items``, ``turns`` and their ``items``; also without ``/v1``): what a session's subagents did, read from the
store (services/agent_subagents.py). The Envoy door routes ``/v1/agents`` here (envoy_config/routes.py)."""

from __future__ import annotations

from aiohttp import web

from ...services.agent_subagents import SubagentService
from .identity import request_tenant
from .params import json_reply, page_query
from .routes import api_routes


class SubagentRoutes:
    def __init__(self, subagents: SubagentService) -> None:
        self.subagents = subagents

    def register(self, app: web.Application) -> None:
        with api_routes(app) as routes:
            subagents = "/agents/sessions/{session_id}/subagents"
            subagent = f"{subagents}/{{subagent_id}}"
            routes.get(subagents, self.list)
            routes.get(subagent, self.retrieve)
            routes.get(f"{subagent}/items", self.list_items)
            routes.get(f"{subagent}/turns", self.list_turns)
            routes.get(f"{subagent}/turns/{{turn_id}}", self.retrieve_turn)
            routes.get(f"{subagent}/turns/{{turn_id}}/items", self.list_turn_items)

    async def list(self, request: web.Request) -> web.Response:
        return json_reply(await self.subagents.list_subagents(request.match_info["session_id"],
                                                              **page_query(request, before=False),
                                                              tenant=request_tenant(request)))

    async def retrieve(self, request: web.Request) -> web.Response:
        return json_reply(await self.subagents.get_subagent(request.match_info["session_id"],
                                                            request.match_info["subagent_id"],
                                                            tenant=request_tenant(request)))

    async def list_items(self, request: web.Request) -> web.Response:
        return json_reply(await self.subagents.list_items(request.match_info["session_id"],
                                                          request.match_info["subagent_id"], turn_id=None,
                                                          **page_query(request, before=False),
                                                          tenant=request_tenant(request)))

    async def list_turns(self, request: web.Request) -> web.Response:
        return json_reply(await self.subagents.list_turns(request.match_info["session_id"],
                                                          request.match_info["subagent_id"],
                                                          **page_query(request, before=False),
                                                          tenant=request_tenant(request)))

    async def retrieve_turn(self, request: web.Request) -> web.Response:
        return json_reply(await self.subagents.get_turn(request.match_info["session_id"],
                                                        request.match_info["subagent_id"],
                                                        request.match_info["turn_id"], tenant=request_tenant(request)))

    async def list_turn_items(self, request: web.Request) -> web.Response:
        return json_reply(await self.subagents.list_items(request.match_info["session_id"],
                                                          request.match_info["subagent_id"],
                                                          turn_id=request.match_info["turn_id"],
                                                          **page_query(request, before=False),
                                                          tenant=request_tenant(request)))
