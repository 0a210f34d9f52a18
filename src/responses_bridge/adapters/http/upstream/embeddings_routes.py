"""``POST /v1/embeddings`` on the HTTP door. Through Envoy the request reaches this door too (the listener's catch-all
route to the sidecar): whichever door is asked, the sidecar decides who embeds.

* The deployment's embedder (services/files/embeddings.py): the local model, or the configured embedding model.
* Any other model is an upstream's (Ollama's ``nomic-embed-text``, a vLLM embedding model, the ones its
  ``/v1/models`` lists): the body goes, unchanged but for a model name a route renames, to the ``embeddings`` of
  the upstream the model routes to (config/upstreams.py), with that upstream's credentials, as ``/v1/chat/completions``
  is passed. A 200 answer streams back as it arrives (no vector is held whole here); a refusal comes back with
  its status in OpenAI's error shape, whatever shape the upstream gave it (``upstream_error``).

The sidecar's own call goes through Envoy when ``upstream_via`` is set, naming its upstream (``ROUTE_HEADER``), so
Envoy sends it to the upstream and never back here (envoy_config/routes.py); one that comes back anyway (a
bootstrap rendered before that route existed) is refused at once instead of going round again
(:func:`upstream_routes.refuse_returning_call`).
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web

from ....engine.wire import UpstreamRequest
from ....observability.logs import note_upstream
from ....protocol.responses.request import parse_json_object
from ....run.response_run import LARGE_BODY_BYTES
from ....run.upstream import UpstreamFailure
from ....runtime import Runtime
from ....services.files.embedding_refusals import upstream_error
from ....services.files.vector_stores_on_demand import VectorStoresOnDemand
from ..params import read_body
from ..routes import api_routes
from .upstream_routes import ERROR_BODY_BYTES, answer_head, passthrough_cut, refuse_returning_call

EMBEDDINGS_PATH = "embeddings"


class EmbeddingRoutes:
    """``POST /v1/embeddings``: the embedder's models answered by the embeddings service, which the first of them
    builds (with the embedder: services/files/vector_stores_on_demand.py); any other passed to its upstream."""

    def __init__(self, vector_stores: VectorStoresOnDemand, runtime: Runtime) -> None:
        self.vector_stores = vector_stores
        self.runtime = runtime

    def register(self, app: web.Application) -> None:
        with api_routes(app) as routes:
            routes.post("/embeddings", self.create)

    async def create(self, request: web.Request) -> web.StreamResponse:
        raw = await read_body(request)
        body = await asyncio.to_thread(parse_json_object, raw) if len(raw) > LARGE_BODY_BYTES else \
            parse_json_object(raw)  # tens of MB of inputs would stall the event loop
        model = body.get("model")
        if isinstance(model, str) and model and not self.vector_stores.names.answers(model):
            refuse_returning_call(request, self.runtime)
            return await self._passthrough(request, raw, body, model)
        del raw
        status, answer = await (await self.vector_stores.embeddings()).create(body)
        return web.Response(status=status, body=answer, content_type="application/json")

    async def _passthrough(self, request: web.Request, raw: bytes, body: dict[str, Any],
                           model: str) -> web.StreamResponse:
        """The request to the embeddings of the upstream ``model`` routes to; its answer streamed back."""
        route = self.runtime.route(model)  # several upstreams: a 404 model_not_found when none serves it
        note_upstream(route.upstream.name, "passthrough")
        if route.upstream_model:
            raw = orjson.dumps({**body, "model": route.upstream_model})
        authorization = self.runtime.route_authorization(route, request.headers.get("Authorization"))
        client = self.runtime.client_for(route) or self.runtime.upstream
        response: web.StreamResponse | None = None
        try:
            async with client.chat(UpstreamRequest(EMBEDDINGS_PATH, raw, False), authorization) as answer:
                if answer.status != 200:
                    raise upstream_error(answer.status, await answer_head(answer, ERROR_BODY_BYTES))
                response = web.StreamResponse(status=200)
                response.content_type = (answer.content_type or "application/json").split(";")[0]
                await response.prepare(request)
                async for chunk in answer.chunks():
                    await response.write(chunk)
        except UpstreamFailure as failure:
            return passthrough_cut(request, response, failure, "embeddings_passthrough_cut", route.upstream.name)
        await response.write_eof()
        return response
