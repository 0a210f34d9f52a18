"""Names the bootstrap and the processor share (metadata namespaces and keys, cluster names, the header the
sidecar's own calls carry), and the upstream URL's parts: a change here changes both sides at once.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    pass


EXTPROC_SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"


IMMEDIATE_RESPONSE_DETAILS = "responses_bridge"
"""``ImmediateResponse.details`` of every reply the processor makes itself; Envoy records it as the response
code details, which is how ``local_reply_config`` tells the processor's replies from Envoy's own."""


LISTEN_PORT = 10000
"""Envoy's listener by default (as in Envoy's own examples): not the sidecar's HTTP door port (8080), so the two
commands run side by side with their defaults."""


ROUTE_NAMESPACE = "responses_bridge.route"


ROUTE_KEY = "to"


ROUTE_TO_SIDECAR = "sidecar"
"""The dynamic metadata (namespace, key, value) the processor sets on a Responses request with server-side tools
the deployment runs, before Envoy picks the route again: the request then goes to the sidecar's HTTP door, which
runs the tool loop. Metadata, not a header: nothing a client sends can pick that route."""


ROUTE_OFFERED_KEY = "sidecar_route"
"""Set to true in ``ROUTE_NAMESPACE`` by the bootstrap for every request and forwarded to the processor: this
bootstrap has the route above. The processor routes only then, so a bootstrap rendered before the route existed
keeps every request on the ext_proc path instead of sending an untranslated body upstream."""


HANDS_OFF_METADATA = "x-responses-bridge-hands-off"
"""gRPC metadata a route sends with the processor's stream (``grpc_initial_metadata``) when the processor is on
there only to prove it answers (``GET /v1/models`` to the sidecar's HTTP door): it changes nothing and checks
nothing, since the door checks the caller itself. A smoke test of the list then fails on a bootstrap whose
processor address is wrong, as every Responses request would."""


UPSTREAM_KEY = "upstream"
"""Set in ``ROUTE_NAMESPACE`` by the processor to the name of the upstream a request's model routes to (several
upstreams configured): the route on that value sends it to that upstream's cluster (:func:`upstream_cluster`)."""


NATIVE_SUFFIX = ":native"
"""Added to the upstream's name in ``UPSTREAM_KEY`` for a Responses request the backend answers natively (no
upstream name holds a colon)."""


ROUTE_HEADER = "x-responses-bridge-upstream"
"""The same choice on the sidecar's own calls (``--upstream-via``), which go to the internal listener: only there
does this header pick a cluster. The client-facing listener strips it; with several upstreams it has no route on
it, so a client that sends it reaches no upstream unprocessed. With one upstream it marks the sidecar's own model
list and embeddings calls (:data:`OWN_CALL_VALUE`), which go to the upstream as a client's went before: a client
that sends it gets the upstream's own list or embeddings, nothing the processor would have translated."""

OWN_CALL_VALUE = "default"
"""``ROUTE_HEADER`` on the sidecar's own calls with one upstream: that upstream's name (upstreams.SINGLE_UPSTREAM)."""


INTERNAL_LISTENER = "responses_bridge_internal"
"""The listener for the sidecar's own upstream calls (several upstreams): on loopback, port ``listen_port + 1``
unless given (``--internal-port``); the sidecar's ``--upstream-via`` points at it."""


UPSTREAM_CLUSTER = "llm_upstream"


EXTPROC_CLUSTER = "responses_bridge_extproc"


HTTP_CLUSTER = "responses_bridge_http"


FILES_CLUSTER = "responses_bridge_files"
"""The same HTTP door, for the Files API only, with small connection buffers (``FILES_BUFFER_BYTES``)."""


VIA_DOOR = "1.1 responses-bridge"
"""``Via`` on every request Envoy's routes send to the sidecar's HTTP door: a header no browser may set (a forbidden
header name of the Fetch standard), by which the door without keys (``auth: none``) tells what Envoy forwarded,
whose ``Host`` named Envoy's listener, from a page's own request (adapters/http/hosts.py: DNS rebinding)."""


FILES_BUFFER_BYTES = 1024 * 1024


MAX_DOWNSTREAM_CONNECTIONS = 50_000
REQUESTS_PER_WORKER = 10_000
"""The streams one process of the sidecar is sized to hold (docs/operations.md, Sizing): the default of every
cluster's circuit breakers is this per worker of ``serve --workers`` (``envoy_max_requests``)."""


BUFFER_LIMIT_BYTES = 64 * 1024 * 1024 + 1024 * 1024  # the bridge's 64 MiB request limit, plus headroom


CA_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Alpine (ca-certificates)
    "/etc/pki/tls/certs/ca-bundle.crt",  # RHEL, Fedora, Amazon Linux
    "/etc/ssl/ca-bundle.pem",  # openSUSE
    "/etc/ssl/cert.pem",  # macOS, Alpine
)


_EXT_PROC = "envoy.filters.http.ext_proc"


_TYPE = "type.googleapis.com/"


class UpstreamURL:
    """The parts of the upstream base URL Envoy needs: where to connect, whether TLS, and the base path."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"upstream must be an http:// or https:// URL with a host, got {url!r}")
        self.url = url
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.tls else 80)
        self.port_written = parts.port is not None
        self.base_path = parts.path.rstrip("/")  # "/v1", or "" for an upstream served at the root
        try:
            ipaddress.ip_address(self.host)
            self.is_ip = True
        except ValueError:
            self.is_ip = False

    @property
    def authority(self) -> str:
        """``host[:port]`` for the Host header: the port as the URL writes it (a default one only when written, as
        the Kubernetes overlays derive it from the URL's text: tools/docs/upstream_replacements.py)."""
        default = 443 if self.tls else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default and not self.port_written else f"{host}:{self.port}"


def upstream_path_prefix(upstream: str) -> str:
    """The path the upstream's API lives under, e.g. ``/v1`` for ``http://vllm:8000/v1``."""
    return urlsplit(upstream.strip()).path.rstrip("/")


CREDENTIALS_NAMESPACE = "responses_bridge"


TENANT_METADATA_KEY = "tenant"
"""The key the tenant header (``auth: header``) is forwarded under in ``CREDENTIALS_NAMESPACE``."""


JWT_PROVIDER = "tenant_jwt"


OBSERVED_HEADERS = ("x-request-id", "traceparent", "tracestate", "b3", "x-b3-traceid", "x-b3-spanid",
                    "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags")
"""Forwarded to the processor the same way, so its log lines carry Envoy's request id (which Envoy sets before
any filter runs) and its spans join the request's trace (observability/tracing.py)."""

IDEMPOTENCY_KEY_HEADER = "idempotency-key"
"""``Idempotency-Key`` of ``POST /v1/responses``: the processor hands such a request to the HTTP door, which keeps the
keys (services/responses/idempotency.py)."""

CLIENT_CONTEXT_HEADERS = ("openresponses-version", IDEMPOTENCY_KEY_HEADER)
"""Forwarded to the processor the same way: request headers that say how the client reads the answer (an Open
Responses client's version header gives it the spec's event names: engine/event_frames.py), or who must answer it
(an ``Idempotency-Key``: the HTTP door)."""


UPSTREAM_HEADERS_NAMESPACE = "responses_bridge.upstream"


UPSTREAM_METADATA_HEADERS = ("authorization", "traceparent", "tracestate")
"""The headers of Envoy's translated upstream call that the processor decides: the dynamic metadata namespace
the processor leaves them in (each under its header's name), and which. ``authorization``: the configured
upstream key (``RESPONSES_BRIDGE_API_KEY``); ``traceparent``/``tracestate``: the processor's span of that call,
when the sidecar traces."""


_BUFFER = "envoy.filters.http.buffer"


UNSUPPORTED_ENCODING_STATUS = 415


def upstream_cluster(name: str) -> str:
    """The Envoy cluster of a configured upstream (config/upstreams.py): its stats are ``cluster.upstream_<name>.*``."""
    return f"upstream_{name}"


def _socket(address: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": address, "port_value": port}}


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


DOOR_HEADER = ("x-responses-bridge-door", "http")
"""Envoy Gateway's route to the door (envoy_gateway.py): a Responses request carrying this header goes to the
sidecar's HTTP door, which runs the tool loop (MCP, web search, code interpreter, context management): the
bootstrap's processor sends such requests there itself, through a route on dynamic metadata that HTTPRoute cannot
express. Gateway API's precedence (more header matches win) puts this route ahead of the processor's."""


DESTINATION_ENDPOINT_HEADER = "x-gateway-destination-endpoint"
"""The replica the sidecar picked for an upstream with several (replicas/), ``ip:port``: set by the processor on the
requests it sends upstream and by the HTTP door on its own calls through Envoy (``upstream_via``); the upstream's
cluster sends the request there (clusters.py, ``override_host``). The Gateway API Inference Extension's endpoint
picker names its choice with the same header."""


REPLICA_ANSWERED_HEADER = "x-responses-bridge-replica"
"""On the answers to the HTTP door's own calls through Envoy (``upstream_via``) to an upstream with several replicas:
the replica that answered (Envoy's ``%UPSTREAM_HOST%``, ``ip:port``), which differs from the one the door named
first when Envoy's retry moved a call that reached no replica (replica_cluster.py). Only those routes add it: the
internal listener's, and with one upstream the route of the door's own chat calls (they name the upstream in
``ROUTE_HEADER``), so a client's answers never carry it unless it sends that header as the sidecar does."""
