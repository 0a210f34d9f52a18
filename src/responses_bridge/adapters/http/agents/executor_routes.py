"""The environment registry and rendezvous of ``codex exec-server --remote`` (both its transports), served by the
HTTP door, so a ``self_hosted`` session's commands run through the client's own exec-server instead of being handed
to the client as required actions.

* ``POST /v1/agents/sessions/{session_id}/executor_credentials`` (the tenant's bridge key): the session's executor
  credentials (services/agents/executor/hub.py) and the ``--remote`` path to give the exec-server;
* ``POST /v1/agents/executor/cloud/environment/{environment_id}/direct/register``: the exec-server's registration,
  signed with those credentials (SigV4); answered with a one-time websocket URL;
* ``GET /v1/agents/executor/connect/{registration_id}?token=…``: that websocket (also signed), JSON-RPC from then on
  (services/agents/executor/rpc.py);
* ``POST …/cloud/environment/{environment_id}/register`` (the Noise relay, codex's default transport; the session's
  registration bearer): the exec-server's Noise public key, answered with a one-time relay URL;
* ``GET /v1/agents/executor/relay/{registration_id}?token=…``: that relay, where the bridge opens a Noise stream as
  the harness (services/agents/executor/relay.py) and speaks the same JSON-RPC over it;
* ``POST …/cloud/environment/{environment_id}/validate`` (the bearer): the exec-server asks whether the harness key
  the bridge proved in its handshake is authorized (``{"valid": …}``).

The ``/v1/agents/executor/`` paths authenticate themselves (the identity middleware passes them on: the exec-server
carries no bridge key), and only ever as the tenant the signature or the bearer names.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Callable
from typing import Any

import orjson
import structlog
from aiohttp import web

from ....process.off_loop_import import import_off_loop
from ....protocol.errors import APIError
from ....services.agents.executor.hub import (
    Claim,
    ExecutorHub,
    RegistrationRefused,
    access_key_id,
    key_owner,
    registration_bearer,
    secret_access_key,
)
from ....services.agents.executor.rpc import (
    MAX_FRAME_BYTES,
    Channel,
    DirectChannel,
    ExecutorConnection,
    ExecutorError,
    ExecutorGone,
)
from ....services.agents.executor.sigv4 import SignatureRefused, verify
from ....services.agents.executor_calls import on_attached
from ....services.agents.sessions import SessionService
from ..drain import DRAIN
from ..identity import request_tenant
from ..params import json_reply, read_body
from ..routes import api_routes

RELAY = "....services.agents.executor.relay"
"""The Noise relay and its handshake (noise.py): imported by the first request of the Noise transport (off the loop:
process/off_loop_import.py), not at start — ``cryptography``'s primitives are some 9 MiB of every idle sidecar's
resident memory, for a transport most deployments never see."""

log = structlog.get_logger("responses_bridge.executor")

EXECUTOR_PREFIX = "/v1/agents/executor/"
"""Paths the identity middleware leaves to these routes (they check a signature, not a bridge key)."""
TRANSPORT = "direct_jsonrpc_v1"
MAX_REGISTRATION_BYTES = 4096


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
        app.router.add_post(EXECUTOR_PREFIX + "cloud/environment/{environment_id}/validate", self.noise_validate)
        app.router.add_get(EXECUTOR_PREFIX + "relay/{registration_id}", self.relay)
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
            "registration_bearer": registration_bearer(self.hub.sealer, tenant, session_id),
            "connected": self.hub.connection(tenant, environment["id"]) is not None})
        reply.headers["Cache-Control"] = "no-store"
        return reply

    def _bearer(self, request: web.Request) -> tuple[str, str]:
        """The (tenant, session id) whose registration bearer authorizes the request; a 401 otherwise."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        owner = self.hub.bearer_owner(token.strip()) if scheme.lower() == "bearer" else None
        if owner is None:
            raise _refused(401, "The exec-server's request carries no registration bearer of executor credentials "
                           "(--registration-bearer-stdin).", "invalid_api_key")
        return owner

    async def _registry_body(self, request: web.Request, owner: Callable[[web.Request, bytes], tuple[str, str]],
                             ) -> tuple[tuple[str, str], dict[str, Any]]:
        """The caller and its JSON object body, bounded before its bearer or signature is checked."""
        if request.content_length is None or request.content_length > MAX_REGISTRATION_BYTES:
            raise _refused(413, f"A registration is a JSON body of at most {MAX_REGISTRATION_BYTES} bytes.",
                           "request_too_large")
        body = await read_body(request)
        caller = owner(request, body)
        try:
            asked = orjson.loads(body) if body else {}
        except orjson.JSONDecodeError:
            raise _refused(400, "The registration body is not JSON.", "invalid_json") from None
        if not isinstance(asked, dict):
            raise _refused(400, "The registration body is a JSON object.", "invalid_json")
        return caller, asked

    async def _environment(self, tenant: str, session_id: str, environment_id: str) -> None:
        environment = await self._self_hosted(session_id, tenant)
        if environment["id"] != environment_id:  # the credentials are the session's, for its environment only
            raise APIError(404, f"No environment with id '{environment_id}' for these credentials.",
                           code="not_found")

    async def noise_register(self, request: web.Request) -> web.Response:
        (tenant, session_id), asked = await self._registry_body(request, lambda request, _: self._bearer(request))
        await import_off_loop(RELAY, __package__)
        from ....services.agents.executor.noise import SECURITY_PROFILE, NoiseError, PublicKey, mlkem_missing

        environment_id = request.match_info["environment_id"]
        if asked.get("security_profile") != SECURITY_PROFILE:
            raise APIError(400, f"Only the '{SECURITY_PROFILE}' security profile is served.",
                           param="security_profile", code="unsupported_value")
        missing = mlkem_missing()
        if missing is not None:
            raise APIError(400, missing, param="security_profile", code="unsupported_value")
        try:
            executor_key = PublicKey.from_json(asked.get("executor_public_key"))
        except NoiseError as error:
            raise APIError(400, f"{error}.", param="executor_public_key", code="invalid_value") from None
        await self._environment(tenant, session_id, environment_id)
        try:
            registration_id, token = self.hub.register(Claim(tenant, session_id, environment_id, executor_key))
        except RegistrationRefused as refused:
            raise _refused(429, f"{refused}.", "rate_limit_exceeded") from None
        log.info("executor_registered", tenant=tenant, session_id=session_id, environment_id=environment_id,
                 transport=SECURITY_PROFILE)
        return json_reply({"environment_id": environment_id, "security_profile": SECURITY_PROFILE,
                           "executor_registration_id": registration_id,
                           "url": self._url(request, f"relay/{registration_id}", token)})

    async def noise_validate(self, request: web.Request) -> web.Response:
        (tenant, session_id), asked = await self._registry_body(request, lambda request, _: self._bearer(request))
        registration_id, authorization = asked.get("executor_registration_id"), asked.get("harness_key_authorization")
        await import_off_loop(RELAY, __package__)
        from ....services.agents.executor.noise import NoiseError, PublicKey

        try:
            harness_key = PublicKey.from_json(asked.get("harness_public_key"))
        except NoiseError:
            return json_reply({"valid": False})
        claim = Claim(tenant, session_id, request.match_info["environment_id"])
        valid = isinstance(registration_id, str) and isinstance(authorization, str) and self.hub.harness_valid(
            registration_id, claim, harness_key, authorization)
        return json_reply({"valid": valid})

    def _url(self, request: web.Request, path: str, token: str) -> str:
        scheme = "wss" if request.headers.get("X-Forwarded-Proto", request.scheme) == "https" else "ws"
        return f"{scheme}://{request.host}{EXECUTOR_PREFIX}{path}?token={token}"

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
        (tenant, session_id), asked = await self._registry_body(request, self._signed)
        environment_id = request.match_info["environment_id"]
        if asked.get("transport") != TRANSPORT:
            raise APIError(400, f"Only the '{TRANSPORT}' transport is served.", param="transport",
                           code="unsupported_value")
        await self._environment(tenant, session_id, environment_id)
        try:
            registration_id, token = self.hub.register(Claim(tenant, session_id, environment_id))
        except RegistrationRefused as refused:
            raise _refused(429, f"{refused}.", "rate_limit_exceeded") from None
        log.info("executor_registered", tenant=tenant, session_id=session_id, environment_id=environment_id)
        return json_reply({"environment_id": environment_id, "transport": TRANSPORT,
                           "registration_id": registration_id,
                           "url": self._url(request, f"connect/{registration_id}", token)})

    def _claimed(self, request: web.Request, owner: tuple[str, str] | None) -> Claim:
        """The registration the URL's token holds (spent now), for ``owner`` when the request is signed."""
        claim = self.hub.claim(request.match_info["registration_id"], request.query.get("token", ""))
        if claim is None or (owner is not None and (claim.tenant, claim.session_id) != owner) or (
                (owner is None) != (claim.executor_key is not None)):  # a direct URL is signed, a relay's is not
            # a 409 makes codex register again (its URL outlived a restart, a drain or a disconnect)
            raise _refused(409, "Unknown or spent exec-server registration: register again.", "invalid_registration")
        if self.hub.connection(claim.tenant, claim.environment_id) is not None:
            raise _refused(409, "Another exec-server serves this session's environment.", "environment_served")
        if not self.hub.may_connect(claim):
            raise _refused(429, "Too many exec-servers connected for this tenant.", "rate_limit_exceeded")
        return claim

    async def connect(self, request: web.Request) -> web.StreamResponse:
        claim = self._claimed(request, self._signed(request, b""))
        socket = web.WebSocketResponse(max_msg_size=MAX_FRAME_BYTES, heartbeat=30)
        await socket.prepare(request)
        await self._serve(claim, DirectChannel(socket), socket)
        return socket

    async def relay(self, request: web.Request) -> web.StreamResponse:
        """The Noise relay: the bridge opens its stream as the harness, with a key of its own for this connection
        and a one-time authorization the exec-server has validated (:meth:`noise_validate`) before it answers."""
        claim = self._claimed(request, None)
        assert claim.executor_key is not None  # _claimed: a relay's registration pinned the exec-server's key
        await import_off_loop(RELAY, __package__)
        from ....services.agents.executor.noise import Identity
        from ....services.agents.executor.relay import MAX_RELAY_FRAME_BYTES, open_channel

        socket = web.WebSocketResponse(max_msg_size=MAX_RELAY_FRAME_BYTES, heartbeat=30)
        await socket.prepare(request)
        registration_id, identity = request.match_info["registration_id"], Identity.generate()
        authorization = secrets.token_urlsafe(32)
        self.hub.expect_harness(registration_id, claim, identity.public(), authorization)
        try:
            channel = await open_channel(socket, environment_id=claim.environment_id,
                                         registration_id=registration_id, executor_key=claim.executor_key,
                                         authorization=authorization, identity=identity)
        except (ExecutorGone, ConnectionError, RuntimeError) as error:
            log.warning("executor_handshake_failed", tenant=claim.tenant, error_type=type(error).__name__)
            await socket.close()
            return socket
        finally:
            self.hub.forget_harness(registration_id)
        await self._serve(claim, channel, socket)
        return socket

    async def _serve(self, claim: Claim, channel: Channel, socket: web.WebSocketResponse) -> None:
        """The exec-server behind ``channel`` as the session's environment, until it disconnects."""
        tenant, session_id = claim.tenant, claim.session_id
        connection = ExecutorConnection(channel)
        reader = asyncio.ensure_future(connection.serve())
        self._serving.add(reader)
        try:
            try:
                await connection.initialize()
            except (ExecutorGone, ExecutorError) as error:
                log.warning("executor_initialize_failed", tenant=tenant, error_type=type(error).__name__)
                await socket.close()
                await reader
                return
            if self.hub.attach(claim, connection) is not None:  # another won the race meanwhile: the first stays
                await connection.close()
                await reader
                return
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
