"""A batch's lines served as their endpoint's route serves a request, in this process: ``/v1/responses`` through
the same run and driver as ``POST /v1/responses`` (responses/responses_routes.py: the translation, the server-side
tools, ``store``), ``/v1/chat/completions`` passed to the routed upstream as ``POST /v1/chat/completions`` is
(upstream/upstream_routes.py, ``store: true`` recorded), ``/v1/embeddings`` answered by the embedder or passed to
the model's upstream (upstream/embeddings_routes.py). Each as the batch's tenant, with the tenant's limits, memory
budget and upstream places, and the credentials the route would send upstream (the configured key, else the
client's own ``Authorization`` the batch was created with, kept sealed). Under Envoy the sidecar's model calls go
through Envoy (``upstream_via``), as its HTTP door's do: the same clients.

A line's answer is not streamed: a line asking ``stream`` or ``background`` is refused as that line's error (a
batch's answers are files), as is anything the route would refuse; the rest of the batch goes on.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import orjson

from ....engine.upstream_errors import upstream_error
from ....engine.wire import UPSTREAM_PATH, UpstreamRequest
from ....fairness.memory_charge import body_cost, charge, hold, release_hold
from ....protocol.errors import APIError, invalid_request
from ....protocol.responses.request import parse_json_object
from ....run.drive import drive
from ....run.upstream import UpstreamClient, UpstreamFailure
from ....runtime import Runtime
from ....services.batches.lines import LineAnswer
from ....services.files.embedding_refusals import upstream_error as embedding_error
from ....services.tenancy.memory_budget import Held

ENDPOINTS = ("/v1/responses", "/v1/chat/completions", "/v1/embeddings")
"""What a batch's lines may be sent to here: the SDK's batch endpoints the bridge serves."""
MAX_ANSWER_BYTES = 64 * 1024 * 1024
"""Of one line's passed-through answer (a chat completion, embeddings): more is that line's error."""
ERROR_BODY_BYTES = 64 * 1024
LIMIT_WAIT_SECONDS = (0.05, 1.0)
"""A line waits for room under its tenant's ``max_concurrent_requests`` rather than failing with the 429 an
interactive request gets: from the first to the longest pause between looks."""


class _NoStream:
    """The driver's sink for an answer that is one JSON body: nothing is written before it."""

    async def open(self, head: bytes) -> None:
        return None

    async def write(self, data: bytes) -> None:
        return None

    def ending(self) -> None:
        return None

    async def keepalive(self) -> None:
        return None


class DoorLineServer:
    """:class:`~responses_bridge.services.batches.lines.LineServer` over the door's runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._lines: dict[str, int] = {}  # each tenant's lines running now

    @property
    def endpoints(self) -> tuple[str, ...]:
        return ENDPOINTS

    def forwards_authorization(self, endpoint: str) -> bool:
        return self.runtime.forwards_client_authorization(None, "Bearer -")

    async def serve(self, endpoint: str, body: bytes, *, tenant: str, authorization: str | None) -> LineAnswer:
        request_id = f"req_{os.urandom(16).hex()}"
        await self._place(tenant)
        # the line's memory held as a request's is (adapters/http/limits.py): its body's cost, and whatever the run
        # loads beyond it charged to the same hold (fairness/memory_charge.py), against the tenant's share
        memory = self.runtime.memory
        held = Held(memory, memory.holder(tenant, authorization))
        holding = hold(held)
        try:
            await _covered(held, body_cost(body))
            decoded = parse_json_object(body)
            if decoded.get("stream") is True:
                raise invalid_request("A batch's requests cannot be streamed: 'stream' must be false or absent.",
                                      param="stream", code="invalid_value")
            if endpoint == "/v1/responses":
                status, answer = await self._response(decoded, tenant, authorization)
            elif endpoint == "/v1/chat/completions":
                status, answer = await self._chat(decoded, tenant, authorization)
            elif endpoint == "/v1/embeddings":
                status, answer = await self._embeddings(decoded, authorization)
            else:
                raise invalid_request(f"Endpoint {endpoint!r} is not served here.", param="url")
        except APIError as error:
            return LineAnswer(error.status, error.body(), request_id)
        finally:
            held.release()
            release_hold(holding)
            self._lines[tenant] -= 1
            if not self._lines[tenant]:
                del self._lines[tenant]
        return LineAnswer(status, answer, request_id)

    async def _place(self, tenant: str) -> None:
        """Room for one more of the tenant's lines under its ``max_concurrent_requests``: its requests in flight
        and its lines running together below the limit. The lines are not counted among its requests: an
        interactive request of the tenant is never refused (429) for its batch's lines, which only take the room
        its requests leave (and then hold it until they finish)."""
        limits = self.runtime.limits
        limit = limits.policy(tenant).max_concurrent_requests
        pause, longest = LIMIT_WAIT_SECONDS
        while limit is not None and limits.in_flight(tenant) + self._lines.get(tenant, 0) >= limit:
            await asyncio.sleep(pause)
            pause = min(pause * 2, longest)
        self._lines[tenant] = self._lines.get(tenant, 0) + 1

    async def _response(self, decoded: dict[str, Any], tenant: str,
                        authorization: str | None) -> tuple[int, bytes]:
        """As ``POST /v1/responses`` (responses_routes.py's ``_create``), without its stream."""
        if decoded.get("background") is True:
            raise invalid_request("A batch's requests cannot run in the background: 'background' must be false or "
                                  "absent.", param="background", code="invalid_value")
        runtime = self.runtime
        upstream: UpstreamClient
        if runtime.clients:
            route = runtime.route(decoded.get("model"))
            run = runtime.new_routed_run(route, tool_loop=True, tools=decoded.get("tools"), tenant=tenant)
            call = await run.begin(decoded)
            upstream = runtime.clients[route.upstream.name]
            sent = runtime.route_authorization(route, authorization)
        else:
            run = runtime.new_run(tool_loop=True, tenant=tenant)
            call = await run.begin(decoded)
            upstream = runtime.upstream
            sent = runtime.upstream_authorization(authorization)
        try:
            reply = await drive(run, call, upstream, sent, _NoStream(),
                                keepalive=runtime.settings.stream_keepalive_seconds)
        except asyncio.CancelledError:
            await run.abandon()
            raise
        return reply.status, reply.body

    async def _chat(self, decoded: dict[str, Any], tenant: str, authorization: str | None) -> tuple[int, bytes]:
        """As ``POST /v1/chat/completions`` (upstream_routes.py): to the routed upstream, ``store: true`` kept."""
        runtime = self.runtime
        route = runtime.route(decoded.get("model"))
        recorder = runtime.chat_completions.recorder(decoded)
        stored_request = dict(decoded) if recorder is not None else None
        if route.upstream_model:
            decoded["model"] = route.upstream_model
        client = runtime.clients.get(route.upstream.name, runtime.upstream)
        sent = runtime.route_authorization(route, authorization)
        status, answer = await _passed(client, UpstreamRequest(UPSTREAM_PATH, orjson.dumps(decoded), False), sent,
                                       upstream_error)
        if recorder is not None and stored_request is not None and status == 200:
            recorder.relay(answer)
            answer = recorder.relay_end()
            await runtime.chat_completions.save(stored_request, recorder, tenant=tenant)
        return status, answer

    async def _embeddings(self, decoded: dict[str, Any], authorization: str | None) -> tuple[int, bytes]:
        """As ``POST /v1/embeddings`` (embeddings_routes.py): the embedder's models here, any other its upstream's."""
        runtime = self.runtime
        model = decoded.get("model")
        if isinstance(model, str) and model and not runtime.vector_stores.names.answers(model):
            route = runtime.route(model)
            if route.upstream_model:
                decoded = {**decoded, "model": route.upstream_model}
            client = runtime.client_for(route) or runtime.upstream
            return await _passed(client, UpstreamRequest("embeddings", orjson.dumps(decoded), False),
                                 runtime.route_authorization(route, authorization), embedding_error)
        return await (await runtime.vector_stores.embeddings()).create(decoded)


async def _covered(held: Held, cost: int) -> None:
    """The line's body covered in the memory budget, waiting as long as it takes: a request is refused (503) when no
    room comes within the budget's wait, a line waits again instead (it is in no hurry)."""
    while True:
        try:
            await held.cover(cost)
            return
        except APIError as refused:
            if refused.status != 503:
                raise


async def _passed(client: UpstreamClient, call: UpstreamRequest, authorization: str | None,
                  refusal: Any) -> tuple[int, bytes]:
    """An upstream's answer to a passed-through request, read whole (up to :data:`MAX_ANSWER_BYTES`); an error
    answer in OpenAI's shape as the route gives it (``refusal(status, body)`` raised)."""
    try:
        async with client.chat(call, authorization) as answer:
            limit = ERROR_BODY_BYTES if answer.status >= 400 else MAX_ANSWER_BYTES
            kept = bytearray()
            async for chunk in answer.chunks():
                kept += chunk
                charge(len(chunk), 1)  # the answer kept whole here (the route streams it): held by the line
                if len(kept) > limit:
                    if answer.status >= 400:
                        break
                    raise APIError(502, f"The upstream's answer is over {MAX_ANSWER_BYTES} bytes, more than a batch "
                                   "line keeps.", type="server_error", code="upstream_answer_too_large")
            status = answer.status
    except UpstreamFailure as failure:
        raise failure.error from None
    if status >= 400:
        raise refusal(status, bytes(kept[:limit]))
    return status, bytes(kept)
