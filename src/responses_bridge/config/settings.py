"""Settings, from command-line flags over environment variables over a YAML file over defaults.

Environment variables use the ``RESPONSES_BRIDGE_`` prefix (``RESPONSES_BRIDGE_DB``, …). The upstream's base URL
and key also fall back to the names every OpenAI client already knows, ``OPENAI_BASE_URL`` and
``OPENAI_API_KEY``, so a deployment that already exports them needs no new configuration. The YAML file
(``--config FILE`` or ``RESPONSES_BRIDGE_CONFIG``) takes the same settings under their field names
(``http_port: 8081``); it is read by pydantic-settings' own YAML source (file.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from ..engine.options import EngineOptions
from ..engine.responses.profiles import SWITCHES, ProfileName, options_for
from ..protocol.responses.request import DEFAULT_MAX_INPUT_ITEMS
from . import file as config_file
from .agent_sandbox import AgentSandboxSettings
from .automations import AutomationSettings
from .console import ConsoleSettings
from .desktop import DesktopToolSettings
from .desktop_watch import DesktopWatchSettings
from .endpoints import EndpointSettings
from .errors import EnvJSONError, JsonEnvSource, SettingsError, Sources, explain, explain_json
from .pools import PoolSettings
from .sandbox import CodeSandboxSettings
from .tenants import TenantPolicy
from .tools import ToolSettings
from .upstreams import ModelRoute, Router, UpstreamSpec, check_references, single_upstream

if TYPE_CHECKING:
    from ..sandbox import SandboxLimits

class Settings(PoolSettings, AgentSandboxSettings, AutomationSettings, CodeSandboxSettings, DesktopToolSettings,
               DesktopWatchSettings, EndpointSettings, ToolSettings, ConsoleSettings):
    model_config = SettingsConfigDict(env_prefix="RESPONSES_BRIDGE_", extra="ignore")

    stream_via_sidecar: bool = Field(default=False, description=(
        "the ext_proc door sends streamed requests to the sidecar's HTTP door, whose model call goes through "
        "Envoy's cluster (`upstream_via`): the first event reaches the client at once instead of after the model's "
        "response headers (Envoy writes nothing before them), for one more hop per request; per upstream: "
        "`upstreams[].stream_via_sidecar`"))
    store_chat_completions: bool = Field(default=True, description=(
        "keep `POST /v1/chat/completions` answers sent with `store: true` (readable at `/v1/chat/completions`); "
        "through Envoy the processor then reads every chat request's body to see `store`, one round trip per chat "
        "request. `false`: the chat route passes through Envoy without the processor (as `envoy-config` renders "
        "it then), and `store` goes to the upstream unread"))
    workers: str = Field(default="1", description=(
        "processes serving both doors: a number, or `auto` (one per usable core: the CPU affinity and the "
        "cgroup's CPU quota). The HTTP port is shared; worker i's ext_proc door is `extproc_port` + i (or "
        "PATH.i), which `envoy-config --workers` lists"))
    db: str | None = None  # None: a file under the user's data directory
    # The PostgreSQL database every replica shares (store/postgres/): ``postgresql://user:password@host/db``. Set,
    # it holds every store instead of the SQLite file, and an unreachable one fails the start. A secret: it
    # carries the password.
    database_url: SecretStr | None = None
    upstream_timeout: float = 600.0  # whole-request ceiling; streams are also bounded by idle_timeout
    upstream_connect_timeout: float = 10.0
    upstream_idle_timeout: float = 300.0  # the longest silence allowed between two upstream chunks
    max_request_bytes: int = 64 * 1024 * 1024
    websocket_max_lanes: int = Field(default=8, ge=1, description=(
        "WebSocket mode: `stream_id` lanes one connection may have busy at once (turns running or waiting); a "
        "turn that would open one more gets an `error` event, code `too_many_lanes`"))
    max_event_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)  # one upstream event / JSON answer; engine/sse.py
    request_body_timeout: float = Field(default=30.0, ge=0, description=(
        "seconds a request body may take to arrive, plus one second for every `request_body_min_rate` bytes "
        "received; a slower body is answered 408 `request_timeout` and its connection closed, giving back what it "
        "held (memory budget, tenant slot); 0: no bound"))
    request_body_min_rate: int = Field(default=32 * 1024, ge=0, description=(
        "bytes per second a request body earns more time with (see `request_body_timeout`): a client sending at "
        "least this fast never meets the bound; 0: `request_body_timeout` is the deadline of the whole body"))
    unknown_fields: Literal["reject", "warn"] = Field(default="reject", description=(
        "a request field OpenAI does not define where it appears (`temprature`, a tool's `enviroment`, a "
        "container's `memory_limt`: every create and update body): `reject` "
        "answers 400 `unknown_parameter` naming its path, as OpenAI does (and a value outside one of OpenAI's "
        "enumerations, `reasoning.effort: \"bogus\"`, 400 `invalid_value`); `warn` accepts either and logs the path "
        "once (for clients newer than the bridge's table of OpenAI's fields and values)"))
    event_names: Literal["openai", "open-responses"] = Field(default="openai", description=(
        "the names of streamed events where the `openai` SDK and the Open Responses spec differ (a backend's "
        "reasoning: `response.reasoning_text.delta` / `.done` for the SDK, `response.reasoning.delta` / `.done` in "
        "the spec): `openai` gives the SDK's names unless a request sends `OpenResponses-Version`; `open-responses` "
        "gives every client the spec's (a deployment for Open Responses clients only, its compliance suite)"))
    max_input_items: int = Field(default=DEFAULT_MAX_INPUT_ITEMS, ge=1, description=(
        "input items one `POST /v1/responses` (or WebSocket `response.create`, or compaction) may hold: past it a "
        "400 `array_above_max_length` naming `input`, judged before any item is parsed; bounds one request's "
        "memory with its item count as `max_request_bytes` does with its bytes"))
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    developer_role: Literal["developer", "system"] = "system"
    reasoning_history: Literal["drop", "reasoning_content"] = "drop"
    # The upstream's compatibility profile (engine/responses/profiles.py): its table of switches applies, and any switch
    # set here as well (the three above, the eight below) wins over it. generic: the behaviour before profiles.
    profile: ProfileName = Field(default="generic", description=(
        "the upstream's compatibility profile: a table of the request-translation switches (`developer_role`, "
        "`max_tokens_field`, `reasoning_history` and the eight below); a switch set on its own wins over it. "
        "`generic`: the behaviour without a profile"))
    tool_call_content: Literal["null", "empty"] = Field(default="null", description=(
        "the content of an assistant message that carries only tool calls; `empty` sends \"\" (llama.cpp "
        "answers 400 to null)"))
    tool_result_role: Literal["tool", "user"] = Field(default="tool", description=(
        "a tool's result as a `tool` message, or as a `user` turn naming the tool (llama.cpp renders `tool` "
        "messages as empty turns)"))
    tool_calling: Literal["native", "prompt"] = Field(default="native", description=(
        "how tools reach the model when it may choose: `native` sends `tools` (and `tool_choice`); `prompt` "
        "describes them in the system message and reads calls written as `functions.<name>:` out of the answer "
        "(stock llama-cpp-python ignores `tools` without `tool_choice` and answers empty text under `auto`)"))
    json_schema_format: Literal["json_schema", "json_object"] = Field(default="json_schema", description=(
        "a `json_schema` text format as OpenAI's `json_schema` response_format, or as `{\"type\": "
        "\"json_object\", \"schema\": …}` (llama.cpp answers 500 to the first)"))
    stream_usage: bool = Field(default=True, description=(
        "ask streams for usage (`stream_options.include_usage`); false for servers that refuse `stream_options`"))
    logprobs: bool = Field(default=True, description=(
        "pass `logprobs` / `top_logprobs` upstream; false for servers that refuse them"))
    openai_fields: bool = Field(default=False, description=(
        "pass OpenAI's own Chat Completions fields upstream (`prompt_cache_retention`, `prompt_cache_options`, "
        "`moderation`); false: the cache fields are echoed only and a request with `moderation` is refused (400)"))
    images: bool = Field(default=True, description=(
        "the upstream's model reads images (`image_url` parts); false refuses the computer tools (the Responses "
        "API's `computer`, a session's `computer_use`), whose answers are screenshots, with a 400 naming this "
        "switch"))
    unsupported_tools: Literal["drop", "reject"] = "drop"  # server-side tools it cannot run; see engine/tools/tools.py
    context_window: int | None = Field(default=None, ge=1)  # tokens; see engine/truncation.py
    sealing_key: str | None = None  # urlsafe base64 of 32 bytes; see sealing.py
    max_turns: int = Field(default=16, ge=1)  # model turns of one tool loop; the last goes without tools
    stream_keepalive_seconds: float = Field(default=15.0, gt=0, description=(
        "an open event stream waiting on server-side work (MCP listings, tool calls) gets an SSE comment after "
        "this many silent seconds, so idle timeouts between the client and the bridge do not cut it"))
    json_keepalive_seconds: float = Field(default=15.0, ge=0, description=(
        "a non-streamed `POST /v1/responses` the HTTP door is still working on after this many seconds (a long "
        "tool loop) gets its 200 and headers, then a newline every as many seconds until its JSON body: an idle "
        "timeout on the way (Envoy's, a load balancer's) does not cut it. A failure after that is a `failed` "
        "Response, stored, not an HTTP error. At most half of `envoy_stream_idle_timeout`; 0: never"))
    idempotency_key_seconds: float = Field(default=86400.0, gt=0, description=(
        "how long an `Idempotency-Key` of `POST /v1/responses` is kept, per tenant, from its first use: a retry with "
        "the same key and body within it gets the first request's response instead of running again"))
    # The Files API (services/files/files.py): the largest upload accepted; over it, a 413. Bytes are kept on disk in
    # files/ next to the database, never in memory.
    max_file_bytes: int = Field(default=512 * 1024 * 1024, ge=1, description=(
        "largest file `POST /v1/files` accepts, bytes; larger is a 413 `file_too_large`"))
    max_upload_parts: int = Field(default=1000, ge=1, description=(
        "most parts one upload (`POST /v1/uploads/{id}/parts`) may hold; one more is a 400 `too_many_parts`"))
    tenant_max_containers: int | None = Field(default=None, ge=0, description=(
        "default per-tenant limit of live containers; none: no limit"))
    tenant_max_sandboxes: int | None = Field(default=None, ge=1, description=(
        "default per-tenant limit of code interpreter calls running at once on one process; none: a fair share "
        "(every slot with auth none, else all slots but one, so another tenant's call always finds one free)"))
    # --- tenancy (services/identity; adapters/http/identity.py, the ext_proc door) --------------------------------
    auth: Literal["none", "keys", "header"] = Field(default="none", description=(
        "who the caller is: none (one shared tenant; a warning at start when bound beyond loopback), keys (the "
        "bridge's own API keys, made with `responses-bridge keys create`, sent as Authorization: Bearer), header "
        "(a tenant header set by Envoy after jwt_authn or ext_authz; trusted only from Envoy)"))
    tenant_header: str = Field(default="x-tenant-id", description=(
        "the request header naming the tenant with auth: header (Envoy sets it; a client's own is stripped)"))
    tenant_max_concurrent_requests: int | None = Field(default=None, ge=1, description=(
        "default per-tenant limit of requests in flight on one process (429 with Retry-After over it); none: no limit"))
    tenant_max_websocket_connections: int = Field(default=16, ge=1, description=(
        "default per-tenant limit of WebSocket mode connections open at once on one process (one more is refused "
        "before the upgrade: 429 with Retry-After). Each holds up to `max_request_bytes` of turns waiting on its "
        "lanes and as much queued steering input, besides its running turns"))
    tenant_max_request_bytes: int | None = Field(default=None, ge=1, description=(
        "default per-tenant limit of one request body, in bytes (413); none: only max_request_bytes"))
    tenant_max_stored_bytes: int | None = Field(default=None, ge=0, description=(
        "default per-tenant limit of stored bytes, files, container files, skills and what the Agents API keeps "
        "(its records, artifacts and installed packages) together; none: no limit"))
    retention_days: float | None = Field(default=None, gt=0, description=(
        "default time-to-live of stored responses and conversations, purged in the background; none: kept until "
        "deleted (OpenAI keeps 30 days)"))
    tenants: dict[str, TenantPolicy] = Field(default_factory=dict, description=(
        "per-tenant limits and retention by tenant name (keys: max_concurrent_requests, max_request_bytes, "
        "max_websocket_connections, max_stored_bytes, max_containers, max_sandboxes, retention_days); unset values "
        "take the defaults above"))
    ingest_concurrency: int = Field(default=2, ge=1, description="vector store files ingested (extracted, chunked, "
                                    "embedded, indexed) at once; files left in progress resume on restart")
    # Background responses on a shared database (services/responses/background.py): a replica's lease on each run it
    # runs, renewed three times per period; a run whose lease ran out (its replica died) is taken over by another
    # (services/responses/background_resume.py).
    background_lease_seconds: float = Field(default=30.0, gt=0, description=(
        "with a shared database: how long a background response stays its replica's without a heartbeat; after "
        "that another replica takes it over (resumes it, or fails it when it cannot be resumed)"))
    background_max_resumes: int = Field(default=3, ge=0, description=(
        "how many times one background response, or one Agents session turn, may be resumed after its process "
        "stopped (killed, restarted, drained) before it fails instead: a crash loop never repeats a poisonous step "
        "forever; 0: never resume"))
    durable_client_credentials: bool = Field(default=True, description=(
        "a background response or Agents session turn whose upstream call carries the client's own Authorization "
        "(no key configured for its upstream) keeps it sealed with the run (the sealing key's AES-GCM) while the run "
        "runs, erased at its end, so the next start or another replica resumes the run with it; `false`: it is held "
        "in memory only, and such runs fail after their process stopped (`serve` says so at start)"))
    ingest_lease_seconds: float = Field(default=60.0, gt=0, description=(
        "with a shared database: how long a replica's claim on a file it ingests lasts without renewal; after that "
        "another replica takes the file over (a replica that died mid-ingestion)"))
    store_stall_seconds: float = 10.0  # a write waiting longer than this makes GET /health/ready answer 503
    store_retry_seconds: float = Field(default=60.0, ge=0, description=(
        "how long an Agents session's reads and writes, the input it accepts and a background response's saves "
        "wait out a database outage (connection lost or refused, SQLite's lock held), retried with backoff, before "
        "they give up: a request then answers 503 `store_unavailable`, a turn is resumed from the store once it "
        "answers again; keep it above the lease (`background_lease_seconds`); 0: never retry"))
    log_level: str = "info"
    log_format: Literal["json", "console"] = "json"
    event_loop: Literal["auto", "uvloop", "asyncio"] = Field(default="auto", description=(
        "the event loop every serving process runs on: `uvloop` (installed with the bridge where the platform has "
        "it), `asyncio` (the standard library's), or `auto`: uvloop when installed (process/event_loop.py)"))
    drain_timeout: float = Field(default=30.0, ge=0, description="seconds live streams may run on after "
                                 "SIGTERM/SIGINT before each ends with response.failed (server_shutdown)")
    # Several upstreams, routed per model (upstreams.py); JSON in the environment. Empty: ``upstream`` alone
    # serves every model, translated.
    upstreams: list[UpstreamSpec] = Field(default=[], description=(
        "several upstreams, each `{name, url, mode: translate|native|auto, profile, switches, api_key_env | api_key}` "
        "(`api_key: forward` sends the client's own); JSON in the environment. Empty: `upstream` serves every model"))
    models: list[ModelRoute] = Field(default=[], description=(
        "which models go to which upstream: `{match: exact name or glob, upstream: NAME, upstream_model: optional "
        "rename}`, exact names first, then globs in order"))
    default_upstream: str | None = Field(default=None, description=(
        "the upstream of a model no `models` entry matches; unset: such a model is a 404 `model_not_found`"))
    # --- the timeouts `envoy-config` renders (envoy_config/names.py EnvoyTimeouts) ------------------------------
    envoy_stream_idle_timeout: float = Field(default=300.0, ge=0, description=(
        "`envoy-config --stream-idle-timeout`: seconds a request may pass through Envoy with no byte either way "
        "before Envoy ends it (504 `gateway_timeout`, naming this setting); 0: never. The HTTP door's "
        "`json_keepalive_seconds` is kept at most half of it"))
    envoy_message_timeout: float = Field(default=30.0, gt=0, description=(
        "`envoy-config --message-timeout`: seconds Envoy waits for each answer of the processor (504 "
        "`processor_timeout`); a streamed background response's first answer waits at most 5/6 of it"))
    envoy_max_message_timeout: float = Field(default=300.0, gt=0, description=(
        "`envoy-config --max-message-timeout`: the longest wait the processor may ask Envoy for, per message"))
    envoy_connect_timeout: float = Field(default=5.0, gt=0, description=(
        "`envoy-config --connect-timeout`: seconds Envoy tries to connect to the upstream, the processor or the "
        "HTTP door"))
    envoy_max_requests: int = Field(default=0, ge=0, description=(
        "`envoy-config --max-requests`: the circuit breakers of every cluster Envoy renders (the upstream's, the "
        "processor's, the HTTP door's): requests in flight, requests waiting for a connection and connections, "
        "each; past it Envoy answers 503 at once (its own default, 1,024, refuses the 1,025th concurrent stream). "
        "0: 10,000 per worker of `workers`, what one process is sized to hold (docs/operations.md, Sizing)"))

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Flags (the keyword arguments) over the environment over the configuration file, when one is given. The
        environment's JSON (``upstreams``, ``models``, ``tenants``) is decoded by :class:`JsonEnvSource`, which
        names the variable when it is broken."""
        env = JsonEnvSource(settings_cls)
        path = config_file.current_path()
        if path is None:
            return init_settings, env, dotenv_settings, file_secret_settings
        return (init_settings, env, dotenv_settings, config_file.ConfigFileSource(settings_cls, path),
                file_secret_settings)

    @field_validator("workers", mode="before")
    @classmethod
    def _workers(cls, value: object) -> str:
        from ..process.workers import worker_count

        text = str(value).strip().lower()
        worker_count(text)  # a clear ValueError for anything but a positive number or "auto"
        return text

    def worker_count(self) -> int:
        """How many workers ``workers`` means on this machine."""
        from ..process.workers import worker_count

        return worker_count(self.workers)

    @field_validator("tool_call_content", mode="before")
    @classmethod
    def _yaml_null(cls, value: object) -> object:
        return "null" if value is None else value  # ``tool_call_content: null`` in YAML reads as None

    @field_validator("db")
    @classmethod
    def _check_db(cls, value: str | None) -> str | None:
        if value is None or "://" not in value:
            return value
        from ..store.database_url import sqlite_path

        return sqlite_path(value)  # a URL stops here, pointing at RESPONSES_BRIDGE_DATABASE_URL

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        import logging

        if not isinstance(logging.getLevelName(value.upper()), int):  # else every line would go out at info
            raise ValueError("must be debug, info, warning or error")
        return value

    @field_validator("sealing_key")
    @classmethod
    def _check_sealing_key(cls, value: str | None) -> str | None:
        if not value:
            return value
        from ..sealing import KEY_FORM, key_problem

        problem = key_problem(value)  # here, before any store or thread is opened: one line, a prompt exit
        if problem is not None:
            raise ValueError(f"{problem}; it must be {KEY_FORM}")
        return value

    @model_validator(mode="after")
    def _derived_pools(self) -> Settings:
        if not self.upstream_max_connections:  # 0: sized from this process's descriptors and memory
            from ..fairness.memory_limits import default_budget
            from .pools import stream_capacity

            self.upstream_max_connections = stream_capacity(self.memory_budget() or default_budget(
                self.worker_count()))
        return self

    @model_validator(mode="after")
    def _upstream_references(self) -> Settings:
        check_references(self.upstreams, self.models, self.default_upstream)
        if self.upstream_urls and self.upstreams:
            raise ValueError("upstream_urls (`--upstream` given several times) are the lone upstream's replicas; "
                             "with `upstreams`, list an entry's replicas in its `urls`")
        return self

    @model_validator(mode="after")
    def _program_memory_fits(self) -> Settings:
        """A program bound set above what one tenant may hold of the memory budget stops the start, naming both
        (fairness/program_memory.py); unset, it is derived to fit (:meth:`program_memory`)."""
        if "program_memory_bytes" in self.model_fields_set:
            from ..fairness.program_memory import no_room

            problem = no_room(self.program_memory_bytes, self.memory_budget(), self.memory_budget_share)
            if problem is not None:
                raise ValueError(problem)
        return self

    def router(self) -> Router:
        """The per-model routes; without ``upstreams``, the one ``upstream`` for every model. Raises ValueError
        when an ``api_key_env`` names a variable that is not set."""
        if not self.upstreams:
            return Router([single_upstream(self.upstream, self.api_key, self.upstream_urls)], [], None, single=True)
        return Router(self.upstreams, self.models, self.default_upstream)

    def engine_options(self) -> EngineOptions:
        """The profile's switches, with those set explicitly (flag, environment or file) on top."""
        base = EngineOptions(unsupported_tools=self.unsupported_tools, context_window=self.context_window,
                             max_event_bytes=self.max_event_bytes, max_input_items=self.max_input_items,
                             unknown_fields=self.unknown_fields, event_names=self.event_names,
                             screenshots_kept=self.desktop_screenshots_kept)
        return options_for(base, self.profile, self.switch_overrides())

    def switch_overrides(self) -> dict[str, Any]:
        """The profile switches given one by one (not left at their default)."""
        return {name: getattr(self, name) for name in SWITCHES if name in self.model_fields_set}

    def sandbox_limits(self) -> SandboxLimits:
        from ..sandbox import SandboxLimits

        return SandboxLimits(timeout=self.code_timeout, memory_bytes=self.code_memory_bytes,
                             processes=self.code_max_processes, file_bytes=self.code_max_file_bytes,
                             container_bytes=self.code_max_container_bytes, output_bytes=self.code_max_output_bytes,
                             concurrency=self._worker_share(self.code_concurrency))

    def memory_budget(self) -> int:
        """This process's memory budget for requests in flight, bytes (0: none)."""
        if self.memory_budget_bytes is None:
            from ..fairness.memory_limits import default_budget

            return default_budget(self.worker_count())
        return self.memory_budget_bytes // self.worker_count() if self.memory_budget_bytes else 0

    def program_memory(self) -> int:
        """One program's memory bound: as set, else derived from what one tenant may hold of this process's memory
        budget (fairness/program_memory.py)."""
        if "program_memory_bytes" in self.model_fields_set:
            return self.program_memory_bytes
        from ..fairness.program_memory import derived_bound

        return derived_bound(self.memory_budget(), self.memory_budget_share)

    def _worker_share(self, total: int) -> int:
        """This process's part of a sidecar-wide count (0: one per core) when ``workers`` share it: at least 1."""
        workers = self.worker_count()
        if workers == 1:
            return total
        from ..process.workers import usable_cpus

        return max(1, -(-(total or usable_cpus()) // workers))

    def sandbox_share(self, tenant: str, slots: int) -> int:
        """How many of this process's ``slots`` sandbox slots ``tenant`` may hold at once: its ``max_sandboxes``,
        else a fair share (all of them where there is one tenant, else all but one)."""
        own = self.tenant_policy(tenant).max_sandboxes
        if own is not None:
            return min(own, slots)
        return slots if self.auth == "none" else max(1, slots - 1)

    def upstream_share(self, tenant: str) -> int:
        """What one tenant's upstream calls may hold of ``upstream_max_connections`` when it is alone."""
        total = self.upstream_max_connections
        if self.upstream_tenant_connections:
            return min(self.upstream_tenant_connections, total)
        return total if self.auth == "none" else max(1, total // 2)

    def tenant_policy(self, tenant: str) -> TenantPolicy:
        """The limits and retention of ``tenant``: its own entry under ``tenants`` over the defaults."""
        defaults = TenantPolicy(max_concurrent_requests=self.tenant_max_concurrent_requests,
                                max_request_bytes=self.tenant_max_request_bytes,
                                max_websocket_connections=self.tenant_max_websocket_connections,
                                max_stored_bytes=self.tenant_max_stored_bytes, retention_days=self.retention_days,
                                max_containers=self.tenant_max_containers, max_sandboxes=self.tenant_max_sandboxes)
        own = self.tenants.get(tenant)
        return defaults if own is None else own.over(defaults)

    def json_keepalive_interval(self) -> float:
        """Seconds before (and between) the whitespace a long JSON answer is kept alive with; 0: none. Under half
        of the Envoy idle timeout the same settings render, so one setting of it moves both."""
        if not self.json_keepalive_seconds:
            return 0.0
        if self.envoy_stream_idle_timeout:
            return min(self.json_keepalive_seconds, self.envoy_stream_idle_timeout / 2)
        return self.json_keepalive_seconds

    def db_path(self) -> str:
        if self.db:
            return self.db
        from ..store import default_db_path

        return default_db_path()


def load_settings(flags: dict[str, str] | None = None, config: str | None = None, **overrides: object) -> Settings:
    """Flags given on the command line (not None) win over the environment, which wins over the configuration
    file (``config``, else ``RESPONSES_BRIDGE_CONFIG``). ``flags`` maps a field to the flag that sets it, to name
    the flag rather than the variable when the bad value came from the command line.

    Every command builds its settings here, so this is the one place a mistake becomes :class:`SettingsError`:
    one line naming the flag, variable or file and key (errors.py)."""
    given: dict[str, Any] = {key: value for key, value in overrides.items() if value is not None}
    with config_file.reading(config) as source:
        try:
            return Settings(**given)
        except ValidationError as exc:
            raise SettingsError(explain(exc, Settings, sources_of(given, flags, source))) from None
        except EnvJSONError as exc:
            raise SettingsError(explain_json(exc, Settings, sources_of(given, flags, source))) from None
        except config_file.ConfigFileError as exc:
            raise SettingsError(str(exc)) from None


def sources_of(given: dict[str, Any], flags: dict[str, str] | None, source: config_file.Reading | None) -> Sources:
    return Sources(given, flags or {}, env_names, source.path if source is not None else None,
                   frozenset(source.keys) if source is not None else frozenset())


def env_names(field: str) -> list[str]:
    """The environment variables that set a field, in the order they are looked up."""
    info = Settings.model_fields.get(field)
    if info is None:
        return []
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        return [name for name in alias.choices if isinstance(name, str) and name.isupper()]
    if isinstance(alias, str):
        return [alias]
    return [f"RESPONSES_BRIDGE_{field.upper()}"]


def field_default(field: str) -> Any:
    return Settings.model_fields[field].default
