"""Compaction and input token counting on the HTTP door (in Envoy mode too: these are non-LLM
routes Envoy sends to the sidecar)."""

from __future__ import annotations

import orjson
from aiohttp import web

from ...protocol.errors import APIError
from ...run.upstream import UpstreamClient
from ...runtime import Runtime
from ...services.compaction import CompactionService
from ...services.token_count import TokenCounter
from .params import read_body


class StatefulRoutes:
    def __init__(self, runtime: Runtime, upstream: UpstreamClient) -> None:
        self.runtime = runtime
        self.upstream = upstream
        # the sidecar's own upstream client (through Envoy when upstream_via is set), else the door's
        own = runtime.upstream or upstream
        self.compaction = (CompactionService(runtime.store, runtime.sealer, own, runtime.options)
                           if runtime.sealer is not None else None)
        self.tokens = TokenCounter(own, runtime.settings.upstream)

    def register(self, app: web.Application) -> None:
        for prefix in ("/v1", ""):
            app.router.add_post(f"{prefix}/responses/compact", self.compact)
            app.router.add_post(f"{prefix}/responses/input_tokens", self.input_tokens)

    async def compact(self, request: web.Request) -> web.Response:
        if self.compaction is None:
            raise APIError(400, "Compaction needs a sealing key, and this deployment has none.",
                           code="unsupported_parameter")
        authorization = self.runtime.upstream_authorization(request.headers.get("Authorization"))
        result = await self.compaction.compact(await read_body(request), authorization)
        return web.Response(body=orjson.dumps(result), content_type="application/json")

    async def input_tokens(self, request: web.Request) -> web.Response:
        authorization = self.runtime.upstream_authorization(request.headers.get("Authorization"))
        result = await self.tokens.count(self.runtime, await read_body(request), authorization)
        return web.Response(body=orjson.dumps(result), content_type="application/json")
