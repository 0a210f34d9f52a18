"""``POST /v1/embeddings`` on the HTTP door (services/embeddings.py). Through Envoy the request reaches this door
too (the listener's catch-all route to the sidecar): the embedder is the sidecar's, whichever door is asked."""

from __future__ import annotations

from aiohttp import web

from ...services.embeddings import EmbeddingService
from .params import json_object
from .routes import api_routes


class EmbeddingRoutes:
    def __init__(self, service: EmbeddingService) -> None:
        self.service = service

    def register(self, app: web.Application) -> None:
        with api_routes(app) as routes:
            routes.post("/embeddings", self.create)

    async def create(self, request: web.Request) -> web.Response:
        status, body = await self.service.create(await json_object(request))
        return web.Response(status=status, body=body, content_type="application/json")
