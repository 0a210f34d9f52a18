"""What both doors share inside one process: settings, the open store, the engine's options, the upstream client.

The runtime makes the runs (:class:`~responses_bridge.run.response_run.ResponseRun`) the doors drive. It imports no
adapter: the concrete upstream client is built by the composition root (``serve.open_runtime``) and handed in.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import structlog

from .config.settings import Settings
from .config.upstreams import SINGLE_UPSTREAM, Route, Router
from .engine.options import EngineOptions
from .engine.responses.profiles import options_for
from .engine.tools.builtin import runs_server_tools
from .engine.tools.programs import program_signer
from .engine.wire import Framing, UpstreamRequest
from .fairness.allocator import MemoryTrimmer
from .fairness.idle_capacity import IdleCapacity, Watched
from .fairness.program_memory import no_room
from .fairness.tenure import set_quantum
from .observability import metrics
from .observability.logs import note_upstream
from .process.periodic import Periodic
from .protocol.errors import APIError
from .run.response_run import ResponseRun
from .run.runs import Run
from .run.server_tool_services import ProgramHosting
from .run.server_tools import ServerTools, ServerToolServices
from .run.upstream import UpstreamClient
from .run.upstream_gate import UpstreamGate
from .runtime_sandbox import SandboxServices
from .sealing import Sealer, load_or_create_key, new_key_text
from .services.agents.desktop_watch.registry import NO_DESKTOPS, DesktopRegistry
from .services.files.files import FileService, files_directory
from .services.files.inputs import FileInputs
from .services.files.uploads import UploadService
from .services.files.vector_stores_on_demand import VectorStoresOnDemand
from .services.responses.background import BackgroundService
from .services.responses.chat_completions import ChatCompletionService
from .services.responses.conversations import ConversationService
from .services.responses.idempotency import IdempotencyService
from .services.responses.kept_authorization import KeptAuthorization
from .services.responses.prompts import PromptService
from .services.responses.retention import RetentionService
from .services.tenancy.identity import Identity, sidecar_token
from .services.tenancy.limits import TenantLimits
from .services.tenancy.memory_budget import MemoryBudget, Reservation
from .services.tenancy.memory_watch import MemoryWatch, default_source
from .store import ResponseStore
from .store.base import ApiKeyStore, ChunkIndex, RunLeases
from .store.base_agents import AgentStore
from .store.base_batches import BatchStore
from .store.open import StoreSet, open_stores

if TYPE_CHECKING:
    from .services.containers.containers import ContainerService
    from .services.containers.skills import SkillService
    from .services.files.retrieval.embedders import Embedder

log = structlog.get_logger("responses_bridge.runtime")

INGEST_POLL_SECONDS = 1.0
"""On a shared database, how often ingestion looks for files other replicas attached (or left when they died)."""


@dataclass
class Runtime:
    """The composition root: built once, by :meth:`open`, with every service over one set of stores; both doors
    are handed it. Every service is a required field, so no door ever asks whether one exists."""

    settings: Settings
    store: ResponseStore
    options: EngineOptions
    sealer: Sealer
    conversations: ConversationService  # same database and connections as ``store``
    prompts: PromptService
    chat_completions: ChatCompletionService  # stored Chat Completions (store: true), same database
    upstream: UpstreamClient  # the sidecar's own upstream calls (``upstream_via`` when set)
    clients: dict[str, UpstreamClient]  # the sidecar's own calls, per upstream (several upstreams; else empty)
    router: Router  # the per-model routes (config/upstreams.py)
    server_tools: ServerTools  # the tool loop's MCP client, web search, file search (run/server_tools.py)
    identity: Identity  # who the caller is (RESPONSES_BRIDGE_AUTH), for both doors: services/tenancy/identity.py
    files: FileService  # uploaded files: metadata in the store, bytes in files/ by the database (or in it)
    uploads: UploadService  # the Uploads API: files sent in parts, completed into files (services/files/uploads.py)
    chunks: ChunkIndex  # vector store search: the chunk index and the embedder (services/files/retrieval/)
    # the Vector Stores API, the file_search tool's searcher, the embedder: built on first use
    # (services/files/vector_stores_on_demand.py)
    vector_stores: VectorStoresOnDemand
    # the Containers and Skills APIs, the code interpreter and the hosted shell, built on first use
    # (runtime_sandbox.py): ``containers`` and ``skills`` below
    sandbox: SandboxServices
    background: BackgroundService
    # the Agents API's records; its services are built by its first request (adapters/http/agents/capability.py)
    agent_store: AgentStore
    batch_store: BatchStore  # the Batch API's records; its runner is the HTTP door's (adapters/http/batches/)
    retention: RetentionService  # purges what each tenant's retention_days has expired
    idempotency: IdempotencyService  # Idempotency-Key of POST /v1/responses (services/responses/idempotency.py)
    trimmer: MemoryTrimmer  # gives large requests' memory back to the system (fairness/allocator.py)
    gauges: Periodic  # serve --workers: this worker's read-on-scrape gauges written to the shared files each second
    draining: bool = False  # set first thing on SIGTERM/SIGINT: doors refuse new work, readiness fails
    # ``mode: auto`` upstreams, as probed at start (probe/start.py): the chosen mode and measured switches
    probed_modes: dict[str, str] = field(default_factory=dict)
    probed_switches: dict[str, dict[str, Any]] = field(default_factory=dict)
    # the sessions' running desktops, which the HTTP door shows live (services/agents/desktop_watch/): the HTTP
    # door composes the sessions' desktop pool in (adapters/http/agents/agents_routes.py) unless one is given here
    desktops: DesktopRegistry = NO_DESKTOPS
    # the bridge's own keys (auth: keys), which the console signs in with and an operator revokes; None: no store
    api_keys: ApiKeyStore | None = None
    _upstream_options: dict[str, EngineOptions] = field(default_factory=dict, repr=False)  # route_options' cache
    # per-tenant requests in flight and body size, one budget for both doors (services/tenancy/limits.py)
    limits: TenantLimits = field(init=False, repr=False)
    # the estimated memory of every request in flight, against one budget (services/tenancy/memory_budget.py)
    memory: MemoryBudget = field(init=False, repr=False)
    # the sidecar's own upstream calls at once: bridge-wide, per tenant and per response (run/upstream_gate.py)
    upstream_gate: UpstreamGate = field(init=False, repr=False)
    # the real memory of the process against the budget: the backstop (services/tenancy/memory_watch.py)
    memory_watch: MemoryWatch = field(init=False, repr=False)
    # the client's Authorization kept sealed with the runs whose upstream calls carry it, so they are resumable
    # (services/responses/kept_authorization.py); RESPONSES_BRIDGE_DURABLE_CLIENT_CREDENTIALS=false keeps none
    kept_authorization: KeptAuthorization = field(init=False, repr=False)
    # where batch lines wait for idle capacity: no interactive request in flight, no pool waited for
    # (fairness/idle_capacity.py)
    idle_capacity: IdleCapacity = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.limits = TenantLimits(self.settings)
        set_quantum(self.settings.fair_share_quantum)  # every shared pool's, the process's (fairness/tenure.py)
        self.memory = MemoryBudget(self.settings.memory_budget(), self.settings.memory_budget_share,
                                   by_client_key=self.settings.auth == "none")
        settings = self.settings
        self.memory_watch = MemoryWatch(self.memory, source=default_source(settings.worker_count()),
                                        high=settings.memory_high_watermark_bytes,
                                        low=settings.memory_low_watermark_bytes,
                                        interval=settings.memory_watch_interval)
        self.upstream_gate = UpstreamGate(self.settings.upstream_max_connections, self.settings.upstream_share,
                                          self.settings.upstream_response_connections,
                                          self.settings.upstream_connect_timeout)
        self.server_tools.services.programs = program_host(self.settings, self.memory, self.sealer)
        self.kept_authorization = KeptAuthorization(self.sealer, enabled=self.settings.durable_client_credentials,
                                                    forwarded=self.forwards_client_authorization)
        self.idle_capacity = IdleCapacity(self.limits.activity, self.line_pools, concurrency=settings.batch_concurrency,
                                          reserve=settings.batch_interactive_reserve)

    def line_pools(self) -> list[Watched]:
        """The shared pools a batch line may take units of, which the idle-capacity gate watches: the upstream
        connections, the memory budget when bounded, the program and sandbox slots once built."""
        pools: list[Watched] = [self.upstream_gate.slots.pool]
        if self.memory.total:
            pools.append(self.memory.pool)
        services = self.server_tools.services
        programs = services.programs.built if services.programs is not None else None
        sandbox = getattr(getattr(services.shell, "runs", None), "sandbox", None)  # the console's way to it
        for slots in (getattr(programs, "slots", None), getattr(sandbox, "slots", None)):
            if slots is not None and hasattr(slots, "pool"):
                pools.append(slots.pool)
        return pools

    def new_run_framed(self, framing: Framing, store: ResponseStore | None = None, *, tenant: str) -> ResponseRun:
        """A run of ``tenant`` whose events are always emitted, framed as asked (``"json"``: WebSocket mode),
        optionally over another store (a WebSocket connection's cache of ``store: false`` turns in front of this
        one)."""
        run = ResponseRun(store or self.store, self.options, self.sealer, framing=framing,
                          conversations=self.conversations, prompts=self.prompts, server_tools=self.server_tools,
                          max_turns=self.settings.max_turns, files=self.file_inputs, tenant=tenant)
        run.upstream_gate = self.upstream_gate
        run.charge_memory = self.memory.charge
        return run

    @classmethod
    async def open(cls, settings: Settings, upstream: UpstreamClient,
                   clients: dict[str, UpstreamClient] | None = None) -> Runtime:
        """Open the store and every service over it; ``upstream`` (not started yet) is the client for the
        sidecar's own upstream calls, started here and closed by :meth:`close`. ``clients``: one per configured
        upstream, by name (``upstream`` among them), for the routed calls."""
        db_path = settings.db_path()
        database_url = settings.database_url.get_secret_value() if settings.database_url is not None else None
        stores = await open_stores(db_path, database_url)  # PostgreSQL when the URL is set, else SQLite
        try:
            return await cls._open_over(stores, settings, upstream, clients, db_path, database_url)
        except BaseException:  # a start that fails closes the store: its connection's thread would keep the
            await stores.close()  # process from ever exiting (a pod neither serving nor restarting)
            raise

    @classmethod
    async def _open_over(cls, stores: StoreSet, settings: Settings, upstream: UpstreamClient,
                         clients: dict[str, UpstreamClient] | None, db_path: str,
                         database_url: str | None) -> Runtime:
        """:meth:`open`'s services over the open ``stores``."""
        # replicas on one database share the sealing key: a chain continued on another replica still unseals
        shared_key = settings.sealing_key or await stores.shared_value("sealing_key", new_key_text())
        sealer = Sealer(load_or_create_key(shared_key, db_path))
        server_tools = ServerTools(ServerToolServices.configured(settings.mcp_limits(), settings.web_search_settings(),
                                                                 images=settings.image_settings(),
                                                                 connectors=settings.mcp_connector_registry()))
        clients = dict(clients or {})
        for client in {id(one): one for one in (upstream, *clients.values())}.values():
            remember = getattr(client, "remember_chains", None)  # an upstream with replicas (replicas/persist.py)
            if remember is not None:
                remember(stores.replica_chains)
        for client in clients.values():
            if client is not upstream:
                await client.start()
        files = FileService(stores.files, files_directory(db_path), settings.max_file_bytes,
                            contents=stores.file_bytes,
                            max_stored_bytes=lambda tenant: settings.tenant_policy(tenant).max_stored_bytes)
        await files.start()
        uploads = UploadService(stores.uploads, files, max_parts=settings.max_upload_parts)
        await uploads.start()
        # the Vector Stores API over the files, the chunk index and the embedder, built on first use; its
        # ingestion starts at once when a previous process left files in progress; on a shared database a light
        # poll looks for the files other replicas attach, or whose claim a dead replica left to lapse
        shared = stores.postgres is not None or settings.worker_count() > 1
        vector_stores = VectorStoresOnDemand(stores.vector_stores, files, stores.chunks, settings,
                                             concurrency=settings.ingest_concurrency,
                                             poll_interval=INGEST_POLL_SECONDS if shared else None,
                                             lease_seconds=settings.ingest_lease_seconds)
        files.on_delete(vector_stores.forget_file)  # a deleted file leaves every vector store
        await vector_stores.start()
        server_tools.services.file_search = vector_stores  # what the file_search tool searches
        sandbox = await SandboxServices.start(settings, stores.containers, stores.skills, files, server_tools, sealer)
        background = await _open_background(settings, stores, database_url, upstream)
        # stored responses and conversations past their tenant's retention go in the background (item 5)
        any_retention = settings.retention_days is not None or any(
            policy.retention_days is not None for policy in settings.tenants.values())
        retention = RetentionService(stores.responses, stores.conversations, settings.tenant_policy,
                                     any_retention=any_retention, chat_completions=stores.chat_completions)
        retention.start()
        idempotency = IdempotencyService(stores.idempotency, settings.idempotency_key_seconds)
        idempotency.start()
        trimmer = MemoryTrimmer()
        trimmer.start()
        gauges = Periodic(1.0 if metrics.MULTIPROCESS else 0, _refresh_gauges, name="metrics-gauges",
                          failure="metrics_refresh_failed", first_delay=0, failure_level="warning")
        gauges.start()
        runtime = cls(settings=settings, store=stores.responses, options=settings.engine_options(), sealer=sealer,
                   conversations=ConversationService(stores.conversations, stores.responses),
                   prompts=PromptService(stores.prompts),
                   chat_completions=ChatCompletionService(
                       stores.chat_completions, enabled=settings.store_chat_completions),
                   upstream=upstream, clients=clients, router=settings.router(), server_tools=server_tools,
                   identity=Identity(settings.auth, settings.tenant_header, stores.api_keys,
                                     sidecar_token(settings.sealing_key, db_path)),
                   files=files, uploads=uploads, chunks=stores.chunks, vector_stores=vector_stores,
                   sandbox=sandbox,
                   background=background, agent_store=stores.agents, batch_store=stores.batches,
                   retention=retention, idempotency=idempotency, trimmer=trimmer, gauges=gauges,
                   api_keys=stores.api_keys).watching()
        await runtime.take_over_background()
        return runtime

    async def take_over_background(self) -> None:
        """Background runs no process holds any more (a previous process of this database, or a replica whose
        lease lapsed) are resumed from their kept request where possible (services/responses/background_resume.py),
        failed otherwise; the heartbeat's sweeps do the same from now on."""
        background = self.background
        background.rebuild = self.rebuild_background
        background.sealer = self.sealer
        background.kept_authorization = self.kept_authorization
        background.max_resumes = self.settings.background_max_resumes
        background.store_retry = self.settings.store_retry_seconds
        failed = await background.sweep()
        if failed:
            log.warning("background_interrupted", count=len(failed), response_ids=failed[:20])

    async def rebuild_background(self, body: dict[str, Any], *,
                                 tenant: str) -> tuple[Run, UpstreamRequest | None, str | None, UpstreamClient | None]:
        """A background request begun again, as ``POST /v1/responses`` begins it
        (adapters/http/responses/responses_routes.py): the run, its first call, what goes upstream as ``Authorization``
        (the configured key; a run that needs the client's own is given the one kept with it:
        services/responses/kept_authorization.py), the routed client."""
        if self.clients:
            route = self.route(body.get("model"))
            run = self.new_routed_run(route, tool_loop=True, tools=body.get("tools"), tenant=tenant)
            call = await run.begin(body)
            return run, call, self.route_authorization(route, None), self.client_for(route)
        run = self.new_run(tool_loop=True, tenant=tenant)
        return run, await run.begin(body), self.upstream_authorization(None), None

    def watching(self) -> Runtime:
        """This runtime with its memory backstop started (it reads the process's use at start)."""
        self.memory_watch.start()
        memory = self.memory
        self.trimmer.quiet = lambda: memory.held == 0  # a full collection before a trim, with nothing held
        return self

    async def close(self) -> None:
        await self.retention.stop()
        await self.idempotency.stop()
        await self.trimmer.stop()
        await self.memory_watch.stop()
        await self.gauges.stop()
        await self.background.close()  # runs still going are stored as failed before the store closes
        await self.upstream.close()
        for client in self.clients.values():
            if client is not self.upstream:
                await client.close()
        await self.server_tools.services.aclose()
        await self.vector_stores.close()  # ingestion stops (files in progress resume on the next start), the embedder
        await self.sandbox.aclose()
        await self.uploads.aclose()
        await self.files.aclose()
        await self.store.close()

    def new_run(self, *, tool_loop: bool = False, tenant: str) -> ResponseRun:
        """The run of one ``POST /v1/responses`` by ``tenant``, over this process's store, conversations and
        prompts (it reads and stores only that tenant's). ``tool_loop``: the door drives ``next_turn``, so
        server-side tools are run (else they fall under the unsupported-tool policy, as for Envoy's own upstream
        call)."""
        if self.router.single:  # the one upstream serves whatever this run calls
            note_upstream(SINGLE_UPSTREAM, "translate")
        run = ResponseRun(self.store, self.options, self.sealer, conversations=self.conversations,
                          prompts=self.prompts, server_tools=self.server_tools if tool_loop else None,
                          max_turns=self.settings.max_turns, files=self.file_inputs, tenant=tenant)
        run.admit_subagent = self.limits.acquire  # a subagent is one more of the tenant's requests in flight
        run.charge_memory = self.memory.charge  # and holds its context in the memory budget
        run.upstream_gate = self.upstream_gate
        return run

    @property
    def embedder(self) -> Embedder:
        """The vector stores' embedder (services/files/retrieval/embedders.py), built by its first use."""
        return self.vector_stores.embedder

    @property
    def containers(self) -> ContainerService:
        """The Containers API; the code interpreter's files (services/containers/containers.py): built, with the
        sandbox's other services, by the first reader (``await runtime.sandbox.open()`` builds it off the loop)."""
        return self.sandbox.containers

    @property
    def skills(self) -> SkillService:
        """The Skills API; the skills containers are made with (services/containers/skills.py)."""
        return self.sandbox.skills

    @cached_property
    def file_inputs(self) -> FileInputs:
        """The tenant's files read for content parts naming them (``file_id``), against the memory budget."""
        return FileInputs(self.files, self.memory)

    @cached_property
    def served_tools(self) -> frozenset[str]:
        """The server-side tool types this deployment runs (web search only with a provider configured,
        file search only with vector stores): a request carrying one takes the tool loop, which the ext_proc door
        hands to the HTTP door."""
        return self.server_tools.services.served

    def streams_via_sidecar(self, request: dict[str, Any]) -> bool:
        """A streamed (not background) request whose upstream wants its streams run by the HTTP door
        (``stream_via_sidecar``): Envoy cannot write the first event before the upstream's response headers,
        which a slow model sends only with its first token; the HTTP door sends ``response.created`` at once."""
        if request.get("stream") is not True or request.get("background") is True:
            return False
        chosen = self.route(request.get("model")).upstream.stream_via_sidecar
        return self.settings.stream_via_sidecar if chosen is None else chosen

    def upstream_authorization(self, client_authorization: str | None) -> str | None:
        """The configured key wins; without one, the client's own credentials go upstream (a gateway in front
        of a multi-tenant provider must not swap every caller's key for its own). With ``auth: keys`` the
        client's Authorization is its key to this bridge, and never goes upstream."""
        if self.settings.api_key:
            return f"Bearer {self.settings.api_key}"
        return None if self.settings.auth == "keys" else client_authorization

    def forwards_client_authorization(self, model: str | None, client_authorization: str) -> bool:
        """Does the client's own ``Authorization`` go upstream for a request of ``model`` (no key configured for
        its upstream)? A model no route serves: assumed so (its run fails before any call anyway)."""
        if not self.clients:
            return self.upstream_authorization(client_authorization) == client_authorization
        try:
            route = self.routes().route(model)
        except APIError:
            return True
        return self.route_authorization(route, client_authorization) == client_authorization

    # --- routing (config/upstreams.py) --------------------------------------------------------------------------------

    def routes(self) -> Router:
        return self.router

    def route(self, model: object) -> Route:
        """The route of a request naming ``model`` (404 ``model_not_found`` when none serves it); the request's
        log line and metrics name its upstream and that upstream's mode from here on."""
        route = self.routes().route(model if isinstance(model, str) else None)
        note_upstream(route.upstream.name, self.mode_of(route))
        return route

    def mode_of(self, route: Route) -> str:
        """How ``route``'s upstream is served: ``native`` or ``translate`` (an ``auto`` one as its probe found)."""
        return "native" if self.is_native(route) else "translate"

    def routed_run(self, route: Route, *, tool_loop: bool = False, tenant: str) -> Run:
        """:meth:`new_run` for a routed request: the upstream model name is the route's."""
        run = self.new_run(tool_loop=tool_loop, tenant=tenant)
        run.use_options(self.route_options(route))
        return run

    def native_run(self, route: Route, *, tenant: str) -> Run:
        """The run of a request routed to a native backend (``mode: native``): run/native_run.py."""
        from .run.native_run import NativeRun

        return NativeRun(self.store, self.route_options(route), self.sealer, conversations=self.conversations,
                         served=self.server_tools.services.served, files=self.file_inputs,
                         tenant=tenant)

    def new_routed_run(self, route: Route, *, tool_loop: bool = False, tools: object = None,
                       tenant: str) -> Run:
        """The run for ``route``: native, or translated (:meth:`routed_run`). A native backend runs no server-side
        tool: a request offering one the bridge runs (``tools``: the request's, with ``tool_loop``) is translated
        to the same backend's Chat Completions instead, where the bridge's tool loop runs them."""
        if self.is_native(route) and not (tool_loop and runs_server_tools(tools, self.served_tools)):
            return self.native_run(route, tenant=tenant)
        note_upstream(route.upstream.name, "translate")  # a native backend's Chat Completions, for the tool loop
        return self.routed_run(route, tool_loop=tool_loop, tenant=tenant)

    def is_native(self, route: Route) -> bool:
        """Whether ``route``'s backend answers ``/v1/responses`` itself: ``mode: native``, or ``auto`` probed so."""
        mode = route.upstream.mode
        return mode == "native" or (mode == "auto" and self.probed_modes.get(route.upstream.name) == "native")

    def route_options(self, route: Route) -> EngineOptions:
        """The engine's options for ``route``'s upstream: its profile, under the switches measured by its probe
        (``mode: auto``), those set one by one in the settings and the upstream's own ``switches``; and its model
        name. The lone ``--upstream`` keeps the settings' own profile (``self.options``)."""
        spec = route.upstream
        options = self._upstream_options.get(spec.name)
        if options is None:
            if self.routes().single:
                options = self.options
            else:
                overrides = {**self.probed_switches.get(spec.name, {}), **self.settings.switch_overrides(),
                             **spec.switches}
                options = options_for(self.options, spec.profile, overrides)
            self._upstream_options[spec.name] = options
        return dataclasses.replace(options, upstream_model=route.upstream_model)

    def route_authorization(self, route: Route, client_authorization: str | None) -> str | None:
        """What goes upstream as ``Authorization`` for ``route``: its key, or the client's own (never a bridge
        key: ``auth: keys``)."""
        if self.settings.auth == "keys":
            client_authorization = None
        return self.routes().authorization(route.upstream, client_authorization)

    def client_for(self, route: Route) -> UpstreamClient | None:
        """The sidecar's own client for the route's upstream (None: the default one)."""
        return self.clients.get(route.upstream.name)


def program_host(settings: Settings, memory: MemoryBudget, sealer: Sealer) -> ProgramHosting:
    """Where programs run: their slots shared by tenant as sandboxes' are, each program's memory bound (derived from
    the budget unless set: fairness/program_memory.py) held in the memory budget for its tenant while it runs, and its
    answer while the response keeps it (the run reaches the budget only through this hold). The host is made by the
    first program that runs (run/server_tool_services.py's ``ProgramHosting``); whether the budget leaves programs
    room is said at start, which needs none of their modules."""
    slots = settings.program_slots
    bound = settings.program_memory()
    problem = no_room(bound, memory.total, memory.share)
    if problem is not None:  # only a budget below the setting's floor comes here: a bound set too high stops the start
        log.warning("programs_without_memory", why=problem)

    async def hold(tenant: str, size: int) -> Reservation:
        return await memory.charge(tenant, size)

    return ProgramHosting(program_signer(sealer), slots, settings.program_slot_wait, bound,
                          settings.program_lower_priority_after,
                          share=lambda tenant: slots if settings.auth == "none" else max(1, slots - 1), hold=hold)


async def _refresh_gauges() -> None:
    metrics.refresh_pulled()


async def _open_background(settings: Settings, stores: StoreSet, database_url: str | None,
                           upstream: UpstreamClient) -> BackgroundService:
    """The service that runs background responses, with the upstream client it calls (started here). First the
    runs nobody runs any more are failed: alone on the database (SQLite), every one a previous process left
    unfinished; on a shared database (leases), those whose replica's lease expired."""
    leases: RunLeases | None = None
    if stores.postgres is not None and database_url:  # replicas share the background runs: leases
        from .store.postgres.background_runs import PostgresRunLeases  # the postgres extra: loaded here only

        leases = PostgresRunLeases(stores.postgres, database_url, lease_seconds=settings.background_lease_seconds)
    elif stores.sqlite is not None and settings.worker_count() > 1:  # workers on one SQLite file: leases too
        from .store.sqlite.background_runs import SQLiteRunLeases

        leases = SQLiteRunLeases(stores.sqlite, lease_seconds=settings.background_lease_seconds)
    background = BackgroundService(stores.responses, stores.events, upstream, leases)
    await background.open(sweep=False)  # the runtime sweeps once it can build runs again: take_over_background
    await upstream.start()
    return background
