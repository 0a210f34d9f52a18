"""``/v1/prompts`` routes of the HTTP door: reusable, versioned prompt templates (shapes in the README)."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from ....services.responses.prompts import PromptService
from ..identity import request_tenant
from ..params import json_reply
from ..routes import answer, api_routes


@dataclass(frozen=True)
class PromptRoutes:
    service: PromptService

    def register(self, app: web.Application) -> None:
        prompt = "/prompts/{prompt_id}"
        update = answer(self.service.update, "prompt_id", body=True)
        with api_routes(app) as routes:
            routes.post("/prompts", answer(self.service.create, body=True))
            routes.get("/prompts", answer(self.service.list, page=True))
            routes.get(prompt, self.retrieve)
            routes.post(prompt, update)
            routes.put(prompt, update)  # the same update, by the verb the API plan names
            routes.delete(prompt, answer(self.service.delete, "prompt_id"))
            routes.get(f"{prompt}/versions", answer(self.service.versions, "prompt_id"))
            routes.post(f"{prompt}/default_version", answer(self.service.set_default_version, "prompt_id", body=True))

    async def retrieve(self, request: web.Request) -> web.Response:
        return json_reply(await self.service.get(request.match_info["prompt_id"], request.query.get("version"),
                                                 tenant=request_tenant(request)))
