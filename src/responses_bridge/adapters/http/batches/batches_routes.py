"""``/v1/batches`` routes of the HTTP door (also served without the ``/v1`` prefix): OpenAI's Batch API as the
``openai`` SDK calls it (``client.batches.create / retrieve / list / cancel``)."""

from __future__ import annotations

import structlog
from aiohttp import web

from ....services.batches.batches import BatchService
from ....services.batches.shapes import CREATE_FIELDS
from ..identity import request_tenant
from ..params import UNKNOWN_FIELDS, json_object, json_reply, page_query
from ..routes import answer, api_routes

log = structlog.get_logger("responses_bridge.http")


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
        if request.config_dict.get(UNKNOWN_FIELDS, "reject") != "reject":  # RESPONSES_BRIDGE_UNKNOWN_FIELDS=warn
            for name in sorted(set(body) - CREATE_FIELDS)[:1]:
                log.warning("unknown_request_field_accepted", param=name[:200], route="batches.create")
            body = {name: value for name, value in body.items() if name in CREATE_FIELDS}
        return json_reply(await self.service.create(body, tenant=request_tenant(request),
                                                    authorization=request.headers.get("Authorization")))

    async def list(self, request: web.Request) -> web.StreamResponse:
        page = page_query(request, before=False)
        return json_reply(await self.service.list(after=page["after"], limit=page["limit"],
                                                  tenant=request_tenant(request)))
