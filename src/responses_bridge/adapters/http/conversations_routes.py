"""``/v1/conversations`` routes of the HTTP door (OpenAI Conversations API shapes; also without ``/v1``)."""

from __future__ import annotations

from aiohttp import web

from ...services.conversations import ConversationService
from .identity import request_tenant
from .params import include_query, json_object, json_reply, page_query
from .routes import api_routes


class ConversationRoutes:
    def __init__(self, service: ConversationService) -> None:
        self.service = service

    def register(self, app: web.Application) -> None:
        with api_routes(app) as routes:
            base = "/conversations"
            routes.post(base, self.create)
            routes.get(base, self.list)
            routes.get(f"{base}/{{conversation_id}}", self.retrieve)
            routes.post(f"{base}/{{conversation_id}}", self.update)
            routes.delete(f"{base}/{{conversation_id}}", self.delete)
            routes.post(f"{base}/{{conversation_id}}/items", self.add_items)
            routes.get(f"{base}/{{conversation_id}}/items", self.list_items)
            routes.get(f"{base}/{{conversation_id}}/items/{{item_id}}", self.retrieve_item)
            routes.delete(f"{base}/{{conversation_id}}/items/{{item_id}}", self.delete_item)

    async def create(self, request: web.Request) -> web.Response:
        return json_reply(await self.service.create(await json_object(request, optional=True,
                                                                      fields="conversations.create"),
                                                    tenant=request_tenant(request)))

    async def list(self, request: web.Request) -> web.Response:
        return json_reply(await self.service.list_conversations(
            **page_query(request), tenant=request_tenant(request)))

    async def retrieve(self, request: web.Request) -> web.Response:
        return json_reply(await self.service.get(request.match_info["conversation_id"],
                                                 tenant=request_tenant(request)))

    async def update(self, request: web.Request) -> web.Response:
        return json_reply(await self.service.update(request.match_info["conversation_id"],
                                                    await json_object(request, fields="conversations.update"),
                                                    tenant=request_tenant(request)))

    async def delete(self, request: web.Request) -> web.Response:
        return json_reply(await self.service.delete(request.match_info["conversation_id"],
                                                    tenant=request_tenant(request)))

    async def add_items(self, request: web.Request) -> web.Response:
        return json_reply(await self.service.add_items(request.match_info["conversation_id"],
                                                       await json_object(request, fields="conversations.items.create"),
                                                       include_query(request),
                                                       tenant=request_tenant(request)))

    async def list_items(self, request: web.Request) -> web.Response:
        return json_reply(await self.service.list_items(
            request.match_info["conversation_id"], **page_query(request, before=False),
            include=include_query(request), tenant=request_tenant(request)))

    async def retrieve_item(self, request: web.Request) -> web.Response:
        return json_reply(await self.service.get_item(request.match_info["conversation_id"],
                                                      request.match_info["item_id"], include_query(request),
                                                      tenant=request_tenant(request)))

    async def delete_item(self, request: web.Request) -> web.Response:
        return json_reply(await self.service.delete_item(request.match_info["conversation_id"],
                                                         request.match_info["item_id"],
                                                         tenant=request_tenant(request)))
