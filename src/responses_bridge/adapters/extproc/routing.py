"""Who is asking and where the request goes: the caller's identity (auth keys or the tenant header, a 401 as an
immediate response), the passthrough routes (``/v1/chat/completions``, ``/v1/models``: only their upstream and
credentials change), and the hand-off of a request with server-side tools to the sidecar's HTTP door."""

from __future__ import annotations

import orjson

from ...observability.logs import note_upstream
from ...protocol.errors import APIError
from ...protocol.responses.request import parse_json_object
from ...services.tenancy.identity import SIDECAR_HEADER
from . import messages as m
from ._pb.ext_proc_pb2 import ProcessingResponse
from .chat_phase import ChatPhase
from .replica_pick import name_replica, pick_replica, replicated
from .stream_state import JSON, REFUSED


class Routing(ChatPhase):
    __slots__ = ()

    async def _identify(self, authorization: str | None, tenant_header: str | None) -> ProcessingResponse | None:
        """Sets ``tenant`` from the request's credentials (services/tenancy/identity.py), or returns the 401 that
        answers the request instead (an immediate response: nothing goes upstream)."""
        try:
            self.tenant = await self.runtime.identity.tenant(authorization, tenant_header)
        except APIError as error:
            self.ours = True
            self.done = True
            return m.immediate_response(error.status, error.body(), JSON)
        if self.observed is not None:
            self.observed.tenant = self.tenant
        return None

    async def _identify_passthrough(self, headers: dict[str, str]) -> ProcessingResponse | None:
        """A passthrough route (``/v1/chat/completions``, ``/v1/models``) with ``auth: keys``: the upstream gets the
        configured key, so the caller must hold a bridge key, or be this sidecar's own call through Envoy."""
        identity = self.runtime.identity
        if identity.mode != "keys" or identity.is_sidecar(headers.get(SIDECAR_HEADER)):
            return None
        return await self._identify(headers.get("authorization"), None)

    def _refuse(self) -> ProcessingResponse:
        """A new response while the sidecar drains: 503 at once, before anything is sent upstream."""
        self.ours = True
        self.done = True
        return m.immediate_response(REFUSED.status, REFUSED.body(), JSON)

    async def _route_chat(self, body: bytes) -> ProcessingResponse:
        """``POST /v1/chat/completions``: the body goes on as it is, and with ``store: true`` its answer is read
        and stored (chat_phase.py); else the processor ends its gRPC stream after this reply and the answer
        passes untouched, never sent to it.
        With several upstreams the model picks the upstream: Envoy sends the body (the model renamed when the
        route says so; nothing else changes) to its cluster. The bootstrap sends this route's request headers to
        the processor, so its header mutations (the upstream's key) apply."""
        self.routed = True
        self.done = True
        try:
            decoded = parse_json_object(body)
            route = self.runtime.route(decoded.get("model"))  # one upstream: always its route, never an error
        except APIError as error:
            return m.immediate_response(error.status, error.body(), JSON)
        note_upstream(route.upstream.name, "passthrough")
        recorder = self._chat_recorder(decoded)
        if isinstance(recorder, ProcessingResponse):
            return recorder
        if recorder is not None:
            identity = self.runtime.identity
            if not identity.anonymous and identity.mode != "keys":  # keys: identified with the request headers
                denied = await self._identify(self.authorization, self.tenant_header)
                if denied is not None:
                    return denied
        picked = None
        if not self.replica_named and replicated(route.upstream.name):  # replicas: the warmest for its prefix
            picked = self.picked = await pick_replica(route.upstream.name, (), body)
        if recorder is not None:
            self._chat_record(recorder, decoded)
        elif self.runtime.chat_completions.enabled or picked is not None:  # the route sends the answer's headers
            # (envoy_config/routes.py): seen for an error to make OpenAI's (chat_phase.py) and to end the pick,
            # then the processor lets go
            self.chat_watch = True
            self.done = False
        else:
            self.released = True  # the answer passes without the processor: the stream ends after this reply
        if self.runtime.routes().single:  # one upstream: the credentials were set with the request headers
            if picked is None:
                return m.CONTINUE_REQUEST_BODY
            reply = m.request_body_reply(None, (), ())
            await name_replica(reply, picked)
            return reply
        set_headers: list[tuple[str, str]] = []
        new_body: bytes | None = None
        if route.upstream_model:
            renamed = dict(decoded, model=route.upstream_model)
            new_body = orjson.dumps(renamed)
            set_headers.append(("content-length", str(len(new_body))))
        authorization = self.runtime.route_authorization(route, self.authorization)
        if authorization is not None and authorization != self.authorization:
            set_headers.append(("authorization", authorization))
        # auth: keys without the upstream's own key: the client's bridge key goes no further
        remove = ("authorization",) if authorization is None and self.authorization is not None else ()
        reply = m.request_body_reply(new_body, set_headers, remove)
        if picked is not None:
            await name_replica(reply, picked)
        m.choose_upstream(reply, route.upstream.name)
        return reply

    def _route_to_sidecar(self) -> ProcessingResponse:
        """A request with server-side tools this deployment runs: the tool loop makes several model turns, and
        each must go through Envoy (balancing, metering, rate limits). The HTTP door runs the loop and makes
        every turn through Envoy's listener (``upstream_via``), so Envoy routes the request, unchanged, to that
        door; this processor only passes the door's answer through from here on (see the module docstring for why
        the gRPC stream is not closed here)."""
        self.ours = False
        self.routed = True
        self.done = True
        self.run = None  # nothing was begun: no response to abandon or to end on a drain
        return m.route_to_sidecar()


def _sidecar_header(headers: dict[str, str]) -> tuple[str, ...]:
    """The sidecar's own credential, removed once checked: it never reaches the upstream."""
    return (SIDECAR_HEADER,) if SIDECAR_HEADER in headers else ()
