"""HTTP door routes that reach the upstreams as they are: ``POST /v1/chat/completions`` passed through to the
routed upstream (streaming included), and ``GET /v1/models[/{id}]`` over the configured routes.

One base URL then serves both APIs: a Chat Completions client is sent, unchanged, to the upstream its model routes
to (only the model name is replaced when the route renames it). The model list is what the routes name, merged
with what each upstream reports and the routes send it, and the deployment's embedder (``POST /v1/embeddings``
answers it: embeddings_routes.py) beside them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
import structlog
from aiohttp import web

from ....config.upstreams import Route
from ....engine.chat_record import ChatRecorder
from ....engine.upstream_errors import upstream_error
from ....engine.wire import UPSTREAM_PATH, UpstreamRequest
from ....observability.logs import note_upstream
from ....protocol.errors import APIError
from ....protocol.responses.request import parse_json_object
from ....run.upstream import UpstreamAnswer, UpstreamClient, UpstreamFailure
from ....runtime import Runtime
from ...upstream_client import ROUTE_HEADER
from ..identity import request_tenant
from ..params import read_body
from ..routes import api_routes
from .codex_models import models_answer

log = structlog.get_logger("responses_bridge.http")

def refuse_returning_call(request: web.Request, runtime: Runtime) -> None:
    """The sidecar's own call through Envoy (``upstream_via``), which names its upstream in :data:`ROUTE_HEADER`,
    come back to this door: Envoy's bootstrap has no route sending it upstream (one rendered by an older
    ``envoy-config``). Answering it would make the same call again, round and round: a 508 that says what to do."""
    if runtime.settings.upstream_via and ROUTE_HEADER in request.headers:
        raise APIError(508, "Envoy sent the sidecar's own upstream call back to the sidecar: its bootstrap has no "
                       f"route for {request.method} {request.path} marked with {ROUTE_HEADER}. Render it again with "
                       "this version's `responses-bridge envoy-config`.", type="server_error", code="upstream_loop")


def passthrough_cut(request: web.Request, response: web.StreamResponse | None, failure: UpstreamFailure,
                    event: str, upstream: str) -> web.StreamResponse:
    """A passed-through answer's upstream failing: before anything was sent the client gets the error (raised);
    once the answer was on its way it ends cut, as the upstream's own did (a clean end would tell the client a
    truncated answer was whole), logged as ``event``."""
    if response is None or not response.prepared:
        raise failure.error from None
    log.warning(event, upstream=upstream, error=failure.error.message)
    if request.transport is not None:
        request.transport.abort()
    return response


def with_embedder(body: dict[str, Any], embedder: dict[str, Any] | None) -> dict[str, Any]:
    """An OpenAI model list with the deployment's embedder after the upstreams' models, unless listed already."""
    data = body.get("data")
    if embedder is None or not isinstance(data, list):
        return body
    if any(isinstance(model, dict) and model.get("id") == embedder["id"] for model in data):
        return body
    return {**body, "data": [*data, embedder]}


ERROR_BODY_BYTES = 64 * 1024  # of an upstream's error answer: enough for any message, nothing to hold for long
"""What is read of an upstream's error answer: enough for any error object, never a whole stray page."""


async def answer_head(answer: UpstreamAnswer, limit: int) -> bytes:
    """The first ``limit`` bytes of an upstream's (error) answer, the rest left unread: enough for any message,
    nothing to hold for long."""
    held = bytearray()
    async for chunk in answer.chunks():
        held += chunk[:limit - len(held)]
        if len(held) >= limit:
            break
    return bytes(held)


async def _error_answer(answer: UpstreamAnswer) -> web.Response:
    """An upstream's error answer in OpenAI's shape: one already in it passes unchanged (status and body, a client
    of that backend expects its own codes); anything else (a proxy's HTML page, a plain-text 500) is made into
    one as every other route makes it — a 4xx keeps its status, a 5xx is a 502 (engine/upstream_errors.py)."""
    body = await answer_head(answer, ERROR_BODY_BYTES)
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError:
        decoded = None
    error = decoded.get("error") if isinstance(decoded, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return web.Response(status=answer.status, body=body, content_type="application/json")
    raise upstream_error(answer.status, body)


class UpstreamRoutes:
    """``clients``: the door's own, one per upstream by name; ``upstream``: the single ``--upstream``'s;
    ``embedder``: the embedder's ``GET /v1/models`` entry (services/files/embeddings.py), or None."""

    def __init__(self, runtime: Runtime, upstream: UpstreamClient, clients: Mapping[str, UpstreamClient],
                 embedder: dict[str, Any] | None = None) -> None:
        self.runtime = runtime
        self.upstream = upstream
        self.clients = clients
        self.embedder = embedder

    def register(self, app: web.Application) -> None:
        with api_routes(app) as routes:
            routes.post("/chat/completions", self.chat_completions)
            if self.clients:  # else app.py passes the one upstream's list through
                routes.get("/models", self.list_models)
            routes.get("/models/{model_id}", self.get_model)

    def _client(self, route: Route) -> UpstreamClient:
        return self.clients.get(route.upstream.name, self.upstream)

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        """The body goes to the routed upstream's ``chat/completions`` unchanged (but for a renamed model), and
        its answer comes back as it arrives: status, content type and bytes."""
        body = await read_body(request)
        decoded = parse_json_object(body)
        route = self.runtime.route(decoded.get("model"))
        note_upstream(route.upstream.name, "passthrough")
        stream = decoded.get("stream") is True
        # ``store: true``: the answer is read on its way (services/responses/chat_completions.py), all else is not
        recorder = self.runtime.chat_completions.recorder(decoded)
        stored_request = dict(decoded) if recorder is not None else None
        if route.upstream_model:
            decoded["model"] = route.upstream_model
            body = orjson.dumps(decoded)
        del decoded
        authorization = self.runtime.route_authorization(route, request.headers.get("Authorization"))
        call = UpstreamRequest(UPSTREAM_PATH, body, stream)
        response: web.StreamResponse | None = None
        try:
            async with self._client(route).chat(call, authorization) as answer:
                if answer.status >= 400:
                    return await _error_answer(answer)
                response = web.StreamResponse(status=answer.status)
                response.content_type = (answer.content_type or "application/json").split(";")[0]
                if recorder is not None and stored_request is not None and answer.status == 200:
                    await self._stored(request, response, answer.chunks(), recorder, stored_request)
                else:
                    await response.prepare(request)
                    async for chunk in answer.chunks():
                        await response.write(chunk)
        except UpstreamFailure as failure:
            return passthrough_cut(request, response, failure, "chat_completions_passthrough_cut", route.upstream.name)
        await response.write_eof()
        return response

    async def _stored(self, request: web.Request, response: web.StreamResponse, chunks: AsyncIterator[bytes],
                      recorder: ChatRecorder, stored_request: dict[str, Any]) -> None:
        """A ``store: true`` answer, passed on with the bridge's id for the upstream's (engine/chat_ids.py) and stored
        before its terminal bytes go out: a JSON answer is held until it is whole (then stored, then sent); a
        stream's chunks go out as they come, but the one carrying ``[DONE]`` (or the end, without one) only once
        the completion is stored."""
        tenant = request_tenant(request)
        if not recorder.stream:
            async for chunk in chunks:
                recorder.relay(chunk)
            body = recorder.relay_end()
            await self.runtime.chat_completions.save(stored_request, recorder, tenant=tenant)
            response.content_length = len(body)
            await response.prepare(request)
            await response.write(body)
            return
        await response.prepare(request)
        saved = False
        async for chunk in chunks:
            out = recorder.relay(chunk)
            if recorder.done and not saved:
                saved = True
                await self.runtime.chat_completions.save(stored_request, recorder, tenant=tenant)
            if out:
                await response.write(out)
        rest = recorder.relay_end()
        if not saved:
            await self.runtime.chat_completions.save(stored_request, recorder, tenant=tenant)
        if rest:
            await response.write(rest)

    async def list_models(self, request: web.Request) -> web.Response:
        """Every model a route names, then every model an upstream reports that a route sends to it, then the
        embedder."""
        refuse_returning_call(request, self.runtime)
        router = self.runtime.routes()
        authorization = request.headers.get("Authorization")
        reported = await asyncio.gather(*(self._reported(name, authorization) for name in router.upstreams))
        data: dict[str, dict[str, Any]] = {}
        for model_id in router.configured_models():
            data[model_id] = _model_object(model_id, router.route(model_id).upstream.name)
        for name, models in zip(router.upstreams, reported, strict=True):
            for model in models:
                reported_id = model.get("id")
                if not isinstance(reported_id, str) or reported_id in data:
                    continue
                model_id = reported_id
                try:
                    route = router.route(model_id)
                except APIError:
                    continue
                if route.upstream.name == name and route.upstream_model is None:
                    data[model_id] = {**model, "object": "model"}
        # Codex's catalog request (``?client_version=``) gets its ``models`` beside OpenAI's list:
        # codex_models.py
        return models_answer(request, with_embedder({"object": "list", "data": list(data.values())}, self.embedder))

    async def get_model(self, request: web.Request) -> web.Response:
        """One model: 404 ``model_not_found`` when no route serves it; what its upstream says of it, if anything;
        the embedder's own entry for its id."""
        model_id = request.match_info["model_id"]
        if self.embedder is not None and model_id == self.embedder["id"]:
            return web.Response(body=orjson.dumps(self.embedder), content_type="application/json")
        route = self.runtime.route(model_id)
        upstream_id = route.upstream_model or model_id
        for model in await self._reported(route.upstream.name, request.headers.get("Authorization")):
            if model.get("id") == upstream_id:
                return web.Response(body=orjson.dumps({**model, "id": model_id, "object": "model"}),
                                    content_type="application/json")
        if self.runtime.routes().single:  # the single upstream is the only authority on its models
            raise _model_not_found(model_id)
        return web.Response(body=orjson.dumps(_model_object(model_id, route.upstream.name)),
                            content_type="application/json")

    async def _reported(self, name: str, client_authorization: str | None) -> list[dict[str, Any]]:
        """The upstream's own model list; empty when it cannot give one (logged: the configured routes stand)."""
        router = self.runtime.routes()
        authorization = router.authorization(router.upstreams[name], client_authorization)
        client = self.clients.get(name, self.upstream)
        try:
            async with client.get("models", authorization) as response:
                body = await client.read_answer(response)
                status = response.status
            data = orjson.loads(body).get("data") if status < 400 else None
        except (UpstreamFailure, orjson.JSONDecodeError, AttributeError) as exc:
            log.warning("upstream_models_failed", upstream=name, error=str(exc))
            return []
        if status >= 400 or not isinstance(data, list):
            log.warning("upstream_models_failed", upstream=name, status=status)
            return []
        return [model for model in data if isinstance(model, dict)]


def _model_object(model_id: str, upstream: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": upstream}


def _model_not_found(model_id: str) -> APIError:
    return APIError(404, f"The model '{model_id}' does not exist or you do not have access to it.",
                    type="invalid_request_error", param="model", code="model_not_found")
