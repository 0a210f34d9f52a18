"""The stored Chat Completions routes of the HTTP door (also without ``/v1``): ``GET /v1/chat/completions``,
``GET|POST|DELETE /v1/chat/completions/{id}``, ``GET /v1/chat/completions/{id}/messages``. Envoy sends them here
too (its catch-all route); ``POST /v1/chat/completions`` itself is adapters/http/upstream/upstream_routes.py's."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from ....services.responses.chat_completions import ChatCompletionService
from ..identity import request_tenant
from ..params import json_reply, metadata_query, page_query
from ..routes import answer, object_routes


@dataclass(frozen=True)
class ChatCompletionRoutes:
    service: ChatCompletionService

    def register(self, app: web.Application) -> None:
        update = answer(self.service.update, "completion_id", body="chat.completions.update")
        with object_routes(app, "/chat/completions", "completion_id", listing=self.list, retrieve=self.service.get,
                           update=update, delete=self.service.delete) as (routes, completion):
            routes.get(f"{completion}/messages", self.messages)

    async def list(self, request: web.Request) -> web.Response:
        return json_reply(await self.service.list(
            **page_query(request, before=False) | {"order": request.query.get("order", "asc")},
            model=request.query.get("model"), metadata=metadata_query(request), tenant=request_tenant(request)))

    async def messages(self, request: web.Request) -> web.Response:
        return json_reply(await self.service.messages(
            request.match_info["completion_id"],
            **page_query(request, before=False) | {"order": request.query.get("order", "asc")},
            tenant=request_tenant(request)))
