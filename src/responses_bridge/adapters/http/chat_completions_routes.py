"""The stored Chat Completions routes of the HTTP door (also without ``/v1``): ``GET /v1/chat/completions``,
``GET|POST|DELETE /v1/chat/completions/{id}``, ``GET /v1/chat/completions/{id}/messages``. Envoy sends them here
too (its catch-all route); ``POST /v1/chat/completions`` itself is upstream_routes.py's."""

from __future__ import annotations

from aiohttp import web

from ...services.chat_completions import ChatCompletionService
from .identity import request_tenant
from .params import json_object, json_reply, metadata_query, page_query
from .routes import api_routes


class ChatCompletionRoutes:
    def __init__(self, service: ChatCompletionService) -> None:
        self.service = service

    def register(self, app: web.Application) -> None:
        with api_routes(app) as routes:
            base = "/chat/completions"
            routes.get(base, self.list)
            routes.get(f"{base}/{{completion_id}}", self.retrieve)
            routes.post(f"{base}/{{completion_id}}", self.update)
            routes.delete(f"{base}/{{completion_id}}", self.delete)
            routes.get(f"{base}/{{completion_id}}/messages", self.messages)

    async def list(self, request: web.Request) -> web.Response:
        return json_reply(await self.service.list(
            **page_query(request, before=False) | {"order": request.query.get("order", "asc")},
            model=request.query.get("model"), metadata=metadata_query(request), tenant=request_tenant(request)))

    async def retrieve(self, request: web.Request) -> web.Response:
        return json_reply(await self.service.get(request.match_info["completion_id"],
                                                 tenant=request_tenant(request)))

    async def update(self, request: web.Request) -> web.Response:
        body = await json_object(request, fields="chat.completions.update")
        return json_reply(await self.service.update(request.match_info["completion_id"], body,
                                                    tenant=request_tenant(request)))

    async def delete(self, request: web.Request) -> web.Response:
        return json_reply(await self.service.delete(request.match_info["completion_id"],
                                                    tenant=request_tenant(request)))

    async def messages(self, request: web.Request) -> web.Response:
        return json_reply(await self.service.messages(
            request.match_info["completion_id"],
            **page_query(request, before=False) | {"order": request.query.get("order", "asc")},
            tenant=request_tenant(request)))
