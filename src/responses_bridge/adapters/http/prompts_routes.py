"""``/v1/prompts`` routes of the HTTP door: reusable, versioned prompt templates (shapes in the README)."""

from __future__ import annotations

from aiohttp import web

from ...services.prompts import PromptService
from .identity import request_tenant
from .params import json_object, json_reply, page_query
from .routes import api_routes


class PromptRoutes:
    def __init__(self, service: PromptService) -> None:
        self.service = service

    def register(self, app: web.Application) -> None:
        with api_routes(app) as routes:
            base = "/prompts"
            routes.post(base, self.create)
            routes.get(base, self.list)
            routes.get(f"{base}/{{prompt_id}}", self.retrieve)
            routes.post(f"{base}/{{prompt_id}}", self.update)
            routes.put(f"{base}/{{prompt_id}}", self.update)  # the same update, by the verb the API plan names
            routes.delete(f"{base}/{{prompt_id}}", self.delete)
            routes.get(f"{base}/{{prompt_id}}/versions", self.versions)
            routes.post(f"{base}/{{prompt_id}}/default_version", self.set_default_version)

    async def create(self, request: web.Request) -> web.Response:
        return json_reply(await self.service.create(await json_object(request), tenant=request_tenant(request)))

    async def list(self, request: web.Request) -> web.Response:
        return json_reply(await self.service.list(**page_query(request, before=False),
                                                  tenant=request_tenant(request)))

    async def retrieve(self, request: web.Request) -> web.Response:
        return json_reply(await self.service.get(request.match_info["prompt_id"], request.query.get("version"),
                                                 tenant=request_tenant(request)))

    async def update(self, request: web.Request) -> web.Response:
        return json_reply(await self.service.update(request.match_info["prompt_id"], await json_object(request),
                                                    tenant=request_tenant(request)))

    async def delete(self, request: web.Request) -> web.Response:
        return json_reply(await self.service.delete(request.match_info["prompt_id"], tenant=request_tenant(request)))

    async def versions(self, request: web.Request) -> web.Response:
        return json_reply(await self.service.versions(request.match_info["prompt_id"],
                                                      tenant=request_tenant(request)))

    async def set_default_version(self, request: web.Request) -> web.Response:
        return json_reply(await self.service.set_default_version(request.match_info["prompt_id"],
                                                                 await json_object(request),
                                                                 tenant=request_tenant(request)))
