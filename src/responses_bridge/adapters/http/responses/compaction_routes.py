"""Compaction and input token counting on the HTTP door (in Envoy mode too: these are non-LLM
routes Envoy sends to the sidecar)."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from aiohttp import web

from ....config.upstreams import Route
from ....protocol.responses.request import parse_json_object
from ....run.upstream import UpstreamClient
from ....runtime import Runtime
from ....services.responses.compaction import CompactionService
from ....services.responses.token_count import TokenCounter
from ..identity import request_tenant
from ..params import read_body
from ..routes import api_routes


class CompactionRoutes:
    def __init__(self, runtime: Runtime, upstream: UpstreamClient,
                 clients: Mapping[str, UpstreamClient] | None = None) -> None:
        self.runtime = runtime
        self.upstream = upstream
        self.clients = clients or {}  # several upstreams: the door's own, by name; each request goes to its model's
        # the sidecar's own upstream client (through Envoy when upstream_via is set)
        self.compaction = CompactionService(runtime.store, runtime.sealer, runtime.upstream, runtime.options,
                                            runtime.file_inputs)
        self.tokens = TokenCounter(runtime.upstream, runtime.settings.upstream)
        self.counters = {name: TokenCounter(self._own(name), spec.url)
                         for name, spec in runtime.routes().upstreams.items()} if self.clients else {}

    def _own(self, name: str) -> UpstreamClient:
        return self.runtime.clients.get(name) or self.clients[name]

    def _route(self, body: bytes) -> Route:
        return self.runtime.route(parse_json_object(body).get("model"))

    def register(self, app: web.Application) -> None:
        with api_routes(app) as routes:
            routes.post("/responses/compact", self.compact)
            routes.post("/responses/input_tokens", self.input_tokens)

    async def compact(self, request: web.Request) -> web.Response:
        body = await read_body(request)
        if self.clients:  # the summary is asked of the model's own upstream, under its upstream name
            route = self._route(body)
            service = CompactionService(self.runtime.store, self.compaction.sealer, self._own(route.upstream.name),
                                        self.runtime.route_options(route), self.runtime.file_inputs)
            authorization = self.runtime.route_authorization(route, request.headers.get("Authorization"))
            result = await service.compact(body, authorization, tenant=request_tenant(request))
        else:
            authorization = self.runtime.upstream_authorization(request.headers.get("Authorization"))
            result = await self.compaction.compact(body, authorization, tenant=request_tenant(request))
        return web.Response(body=orjson.dumps(result), content_type="application/json")

    async def input_tokens(self, request: web.Request) -> web.Response:
        body = await read_body(request)
        if self.clients:  # counted by the model's own upstream's tokenizer
            route = self._route(body)
            authorization = self.runtime.route_authorization(route, request.headers.get("Authorization"))
            result = await self.counters[route.upstream.name].count(self.runtime, body, authorization,
                                                                    tenant=request_tenant(request))
        else:
            authorization = self.runtime.upstream_authorization(request.headers.get("Authorization"))
            result = await self.tokens.count(self.runtime, body, authorization, tenant=request_tenant(request))
        return web.Response(body=orjson.dumps(result), content_type="application/json")
