"""``/v1/agents`` routes of the HTTP door (OpenAI's Agents API, ``client.beta.agents``; also without ``/v1``):
reusable agents, sessions, their events (in, and the SSE stream out, resumable), turns and items. The Envoy door
routes ``/v1/agents`` here (envoy_config/routes.py).

A session's turn is a background response started here as ``POST /v1/responses`` would start one (the model's
route, its upstream client, the caller's credentials), handed to the sessions service as its
:data:`~responses_bridge.services.agents.turns.ResponseStarter`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping
from typing import Any

from aiohttp import web

from ....net.host_policy import HostPolicy
from ....observability import timing
from ....protocol.errors import APIError
from ....protocol.tools.multi_agent import BetaSurface
from ....run.drive import ShutdownDeadline
from ....run.multi_agent import KEPT_SUBAGENTS, KeptSubagent
from ....run.response_run import ResponseRun
from ....run.tools.mcp_config import MCPServerOverlay
from ....runtime import Runtime
from ....sandbox.desktop import DesktopSettings
from ....sandbox.egress.rates import EgressRates
from ....services.agents.agents import AgentService
from ....services.agents.automations.bounds import AutomationBounds
from ....services.agents.computer.calls import ComputerUse
from ....services.agents.computer.desktops import DesktopBounds, DesktopPool
from ....services.agents.desktop_watch.feed import FrameFeeds, WatchBounds
from ....services.agents.desktop_watch.registry import NO_DESKTOPS
from ....services.agents.environments.mcp import SessionMCP
from ....services.agents.events import KEEPALIVE
from ....services.agents.executor.hub import ExecutorHub
from ....services.agents.sessions import SessionService
from ....services.agents.subagents.contexts import KEPT_KEY
from ....services.agents.subagents.subagents import SubagentService
from ....services.agents.vaults.oauth import GuardedTokenEndpoint
from ....services.agents.vaults.vaults import VaultService
from ....services.tools.hosted_shell import HostedShell
from ..desktop_watch_tokens import WatchTokens
from ..downloads import send_blob
from ..drain import DRAIN
from ..identity import request_tenant
from ..params import json_object, json_reply, metadata_query, page_query
from ..routes import api_routes
from .automations_routes import AutomationRoutes
from .desktop_watch_routes import DesktopWatchRoutes
from .environment_routes import EnvironmentRoutes
from .executor_routes import ExecutorRoutes
from .subagent_routes import SubagentRoutes
from .trace_routes import TraceRoutes
from .vault_routes import VaultRoutes

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
SESSIONS = web.AppKey("agent_sessions", SessionService)


def turn_starter(runtime: Runtime) -> Any:
    async def start(body: dict[str, Any], tenant: str, client_authorization: str | None,
                    overlays: Mapping[str, MCPServerOverlay]) -> str:
        # the response's own clock, its spans joining the turn's as it is saved (observability/timing.py)
        clock = timing.begin(child=True)
        try:
            return await _started(body, tenant, client_authorization, overlays)
        finally:
            timing.end(clock)

    async def _started(body: dict[str, Any], tenant: str, client_authorization: str | None,
                       overlays: Mapping[str, MCPServerOverlay]) -> str:
        upstream = None
        if runtime.clients:  # several upstreams: the agent's model picks one (config/upstreams.py)
            route = runtime.route(body.get("model"))
            run = runtime.new_routed_run(route, tool_loop=True, tools=body.get("tools"), tenant=tenant)
            authorization = runtime.route_authorization(route, client_authorization)
            upstream = runtime.client_for(route)
        else:
            run = runtime.new_run(tool_loop=True, tenant=tenant)
            authorization = runtime.upstream_authorization(client_authorization)
        if "multi_agent" in body:  # the agent's subagents: the turn's response is on the multi-agent beta
            if not isinstance(run, ResponseRun):
                raise APIError(400, "Subagents ('agent.multi_agent.enabled') are not served for model "
                               f"'{str(body.get('model'))[:200]}': its upstream is a native Responses API, which the "
                               "bridge relays without its tool loop.", param="agent.multi_agent.enabled",
                               code="unsupported_value")
            run.beta = BetaSurface(query=True, header=True)
        if overlays:
            if not isinstance(run, ResponseRun):
                raise APIError(400, "MCP servers in the session's environment or with 'request_metadata' are not "
                               f"served for model '{str(body.get('model'))[:200]}': its upstream is a native "
                               "Responses API, which the bridge relays without its tool loop.",
                               param="agent.tools", code="unsupported_value")
            run.mcp_overlays = overlays
        kept = KEPT_SUBAGENTS.set([KeptSubagent(str(entry["name"]), entry["context"])  # the tree's, closed
                                   for entry in body.pop(KEPT_KEY, None) or ()])
        try:
            call = await run.begin(body)
            started = await runtime.background.start(  # the client's own credentials: kept with the turn, sealed
                run, call, authorization, upstream,
                client_credentials=client_authorization is not None and authorization == client_authorization)
        finally:
            KEPT_SUBAGENTS.reset(kept)
        return started.response_id

    return start


class AgentRoutes:
    def __init__(self, runtime: Runtime, watch_tokens: WatchTokens | None = None) -> None:
        self.runtime = runtime
        self.agents = AgentService(runtime.agent_store, runtime.sealer)
        self.vaults = VaultService(runtime.agent_store, runtime.sealer, GuardedTokenEndpoint(
            HostPolicy.parse(runtime.settings.mcp_allowed_hosts)))  # OAuth refreshes reach what MCP calls may
        self.sessions = SessionService(runtime.agent_store, self.agents, runtime.background,
                                       turn_starter(runtime), runtime.containers, vaults=self.vaults)
        self.sessions.kept_authorization = runtime.kept_authorization  # turns resumable with the caller's key
        shell = runtime.server_tools.services.shell
        self.sessions.mcp = SessionMCP(runtime.server_tools.services.mcp,
                                       shell if isinstance(shell, HostedShell) else None,  # where a sandbox runs
                                       runtime.sealer, runtime.agent_store)
        self.executors = ExecutorHub(runtime.sealer)  # the exec-servers of self_hosted sessions (executor_routes.py)
        self.sessions.environments.executors = self.executors
        # a plugin's apps: the connector ids the operator's registry serves
        # (services/agents/environments/plugin_apps.py)
        self.sessions.environments.connectors = frozenset(runtime.server_tools.services.mcp.connectors)
        self.automations = AutomationRoutes(self.agents, self.sessions, AutomationBounds.of(runtime.settings))
        settings = runtime.settings  # the agents' computer_use: a desktop per session, in the bubblewrap sandbox
        self.sessions.computer = ComputerUse(DesktopPool(
            shell.runs.sandbox if isinstance(shell, HostedShell) else None,
            DesktopBounds(per_tenant=settings.desktops_per_tenant, total=settings.desktops_max,
                          idle=settings.desktop_idle_seconds, wait=settings.desktop_wait_seconds),
            settings=DesktopSettings(egress=EgressRates(  # the browser's egress bounds (sandbox/egress/rates.py)
                connections=settings.desktop_egress_connections,
                connections_per_second=settings.desktop_egress_connections_per_second,
                connection_burst=settings.desktop_egress_connection_burst,
                bytes_per_second=settings.desktop_egress_bytes_per_second,
                byte_burst=settings.desktop_egress_byte_burst, wait=settings.desktop_egress_wait_seconds)),
            by_client_key=settings.auth == "none"),  # auth off: callers told apart as the memory share does
            runtime.containers)
        # an idle desktop (its session's turn not running) yields to a session that needs one (desktops.py)
        self.sessions.computer.desktops.turn_running = self.sessions.turn_running
        self.sessions.environments.desktops = self.sessions.computer.desktops.unavailable  # desktop.enabled's 400
        if runtime.desktops is NO_DESKTOPS:  # what the live view shows (desktop_watch_routes.py), unless given
            runtime.desktops = self.sessions.computer.desktops
        self._handing_off: list[asyncio.Future[None]] = []
        self.desktop_watch = DesktopWatchRoutes(  # a session's desktop, live (desktop_watch_routes.py)
            FrameFeeds(runtime.desktops, WatchBounds.of(runtime.settings)),
            watch_tokens or WatchTokens(runtime.sealer, runtime.settings.desktop_watch_link_seconds), self.sessions)

    def register(self, app: web.Application) -> None:
        app[SESSIONS] = self.sessions
        self.automations.register(app)
        app.on_startup.append(self._recover)
        app.on_cleanup.append(self._close)
        VaultRoutes(self.vaults).register(app)  # vaults and their credentials (vault_routes.py)
        SubagentRoutes(SubagentService(self.agents.store)).register(app)  # a session's subagents (subagent_routes.py)
        EnvironmentRoutes(self.sessions, self.runtime.server_tools.services.shell,  # before /agents/{id}
                          self.runtime.sealer).register(app)
        ExecutorRoutes(self.sessions, self.executors).register(app)  # codex exec-server --remote
        TraceRoutes(self.agents.store).register(app)  # a session's traces (trace_routes.py)
        self.desktop_watch.register(app)
        with api_routes(app) as routes:
            sessions = "/agents/sessions"
            session = f"{sessions}/{{session_id}}"
            routes.post(sessions, self.create_session)
            routes.get(sessions, self.list_sessions)
            routes.get(session, self.retrieve_session)
            routes.post(session, self.update_session)
            routes.delete(session, self.delete_session)
            routes.post(f"{session}/events", self.post_events)
            routes.get(f"{session}/events", self.stream_events)
            routes.get(f"{session}/turns", self.list_turns)
            routes.get(f"{session}/turns/{{turn_id}}", self.retrieve_turn)
            routes.get(f"{session}/turns/{{turn_id}}/items", self.list_turn_items)
            routes.get(f"{session}/items", self.list_items)
            routes.get(f"{session}/artifacts", self.list_artifacts)
            routes.get(f"{session}/artifacts/{{artifact_id}}", self.retrieve_artifact)
            routes.get(f"{session}/artifacts/{{artifact_id}}/content", self.artifact_content)
            routes.delete(f"{session}/artifacts/{{artifact_id}}", self.delete_artifact)
            routes.post("/agents", self.create)
            routes.get("/agents", self.list)
            routes.get("/agents/{agent_id}", self.retrieve)
            routes.post("/agents/{agent_id}", self.update)
            routes.delete("/agents/{agent_id}", self.delete)

    async def _recover(self, app: web.Application) -> None:
        """The sessions a stopped process left mid-turn, made idle again. A serving process opens its store before
        its doors (runtime.py), so the store is open here; a door composed over a store not open yet (readiness
        answers 503 until it is) has nothing to recover from and must still start."""
        if self.runtime.store.is_open:
            await self.sessions.recover()
        # a drain hands the running turns off (services/agents/session_resume.py) while the door drains
        app[DRAIN].on_drain(lambda: self._handing_off.append(asyncio.ensure_future(
            self.sessions.hand_off(self.runtime.settings.drain_timeout))))

    async def _close(self, app: web.Application) -> None:
        if self._handing_off:
            await asyncio.wait(self._handing_off)
        await self.sessions.close()

    # --- agents ---------------------------------------------------------------------------------------------

    async def create(self, request: web.Request) -> web.Response:
        return json_reply(await self.agents.create(await json_object(request), tenant=request_tenant(request)))

    async def list(self, request: web.Request) -> web.Response:
        return json_reply(await self.agents.list_agents(**page_query(request, before=False),
                                                        tenant=request_tenant(request)))

    async def retrieve(self, request: web.Request) -> web.Response:
        return json_reply(await self.agents.get(request.match_info["agent_id"], tenant=request_tenant(request)))

    async def update(self, request: web.Request) -> web.Response:
        return json_reply(await self.agents.update(request.match_info["agent_id"], await json_object(request),
                                                   tenant=request_tenant(request)))

    async def delete(self, request: web.Request) -> web.Response:
        return json_reply(await self.agents.delete(request.match_info["agent_id"], tenant=request_tenant(request)))

    # --- sessions -------------------------------------------------------------------------------------------

    async def create_session(self, request: web.Request) -> web.StreamResponse:
        body = await json_object(request)
        tenant = request_tenant(request)
        session = await self.sessions.create(body, tenant=tenant,
                                             authorization=request.headers.get("Authorization"))
        if body.get("stream") is not True:
            return json_reply(session)
        frames = await self.sessions.stream(session["id"], after_event=None, tenant=tenant, until_idle=True)
        return await _sse(request, frames)

    async def list_sessions(self, request: web.Request) -> web.Response:
        return json_reply(await self.sessions.list_sessions(
            **page_query(request, before=False), agent_id=request.query.get("agent_id"),
            metadata=metadata_query(request), tenant=request_tenant(request)))

    async def retrieve_session(self, request: web.Request) -> web.Response:
        """The session, with ``desktop_live_url`` (a field of ours: the link to watch its desktop, a short-lived
        token in it) while its desktop runs."""
        session_id, tenant = request.match_info["session_id"], request_tenant(request)
        session = await self.sessions.get(session_id, tenant=tenant)
        live = await self.desktop_watch.live_url(request, session_id, tenant)
        return json_reply(session if live is None else {**session, "desktop_live_url": live})

    async def update_session(self, request: web.Request) -> web.Response:
        return json_reply(await self.sessions.update(request.match_info["session_id"], await json_object(request),
                                                     tenant=request_tenant(request)))

    async def delete_session(self, request: web.Request) -> web.Response:
        return json_reply(await self.sessions.delete(request.match_info["session_id"],
                                                     tenant=request_tenant(request)))

    async def post_events(self, request: web.Request) -> web.Response:
        await self.sessions.post_events(request.match_info["session_id"], await json_object(request),
                                        idempotency_key=request.headers.get("Idempotency-Key"),
                                        tenant=request_tenant(request),
                                        authorization=request.headers.get("Authorization"))
        return web.Response(status=202)

    async def stream_events(self, request: web.Request) -> web.StreamResponse:
        """Every event after ``Last-Event-ID`` (or ``?after=<event_id>``), from the session's first without one;
        open until the client leaves or the session is deleted (``?until_idle=true``: until it is idle)."""
        after = request.headers.get("Last-Event-ID") or request.query.get("after")
        until_idle = request.query.get("until_idle", "").lower() in ("true", "1")
        frames = await self.sessions.stream(request.match_info["session_id"], after_event=after,
                                            tenant=request_tenant(request), until_idle=until_idle)
        return await _sse(request, frames)

    # --- turns and items ------------------------------------------------------------------------------------

    async def list_turns(self, request: web.Request) -> web.Response:
        return json_reply(await self.sessions.list_turns(request.match_info["session_id"],
                                                         **page_query(request, before=False),
                                                         tenant=request_tenant(request)))

    async def retrieve_turn(self, request: web.Request) -> web.Response:
        return json_reply(await self.sessions.get_turn(request.match_info["session_id"],
                                                       request.match_info["turn_id"], tenant=request_tenant(request)))

    async def list_turn_items(self, request: web.Request) -> web.Response:
        return json_reply(await self.sessions.list_items(request.match_info["session_id"],
                                                         turn_id=request.match_info["turn_id"],
                                                         **page_query(request, before=False),
                                                         tenant=request_tenant(request)))

    async def list_items(self, request: web.Request) -> web.Response:
        return json_reply(await self.sessions.list_items(request.match_info["session_id"], turn_id=None,
                                                         **page_query(request, before=False),
                                                         tenant=request_tenant(request)))

    # --- artifacts ------------------------------------------------------------------------------------------

    async def list_artifacts(self, request: web.Request) -> web.Response:
        return json_reply(await self.sessions.environments.list_artifacts(
            request.match_info["session_id"], environment_id=request.query.get("environment_id"),
            **page_query(request, before=False), tenant=request_tenant(request)))

    async def retrieve_artifact(self, request: web.Request) -> web.Response:
        return json_reply(await self.sessions.environments.retrieve(request.match_info["session_id"],
                                                                    request.match_info["artifact_id"],
                                                                    tenant=request_tenant(request)))

    async def artifact_content(self, request: web.Request) -> web.StreamResponse:
        """The artifact's bytes, a chunk at a time (opened before the answer starts: a 404 stays JSON)."""
        reader, artifact = await self.sessions.environments.open(request.match_info["session_id"],
                                                                 request.match_info["artifact_id"],
                                                                 tenant=request_tenant(request))
        return await send_blob(request, reader, artifact["path"].rsplit("/", 1)[-1])

    async def delete_artifact(self, request: web.Request) -> web.Response:
        return json_reply(await self.sessions.environments.delete(request.match_info["session_id"],
                                                                  request.match_info["artifact_id"],
                                                                  tenant=request_tenant(request)))


async def _sse(request: web.Request, frames: AsyncGenerator[bytes, None]) -> web.StreamResponse:
    """A session's stored events as SSE. A drain's hand-off ends the stream after the last event stored here
    (session_resume.py); were that not done by the drain's deadline (a loaded host), the stream ends cleanly at the
    deadline all the same — a reader is only ever sent stored events, so it resumes elsewhere with its
    ``Last-Event-ID`` and loses nothing, where a connection cut at the door's close would read as an error."""
    response = web.StreamResponse(status=200, headers=SSE_HEADERS)
    response.content_type = "text/event-stream"
    response.charset = "utf-8"
    await response.prepare(request)
    try:
        async with request.app[DRAIN].deadline():
            async for chunk in frames:
                await response.write(chunk or KEEPALIVE)
    except ShutdownDeadline:
        pass
    finally:
        await frames.aclose()  # its reader let go now, wherever the deadline struck
    await response.write_eof()
    return response
