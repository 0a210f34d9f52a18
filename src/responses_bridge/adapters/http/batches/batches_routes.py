"""``/v1/batches`` routes of the HTTP door (also served without the ``/v1`` prefix): OpenAI's Batch API as the
``openai`` SDK calls it (``client.batches.create / retrieve / list / cancel``)."""

from __future__ import annotations

from aiohttp import web

from ....services.batches.batches import BatchService
from ..identity import request_tenant
from ..params import json_object, json_reply, page_query
from ..routes import answer, api_routes


class BatchRoutes:
    def __init__(self, service: BatchService) -> None:
        self.service = service

    def register(self, app: web.Application) -> None:
        with api_routes(app) as routes:
            routes.post("/batches", self.create)
            routes.get("/batches", self.list)
            routes.get("/batches/{batch_id}", answer(self.service.retrieve, "batch_id"))
            routes.post("/batches/{batch_id}/cancel", answer(self.service.cancel, "batch_id"))

    async def create(self, request: web.Request) -> web.StreamResponse:
        body = await json_object(request)
        return json_reply(await self.service.create(body, tenant=request_tenant(request),
                                                    authorization=request.headers.get("Authorization")))

    async def list(self, request: web.Request) -> web.StreamResponse:
        page = page_query(request, before=False)
        return json_reply(await self.service.list(after=page["after"], limit=page["limit"],
                                                  tenant=request_tenant(request)))
