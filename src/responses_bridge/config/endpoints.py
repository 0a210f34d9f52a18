"""The first group of the settings (settings.py's :class:`Settings` is made of it and the rest): the endpoints —
the upstream the bridge calls (and the key it sends there), the way its own upstream calls go (``upstream_via``),
and where its two doors listen. Kept in a module of its own so settings.py stays within the house's module size;
the fields are :class:`Settings`' first ones, in the order configuration.md lists them (a base class's fields come
first), read from the same sources under the same ``RESPONSES_BRIDGE_`` names.
"""

from __future__ import annotations

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings

from .upstreams import base_url, base_urls

DEFAULT_HTTP_PORT = 8080
DEFAULT_EXTPROC_PORT = 50051
"""Also the defaults of ``envoy-config``, whose listener (10000) must not collide with them."""


class EndpointSettings(BaseSettings):
    """The upstream and the doors (settings.py's ``Settings`` sets the sources and the ``RESPONSES_BRIDGE_``
    prefix)."""

    upstream: str = Field(
        default="http://127.0.0.1:8090/v1",
        validation_alias=AliasChoices("RESPONSES_BRIDGE_UPSTREAM", "OPENAI_BASE_URL", "upstream"),
    )
    upstream_urls: list[str] = Field(default=[], description=(
        "replicas of the lone `upstream`: every base URL serving its models (`--upstream` given several times; "
        "JSON in the environment); each request goes to one, picked where its chain or prompt prefix is cached, "
        "balanced by load (docs/upstreams.md, Replicas). With `upstreams`, an entry's `urls` instead"))
    api_key: str | None = Field(
        default=None, validation_alias=AliasChoices("RESPONSES_BRIDGE_API_KEY", "OPENAI_API_KEY", "api_key")
    )
    # Where the sidecar's own upstream calls go (background runs, WebSocket turns, compaction, the HTTP door):
    # in Envoy mode Envoy's listener (``http://127.0.0.1:<port>/v1``, its passthrough /v1/chat/completions
    # route), so they get Envoy's retries, TLS and stats too. None: the upstream itself.
    upstream_via: str | None = None
    http_host: str = "127.0.0.1"
    allowed_hosts: str = Field(default="", description=(
        "with auth: none, the `Host` names (comma-separated, without port) the HTTP door and the console answer "
        "besides loopback ones (`localhost`, `*.localhost`, 127.0.0.0/8, `[::1]`); any other is a 403 "
        "`host_not_allowed`, against DNS rebinding (a web page whose own name resolves to 127.0.0.1). `*`: any "
        "name. Requests Envoy forwards (`Via` set by the rendered routes) are not judged by it"))
    http_port: int = DEFAULT_HTTP_PORT
    http_head_timeout: float = Field(default=10.0, ge=0, description=(
        "seconds a request's head (request line and headers) may take to reach the HTTP door, from its first "
        "byte: a slower head is answered 408 `request_timeout` and its connection closed, so clients sending a "
        "byte at a time hold no descriptor and task for long; `envoy-config` renders it as Envoy's "
        "`request_headers_timeout`; 0: no bound"))
    http_keepalive_timeout: float = Field(default=75.0, gt=0, description=(
        "seconds an HTTP door connection may stay open with no request on it (a new one that sends nothing, one "
        "kept alive between requests) before the door closes it; `envoy-config` has Envoy drop its own idle "
        "connections to the door after half of it, so the door never closes one Envoy is about to reuse"))
    extproc_host: str = "127.0.0.1"
    extproc_port: int = DEFAULT_EXTPROC_PORT
    extproc_uds: str | None = Field(default=None, description=(
        "a Unix domain socket path for the ext_proc door instead of `extproc_host`:`extproc_port` (one copy less "
        "than TCP loopback; `envoy-config --extproc-uds` renders Envoy's pipe address). With several workers, "
        "worker i > 0 listens on PATH.i"))

    @field_validator("upstream")
    @classmethod
    def _check_upstream(cls, value: str) -> str:
        return base_url(value)  # a URL without its scheme stops the start here, naming the flag or variable

    @field_validator("upstream_urls")
    @classmethod
    def _check_upstream_urls(cls, value: list[str]) -> list[str]:
        return base_urls(value)

    @field_validator("upstream_via")
    @classmethod
    def _check_via(cls, value: str | None) -> str | None:
        return base_url(value) if value else None
