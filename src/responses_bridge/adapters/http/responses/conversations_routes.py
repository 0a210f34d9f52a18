"""``/v1/conversations`` routes of the HTTP door (OpenAI Conversations API shapes; also without ``/v1``)."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from ....services.responses.conversations import ConversationService
from ..identity import request_tenant
from ..params import include_query, json_object, json_reply, page_query
from ..routes import answer, object_routes


@dataclass(frozen=True)
class ConversationRoutes:
    service: ConversationService

    def register(self, app: web.Application) -> None:
        create = answer(self.service.create, body="conversations.create", optional=True)
        update = answer(self.service.update, "conversation_id", body="conversations.update")
        with object_routes(app, "/conversations", "conversation_id", create=create, listing=self.list,
                           retrieve=self.service.get, update=update,
                           delete=self.service.delete) as (routes, conversation):
            routes.post(f"{conversation}/items", self.add_items)
            routes.get(f"{conversation}/items", self.list_items)
            routes.get(f"{conversation}/items/{{item_id}}", self.retrieve_item)
            routes.delete(f"{conversation}/items/{{item_id}}", answer(self.service.delete_item, "conversation_id",
                                                                       "item_id"))

    async def list(self, request: web.Request) -> web.Response:
        return json_reply(await self.service.list_conversations(
            **page_query(request), tenant=request_tenant(request)))

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
