"""The environment registry and rendezvous of ``codex exec-server --remote`` (its direct transport), served by the
HTTP door, so a ``self_hosted`` session's commands run through the client's own exec-server instead of being handed
to the client as required actions.

* ``POST /v1/agents/sessions/{session_id}/executor_credentials`` (the tenant's bridge key): the session's executor
  credentials (services/executor_hub.py) and the ``--remote`` path to give the exec-server;
* ``POST /v1/agents/executor/cloud/environment/{environment_id}/direct/register``: the exec-server's registration,
  signed with those credentials (SigV4); answered with a one-time websocket URL;
* ``GET /v1/agents/executor/connect/{registration_id}?token=…``: that websocket (also signed), JSON-RPC from then on
  (services/executor_rpc.py);
* ``POST …/cloud/environment/{environment_id}/register``: the Noise relay's registration, refused with a 400 that
  says what to run instead.

The ``/v1/agents/executor/`` paths authenticate themselves (the identity middleware passes them on: the exec-server
carries no bridge key), and only ever as the tenant the signature names.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson
import structlog
from aiohttp import web

from ...protocol.errors import APIError
from ...services.agent_executor_calls import on_attached
from ...services.agent_sessions import SessionService
from ...services.executor_hub import (
    Claim,
    ExecutorHub,
    RegistrationRefused,
    access_key_id,
    key_owner,
    secret_access_key,
)
from ...services.executor_rpc import MAX_FRAME_BYTES, DirectChannel, ExecutorConnection, ExecutorError, ExecutorGone
from ...services.executor_sigv4 import SignatureRefused, verify
from .drain import DRAIN
from .identity import request_tenant
from .params import json_reply, read_body
from .routes import api_routes

log = structlog.get_logger("responses_bridge.executor")

EXECUTOR_PREFIX = "/v1/agents/executor/"
"""Paths the identity middleware leaves to these routes (they check a signature, not a bridge key)."""
TRANSPORT = "direct_jsonrpc_v1"
MAX_REGISTRATION_BYTES = 4096
NOISE_REFUSED = ("This bridge serves `codex exec-server --remote` over its direct transport only: run it with "
                 "`--remote-transport direct --aws-sigv4` and the session's executor credentials "
                 "(POST /v1/agents/sessions/{session_id}/executor_credentials). The Noise relay "
                 "(security_profile noise_hybrid_ik_v1) is not served.")


def _refused(status: int, message: str, code: str) -> APIError:
    return APIError(status, message, code=code)


class ExecutorRoutes:
    def __init__(self, sessions: SessionService, hub: ExecutorHub) -> None:
        self.sessions = sessions
        self.hub = hub
        self._serving: set[asyncio.Task[None]] = set()
        self._closing: list[asyncio.Future[None]] = []

    def register(self, app: web.Application) -> None:
        with api_routes(app) as routes:
            routes.post("/agents/sessions/{session_id}/executor_credentials", self.credentials)
        app.router.add_post(EXECUTOR_PREFIX + "cloud/environment/{environment_id}/register", self.noise_register)
        app.router.add_post(EXECUTOR_PREFIX + "cloud/environment/{environment_id}/direct/register",
                            self.register_direct)
        app.router.add_get(EXECUTOR_PREFIX + "connect/{registration_id}", self.connect)
        app.on_shutdown.append(self._close_all)
        app.on_startup.append(self._on_drain)

    async def _self_hosted(self, session_id: str, tenant: str) -> dict[str, Any]:
        session = await self.sessions.get(session_id, tenant=tenant)  # another tenant's: the same 404
        environment = session.get("environment") or {}
        if environment.get("type") != "self_hosted":
            raise APIError(400, "Executor credentials are for a session whose environment is 'self_hosted'.",
                           param="session_id", code="invalid_value")
        return environment

    async def credentials(self, request: web.Request) -> web.Response:
        tenant, session_id = request_tenant(request), request.match_info["session_id"]
        environment = await self._self_hosted(session_id, tenant)
        reply = json_reply({
            "object": "agent.session.executor_credentials", "session_id": session_id,
            "environment_id": environment["id"], "remote_path": EXECUTOR_PREFIX.rstrip("/"),
            "transport": TRANSPORT, "aws_access_key_id": access_key_id(tenant, session_id),
            "aws_secret_access_key": secret_access_key(self.hub.sealer, tenant, session_id),
            "connected": self.hub.connection(tenant, environment["id"]) is not None})
        reply.headers["Cache-Control"] = "no-store"
        return reply

    async def noise_register(self, request: web.Request) -> web.Response:
        raise APIError(400, NOISE_REFUSED, param="security_profile", code="unsupported_value")

    def _signed(self, request: web.Request, body: bytes) -> tuple[str, str]:
        """The (tenant, session id) whose credentials signed the request; a 401 otherwise."""
        try:
            signed = verify(method=request.method, raw_path=request.raw_path.split("?", 1)[0],
                            raw_query=request.query_string, headers=request.headers, body=body,
                            secret_for=self.hub.secret_for)
        except SignatureRefused as refused:
            raise _refused(401, f"The exec-server's request is not signed by executor credentials: {refused}.",
                           "invalid_signature") from None
        owner = key_owner(signed.access_key_id)
        if owner is None:  # cannot be: secret_for knew the key
            raise _refused(401, "Unknown executor credentials.", "invalid_signature")
        return owner

    async def register_direct(self, request: web.Request) -> web.Response:
        if request.content_length is None or request.content_length > MAX_REGISTRATION_BYTES:
            raise _refused(413, f"A registration is a JSON body of at most {MAX_REGISTRATION_BYTES} bytes.",
                           "request_too_large")  # read before its signature can be checked: bounded first
        body = await read_body(request)
        tenant, session_id = self._signed(request, body)
        environment_id = request.match_info["environment_id"]
        try:
            asked = orjson.loads(body) if body else {}
        except orjson.JSONDecodeError:
            raise _refused(400, "The registration body is not JSON.", "invalid_json") from None
        if not isinstance(asked, dict) or asked.get("transport") != TRANSPORT:
            raise APIError(400, f"Only the '{TRANSPORT}' transport is served.", param="transport",
                           code="unsupported_value")
        environment = await self._self_hosted(session_id, tenant)
        if environment["id"] != environment_id:  # the credentials are the session's, for its environment only
            raise APIError(404, f"No environment with id '{environment_id}' for these credentials.",
                           code="not_found")
        try:
            registration_id, token = self.hub.register(Claim(tenant, session_id, environment_id))
        except RegistrationRefused as refused:
            raise _refused(429, f"{refused}.", "rate_limit_exceeded") from None
        scheme = "wss" if request.headers.get("X-Forwarded-Proto", request.scheme) == "https" else "ws"
        url = f"{scheme}://{request.host}{EXECUTOR_PREFIX}connect/{registration_id}?token={token}"
        log.info("executor_registered", tenant=tenant, session_id=session_id, environment_id=environment_id)
        return json_reply({"environment_id": environment_id, "transport": TRANSPORT,
                           "registration_id": registration_id, "url": url})

    async def connect(self, request: web.Request) -> web.StreamResponse:
        tenant, session_id = self._signed(request, b"")
        claim = self.hub.claim(request.match_info["registration_id"], request.query.get("token", ""))
        if claim is None or (claim.tenant, claim.session_id) != (tenant, session_id):
            # a 409 makes codex register again (its URL outlived a restart, a drain or a disconnect)
            raise _refused(409, "Unknown or spent exec-server registration: register again.", "invalid_registration")
        if self.hub.connection(claim.tenant, claim.environment_id) is not None:
            raise _refused(409, "Another exec-server serves this session's environment.", "environment_served")
        if not self.hub.may_connect(claim):
            raise _refused(429, "Too many exec-servers connected for this tenant.", "rate_limit_exceeded")
        socket = web.WebSocketResponse(max_msg_size=MAX_FRAME_BYTES, heartbeat=30)
        await socket.prepare(request)
        connection = ExecutorConnection(DirectChannel(socket))
        reader = asyncio.ensure_future(connection.serve())
        self._serving.add(reader)
        try:
            try:
                await connection.initialize()
            except (ExecutorGone, ExecutorError) as error:
                log.warning("executor_initialize_failed", tenant=tenant, error_type=type(error).__name__)
                await socket.close()
                await reader
                return socket
            if self.hub.attach(claim, connection) is not None:  # another won the race meanwhile: the first stays
                await connection.close()
                await reader
                return socket
            with contextlib.suppress(ExecutorGone):
                await connection.initialized()
            log.info("executor_connected", tenant=tenant, session_id=session_id,
                     environment_id=claim.environment_id)
            # a waiting turn's calls (one resumed from a stopped process) run here now
            waiting = asyncio.ensure_future(self._run_waiting(tenant, session_id))
            self._serving.add(waiting)
            waiting.add_done_callback(self._serving.discard)
            await reader
        finally:
            self._serving.discard(reader)
            self.hub.detach(claim, connection)
            if not reader.done():
                reader.cancel()
        log.info("executor_disconnected", tenant=tenant, session_id=session_id)
        return socket

    async def _run_waiting(self, tenant: str, session_id: str) -> None:
        try:
            await on_attached(self.sessions.runners, tenant, session_id)
        except Exception as error:  # noqa: BLE001 - the calls stay waiting (the client's, or the next exec-server's)
            log.warning("executor_waiting_calls_failed", tenant=tenant, session_id=session_id,
                        error_type=type(error).__name__)

    async def _on_drain(self, app: web.Application) -> None:
        """A draining process lets its exec-servers go at once: they register again, with the next process."""
        app[DRAIN].on_drain(lambda: self._closing.append(asyncio.ensure_future(self._close_all(app))))

    async def _close_all(self, app: web.Application) -> None:
        for connection in self.hub.connections():
            await connection.close()
