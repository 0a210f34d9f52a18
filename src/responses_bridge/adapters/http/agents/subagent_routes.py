"""``/v1/agents/sessions/{session_id}/subagents`` routes of the HTTP door (``client.beta.agents.sessions.subagents``,
its ``items``, ``turns`` and their ``items``; also without ``/v1``): what a session's subagents did, read from the
store (services/agents/subagents/subagents.py). The Envoy door routes ``/v1/agents`` here (envoy_config/routes.py)."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from ....services.agents.subagents.subagents import SubagentService
from ..identity import request_tenant
from ..params import json_reply, page_query
from ..routes import answer, api_routes


@dataclass(frozen=True)
class SubagentRoutes:
    subagents: SubagentService

    def register(self, app: web.Application) -> None:
        subagent = "/agents/sessions/{session_id}/subagents/{subagent_id}"
        with api_routes(app) as routes:
            routes.get("/agents/sessions/{session_id}/subagents",
                       answer(self.subagents.list_subagents, "session_id", page=True))
            routes.get(subagent, answer(self.subagents.get_subagent, "session_id", "subagent_id"))
            routes.get(f"{subagent}/items", self.list_items)
            routes.get(f"{subagent}/turns", answer(self.subagents.list_turns, "session_id", "subagent_id", page=True))
            routes.get(f"{subagent}/turns/{{turn_id}}",
                       answer(self.subagents.get_turn, "session_id", "subagent_id", "turn_id"))
            routes.get(f"{subagent}/turns/{{turn_id}}/items", self.list_items)

    async def list_items(self, request: web.Request) -> web.Response:
        """A subagent's items, or one of its turns' (the route with a ``turn_id``)."""
        return json_reply(await self.subagents.list_items(request.match_info["session_id"],
                                                          request.match_info["subagent_id"],
                                                          turn_id=request.match_info.get("turn_id"),
                                                          **page_query(request, before=False),
                                                          tenant=request_tenant(request)))
