"""The Envoy bootstrap that puts the bridge in front of a Chat Completions upstream.

``render_bootstrap`` builds the whole Envoy v3 bootstrap from Python dicts and writes it as YAML. What it sets up,
and why:

* ``POST /v1/responses`` and ``POST /responses`` (exact paths) go to the **upstream LLM cluster** with the
  ext_proc filter on: the processor rewrites the request into a Chat Completions call (path, body, auth) and the
  answer back into a Response or a Responses event stream. Envoy makes the upstream call and streams it.
* ``GET /v1/models[/...]`` and ``POST /v1/chat/completions`` go straight to the upstream (ext_proc off), with
  the ``/v1`` prefix rewritten to the upstream's base path.
* A ``POST /v1/responses`` with server-side tools the deployment runs (``mcp``, ``web_search``, server
  ``tool_search``) is marked by the processor (dynamic metadata ``responses_bridge.route: {to: sidecar}``, route
  cache cleared) and goes, unchanged, to the **sidecar's HTTP door**, which runs the tool loop and makes every
  model turn through this listener (``--upstream-via``). A buffer filter holds the request's headers until the
  processor has read the body, so the router picks the route only then.
* ``/v1/files`` (the Files API) goes to the sidecar's HTTP door with ext_proc off and no route buffer, through a
  cluster of its own with 1 MiB connection buffers, so uploads stream through Envoy to the door's disk writer
  and Envoy holds about a MiB of each, not tens.
* Everything else (``/v1/responses/{id}``, ``/health``, WebSocket upgrades, ...) goes to the **sidecar's HTTP
  door**, ext_proc off.
* ``failure_mode_allow: false``: when the processor is unreachable the client gets a 503, never the
  untranslated request sent upstream. ``local_reply_config`` turns every reply Envoy makes itself (no healthy
  upstream, processor down, timeouts, 413) into an OpenAI-shaped ``{"error": {...}}`` JSON body; the
  processor's own immediate responses (already OpenAI-shaped) are recognised by their response code details
  and left alone.
* Buffers and timeouts sized for LLM traffic: bodies of tens of MB, streams that last minutes.

The ``responses-bridge envoy-config`` command prints it.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .config import DEFAULT_EXTPROC_PORT, DEFAULT_HTTP_PORT

if TYPE_CHECKING:
    from .upstreams import UpstreamSpec

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

UPSTREAM_KEY = "upstream"
"""Set in ``ROUTE_NAMESPACE`` by the processor to the name of the upstream a request's model routes to (several
upstreams configured): the route on that value sends it to that upstream's cluster (:func:`upstream_cluster`)."""
NATIVE_SUFFIX = ":native"
"""Added to the upstream's name in ``UPSTREAM_KEY`` for a Responses request the backend answers natively (no
upstream name holds a colon)."""
ROUTE_HEADER = "x-responses-bridge-upstream"
"""The same choice on the sidecar's own calls (``--upstream-via``), which go to the internal listener: only there
does this header pick a cluster. The client-facing listener has no route on it and strips it, so a client that
sends it reaches no upstream unprocessed."""
INTERNAL_LISTENER = "responses_bridge_internal"
"""The listener for the sidecar's own upstream calls (several upstreams): on loopback, port ``listen_port + 1``
unless given (``--internal-port``); the sidecar's ``--upstream-via`` points at it."""

UPSTREAM_CLUSTER = "llm_upstream"
EXTPROC_CLUSTER = "responses_bridge_extproc"
HTTP_CLUSTER = "responses_bridge_http"
FILES_CLUSTER = "responses_bridge_files"
"""The same HTTP door, for the Files API only, with small connection buffers (``FILES_BUFFER_BYTES``)."""
FILES_BUFFER_BYTES = 1024 * 1024

MAX_DOWNSTREAM_CONNECTIONS = 50_000
BUFFER_LIMIT_BYTES = 64 * 1024 * 1024 + 1024 * 1024  # the bridge's 64 MiB request limit, plus headroom
CA_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Alpine (ca-certificates)
    "/etc/pki/tls/certs/ca-bundle.crt",  # RHEL, Fedora, Amazon Linux
    "/etc/ssl/ca-bundle.pem",  # openSUSE
    "/etc/ssl/cert.pem",  # macOS, Alpine
)

_EXT_PROC = "envoy.filters.http.ext_proc"
_TYPE = "type.googleapis.com/"


# ------------------------------------------------------------------------------------------------- upstream URL


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
        self.base_path = parts.path.rstrip("/")  # "/v1", or "" for an upstream served at the root
        try:
            ipaddress.ip_address(self.host)
            self.is_ip = True
        except ValueError:
            self.is_ip = False

    @property
    def authority(self) -> str:
        default = 443 if self.tls else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


def upstream_path_prefix(upstream: str) -> str:
    """The path the upstream's API lives under, e.g. ``/v1`` for ``http://vllm:8000/v1``."""
    return urlsplit(upstream.strip()).path.rstrip("/")


# -------------------------------------------------------------------------------------------------- bootstrap


def render_bootstrap(*, listen_port: int, extproc_port: int, http_port: int, upstream: str,
                     admin_port: int = 9901, listen_address: str = "127.0.0.1",
                     extproc_address: str = "127.0.0.1", sidecar_address: str = "127.0.0.1",
                     ca_file: str | None = None, upstreams: Sequence[UpstreamSpec] = (),
                     internal_port: int | None = None, auth: Auth | None = None) -> str:
    """A complete Envoy v3 bootstrap, as YAML. ``ca_file`` (https upstreams only) defaults to the system CA
    bundle. ``upstreams``: several upstreams routed per model (one cluster each); empty: ``upstream`` alone.
    ``internal_port``: the internal listener's (several upstreams only), by default ``listen_port + 1``.
    ``auth``: the sidecar's ``RESPONSES_BRIDGE_AUTH`` (and a jwt_authn example), default none."""
    return to_yaml(bootstrap_dict(
        listen_port=listen_port, extproc_port=extproc_port, http_port=http_port, upstream=upstream,
        admin_port=admin_port, listen_address=listen_address, extproc_address=extproc_address,
        sidecar_address=sidecar_address, ca_file=ca_file, upstreams=upstreams, internal_port=internal_port,
        auth=auth,
    ), header=_header(", ".join(f"{spec.name}={spec.url}" for spec in upstreams) or upstream,
                      internal_listener_port(listen_port, internal_port) if upstreams else None))


def internal_listener_port(listen_port: int, given: int | None = None) -> int:
    """The internal listener's port: ``given``, else the one after the client-facing listener's."""
    return given if given is not None else listen_port + 1


def _header(upstream: str, internal: int | None = None) -> str:
    text = ("# Envoy bootstrap for responses-bridge, rendered by `responses-bridge envoy-config`.\n"
            f"# Upstream: {upstream}\n"
            "# /v1/responses -> upstream via the ext_proc processor (with server-side tools: the sidecar's door);\n"
            "# /v1/models, /v1/chat/completions -> upstream;\n"
            "# everything else -> the sidecar's HTTP door.\n")
    if internal is not None:
        text += (f"# The sidecar's own upstream calls: --upstream-via http://127.0.0.1:{internal}/v1 (the internal\n"
                 "# listener, on loopback).\n")
    return text


def bootstrap_dict(*, listen_port: int, extproc_port: int, http_port: int, upstream: str, admin_port: int = 9901,
                   listen_address: str = "127.0.0.1", extproc_address: str = "127.0.0.1",
                   sidecar_address: str = "127.0.0.1", ca_file: str | None = None,
                   upstreams: Sequence[UpstreamSpec] = (), internal_port: int | None = None,
                   auth: Auth | None = None) -> dict[str, Any]:
    up = UpstreamURL(upstreams[0].url if upstreams else upstream)
    auth = auth or Auth()
    if upstreams:
        upstream_clusters = [_upstream_cluster(UpstreamURL(spec.url), ca_file, upstream_cluster(spec.name))
                             for spec in upstreams]
    else:
        upstream_clusters = [_upstream_cluster(up, ca_file)]
    return {
        "node": {"id": "responses-bridge", "cluster": "responses-bridge"},
        "admin": {"address": _socket(_loopback_like(listen_address), admin_port)},
        "overload_manager": {"resource_monitors": [{
            "name": "envoy.resource_monitors.global_downstream_max_connections",
            "typed_config": {
                "@type": _TYPE + "envoy.extensions.resource_monitors.downstream_connections.v3."
                                 "DownstreamConnectionsConfig",
                "max_active_downstream_connections": MAX_DOWNSTREAM_CONNECTIONS,
            },
        }]},
        "static_resources": {
            "listeners": [
                _listener(listen_address, listen_port, up, (sidecar_address, http_port), upstreams, auth),
                *([_internal_listener(_loopback_like(listen_address), internal_listener_port(
                    listen_port, internal_port), upstreams)] if upstreams else []),
            ],
            "clusters": [
                *upstream_clusters,
                _extproc_cluster(extproc_address, extproc_port),
                _http_cluster(sidecar_address, http_port),
                _files_cluster(sidecar_address, http_port),
            ],
        },
    }


def _loopback_like(listen_address: str) -> str:
    """The admin interface stays on loopback, of the same IP family as the listener."""
    try:
        return "::1" if ipaddress.ip_address(listen_address).version == 6 else "127.0.0.1"
    except ValueError:
        return "127.0.0.1"


def _socket(address: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": address, "port_value": port}}


def _listener(address: str, port: int, up: UpstreamURL, sidecar: tuple[str, int],
              upstreams: Sequence[UpstreamSpec] = (), auth: Auth | None = None) -> dict[str, Any]:
    auth = auth or Auth()
    return {
        "name": "responses_bridge",
        "address": _socket(address, port),
        "per_connection_buffer_limit_bytes": BUFFER_LIMIT_BYTES,
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": _TYPE + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "responses_bridge",
                "codec_type": "AUTO",
                "stream_idle_timeout": "300s",  # the longest silence allowed mid-stream
                "request_timeout": "0s",  # no ceiling on a whole request: LLM streams may last minutes
                # the whole request head (URL and headers); over it, a 431. The sidecar reads longer lines
                # (adapters/http/protocol_errors.py), so it never refuses a head that Envoy forwarded.
                "max_request_headers_kb": 60,
                "normalize_path": True,
                "merge_slashes": True,
                "route_config": _route_config(up, upstreams, auth),
                "http_filters": [*_identity_filters(auth), _client_credentials_filter(auth),
                                 _route_offered_filter(), _ext_proc_filter(),
                                 _hold_for_route_filter(), {
                    "name": "envoy.filters.http.router",
                    "typed_config": {"@type": _TYPE + "envoy.extensions.filters.http.router.v3.Router"},
                }],
                "local_reply_config": _local_reply_config(sidecar),
            },
        }]}],
    }


def _internal_listener(address: str, port: int, upstreams: Sequence[UpstreamSpec]) -> dict[str, Any]:
    """The sidecar's own upstream calls (``--upstream-via``; several upstreams): ``ROUTE_HEADER`` names the
    upstream, and the call goes straight to its cluster (no processor: the sidecar made the body itself). A
    listener of its own, on loopback, because a route on that header in the client-facing listener would let any
    client pick an upstream cluster and skip the processor; there, the header picks nothing and is stripped."""
    routes: list[dict[str, Any]] = []
    for spec in upstreams:
        up = UpstreamURL(spec.url)
        routes.append({"name": f"{spec.name}_via_sidecar", "match": {"prefix": "/v1/", "headers": [
            {"name": ROUTE_HEADER, "string_match": {"exact": spec.name}}]},
            "route": {"cluster": upstream_cluster(spec.name), "timeout": "0s", **_host_rewrite(up),
                      "prefix_rewrite": f"{up.base_path}/"}})
    routes.append({"name": "no_upstream_named", "match": {"prefix": "/"}, "direct_response": {
        "status": 404, "body": {"inline_string": '{"error": {"message": "No upstream is named by the '
                                f'{ROUTE_HEADER} header.", "type": "invalid_request_error", "param": null, '
                                '"code": "upstream_not_found"}}'}},
                   "response_headers_to_add": [{"header": {"key": "content-type", "value": "application/json"},
                                                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]})
    return {
        "name": INTERNAL_LISTENER,
        "address": _socket(address, port),
        "per_connection_buffer_limit_bytes": BUFFER_LIMIT_BYTES,
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": _TYPE + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": INTERNAL_LISTENER,
                "codec_type": "AUTO",
                "stream_idle_timeout": "300s",
                "request_timeout": "0s",
                "route_config": {"name": INTERNAL_LISTENER, "request_headers_to_remove": [ROUTE_HEADER],
                                 "virtual_hosts": [{"name": "sidecar", "domains": ["*"], "routes": routes}]},
                "http_filters": [{
                    "name": "envoy.filters.http.router",
                    "typed_config": {"@type": _TYPE + "envoy.extensions.filters.http.router.v3.Router"},
                }],
            },
        }]}],
    }


CREDENTIALS_NAMESPACE = "responses_bridge"
TENANT_METADATA_KEY = "tenant"
"""The key the tenant header (``auth: header``) is forwarded under in ``CREDENTIALS_NAMESPACE``."""
JWT_PROVIDER = "tenant_jwt"


@dataclass(frozen=True)
class JwtExample:
    """A ``jwt_authn`` provider whose verified token names the tenant: the claim ``tenant_claim`` becomes the
    tenant header (``claim_to_headers``). The keys: a JWKS file Envoy reads (``jwks_file``) or the JWKS inline."""

    issuer: str
    tenant_claim: str = "tenant"
    jwks_file: str | None = None
    jwks: str | None = None
    audiences: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if (self.jwks_file is None) == (self.jwks is None):
            raise ValueError("a jwt_authn provider needs its keys: --jwt-jwks-file or --jwt-jwks (one of them)")


@dataclass(frozen=True)
class Auth:
    """How the sidecar identifies callers (``RESPONSES_BRIDGE_AUTH``), which the bootstrap must match:

    * ``keys``: no client Authorization reaches an upstream (Envoy's translated calls drop it and take the key the
      processor leaves in metadata; the passthrough routes send their request headers to the processor, which
      checks the caller's bridge key and swaps it for the upstream key).
    * ``header``: a client's own tenant header is removed before any other filter, then ``jwt`` (when given) sets
      it from a verified token; ext_authz or any filter of the operator's, put after the removal, may set it
      instead. The processor gets it in metadata; the sidecar's HTTP door gets it as a header."""

    mode: str = "none"
    tenant_header: str = "x-tenant-id"
    jwt: JwtExample | None = None

    def __post_init__(self) -> None:
        if self.jwt is not None and self.mode != "header":
            raise ValueError("a jwt_authn example sets the tenant header: it needs auth: header "
                             "(RESPONSES_BRIDGE_AUTH=header, as the sidecar runs with)")


def _identity_filters(auth: Auth) -> list[dict[str, Any]]:
    """First in the chain with ``auth: header``: the client's own tenant header is removed, so only a filter after
    this one (the jwt_authn example, ext_authz) can set it; every route then carries the trusted value only."""
    if auth.mode != "header":
        return []
    filters: list[dict[str, Any]] = [{
        "name": "envoy.filters.http.header_mutation",
        "typed_config": {
            "@type": _TYPE + "envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
            "mutations": {"request_mutations": [{"remove": auth.tenant_header}]},
        },
    }]
    if auth.jwt is not None:
        filters.append(_jwt_filter(auth.jwt, auth.tenant_header))
    return filters


def _jwt_filter(jwt: JwtExample, tenant_header: str) -> dict[str, Any]:
    """The jwt_authn example: a valid token's ``tenant_claim`` becomes the tenant header. A request without a valid
    token goes on without one (``allow_missing_or_failed``), and every route that keeps tenant state answers it with
    401 ``missing_tenant``; this also lets the sidecar's own model calls (``upstream_via``) through the passthrough
    route. Require a token on more routes with rules of your own."""
    keys = {"filename": jwt.jwks_file} if jwt.jwks_file is not None else {"inline_string": jwt.jwks}
    provider: dict[str, Any] = {
        "issuer": jwt.issuer,
        **({"audiences": list(jwt.audiences)} if jwt.audiences else {}),
        "local_jwks": keys,
        "forward": False,  # the token stops at Envoy: neither the sidecar nor the upstream gets it
        "claim_to_headers": [{"header_name": tenant_header, "claim_name": jwt.tenant_claim}],
    }
    return {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": _TYPE + "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {JWT_PROVIDER: provider},
            "rules": [{"match": {"prefix": "/"}, "requires": {"requires_any": {"requirements": [
                {"provider_name": JWT_PROVIDER}, {"allow_missing_or_failed": {}}]}}}],
        },
    }


def _client_credentials_filter(auth: Auth | None = None) -> dict[str, Any]:
    """The client's Authorization, copied into dynamic metadata that Envoy forwards to the processor with the
    request body: the one request the processor answers itself (a background run, which the sidecar then sends
    upstream on its own) still carries the client's credentials, without a round trip for the headers; with
    ``auth: keys`` the processor finds the caller's tenant from it. With ``auth: header`` the tenant header goes
    the same way (``TENANT_METADATA_KEY``), read after :func:`_identity_filters` removed a client's own."""
    tenant_rules = [] if auth is None or auth.mode != "header" else [{
        "header": auth.tenant_header, "remove": False,
        "on_header_present": {"metadata_namespace": CREDENTIALS_NAMESPACE, "key": TENANT_METADATA_KEY,
                              "type": "STRING"}}]
    return {
        "name": "envoy.filters.http.header_to_metadata",
        "typed_config": {
            "@type": _TYPE + "envoy.extensions.filters.http.header_to_metadata.v3.Config",
            "request_rules": [{
                "header": "authorization",
                "on_header_present": {"metadata_namespace": CREDENTIALS_NAMESPACE, "key": "authorization",
                                      "type": "STRING"},
                "remove": False,
            }, *tenant_rules, *_request_context_rules()],
        },
    }


OBSERVED_HEADERS = ("x-request-id", "traceparent", "tracestate", "b3", "x-b3-traceid", "x-b3-spanid",
                    "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags")
"""Forwarded to the processor the same way, so its log lines carry Envoy's request id (which Envoy sets before
any filter runs) and its spans join the request's trace (observability/tracing.py)."""


def _request_context_rules() -> list[dict[str, Any]]:
    return [{"header": header, "remove": False,
             "on_header_present": {"metadata_namespace": CREDENTIALS_NAMESPACE, "key": header, "type": "STRING"}}
            for header in OBSERVED_HEADERS]


UPSTREAM_HEADERS_NAMESPACE = "responses_bridge.upstream"
UPSTREAM_METADATA_HEADERS = ("authorization", "traceparent", "tracestate")
"""The headers of Envoy's translated upstream call that the processor decides: the dynamic metadata namespace
the processor leaves them in (each under its header's name), and which. ``authorization``: the configured
upstream key (``RESPONSES_BRIDGE_API_KEY``); ``traceparent``/``tracestate``: the processor's span of that call,
when the sidecar traces."""


def _upstream_headers_from_processor() -> list[dict[str, Any]]:
    """The processor's headers, in place of the client's, on Envoy's translated call.

    The processor skips the request headers (one round trip less per request), and Envoy applies no header
    mutation from the body phase then: the processor leaves the headers in dynamic metadata instead, and the route
    sets them when the router builds the upstream request, after the processor has read the body (the route
    buffer holds the headers until then). A header the processor does not set has an empty value, and Envoy adds
    nothing (``keep_empty_value`` false): without a configured key the client's own ``Authorization`` goes
    through, and the client's trace context when the sidecar does not trace. Envoy's own tracer, when on, sets
    the trace headers after these (its span is the upstream call's parent then)."""
    return [{"header": {"key": name, "value": f"%DYNAMIC_METADATA({UPSTREAM_HEADERS_NAMESPACE}:{name})%"},
             "append_action": "OVERWRITE_IF_EXISTS_OR_ADD", "keep_empty_value": False}
            for name in UPSTREAM_METADATA_HEADERS]


def _route_offered_filter() -> dict[str, Any]:
    """Tells the processor, with each request body, that this bootstrap routes marked requests to the HTTP door."""
    return {
        "name": "envoy.filters.http.set_metadata",
        "typed_config": {
            "@type": _TYPE + "envoy.extensions.filters.http.set_metadata.v3.Config",
            "metadata": [{"metadata_namespace": ROUTE_NAMESPACE, "value": {ROUTE_OFFERED_KEY: True}}],
        },
    }


def _ext_proc_filter() -> dict[str, Any]:
    return {
        "name": _EXT_PROC,
        # Off unless a route turns it on (the Responses routes): a reply Envoy makes before routing (headers over
        # its limits, a path it cannot normalise) must not wait on the processor, or the connection closes first.
        "disabled": True,
        "typed_config": {
            "@type": _TYPE + "envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
            "grpc_service": {"envoy_grpc": {"cluster_name": EXTPROC_CLUSTER}},
            # Never send an untranslated /v1/responses request upstream: a dead processor is a 503.
            "failure_mode_allow": False,
            "status_on_error": {"code": 503},
            "processing_mode": {
                # The processor needs no request headers (the route says it is a POST /v1/responses; the
                # client's Authorization passes unless the bridge holds the upstream key, which the route then
                # sets from the processor's metadata): skipping them saves one processor round trip per request.
                "request_header_mode": "SKIP",
                "request_body_mode": "BUFFERED",
                "request_trailer_mode": "SKIP",
                "response_header_mode": "SEND",
                # Envoy sends the response body along with the headers, without waiting for the processor's reply
                # to them (no round trip for the headers), and the processor answers when it has bytes: per batch
                # of whole events for SSE, headers and body together at the end for JSON, and on its own when it
                # must end a stream (a failure, a shutdown). The mode requires trailers to be sent; a chunked
                # SSE or JSON upstream has none, so this costs nothing.
                "response_body_mode": "FULL_DUPLEX_STREAMED",
                "response_trailer_mode": "SEND",
            },
            "metadata_options": {"forwarding_namespaces": {"untyped": [CREDENTIALS_NAMESPACE, ROUTE_NAMESPACE]},
                                 "receiving_namespaces": {"untyped": [ROUTE_NAMESPACE, UPSTREAM_HEADERS_NAMESPACE]}},
            # The route is picked again only when the processor asks (clear_route_cache: a request with
            # server-side tools goes to the sidecar's HTTP door); the :path rewrite never re-routes a request.
            "route_cache_action": "DEFAULT",
            "message_timeout": "30s",
            "max_message_timeout": "300s",
        },
    }


_BUFFER = "envoy.filters.http.buffer"


def _hold_for_route_filter() -> dict[str, Any]:
    """Holds a Responses request's headers until its body has passed the processor, so that the router picks the
    upstream only then: the processor may mark the request for the sidecar's HTTP door (server-side tools) and
    ask for the route again. Without it the processor skips the request headers, they reach the router at once,
    and the route is fixed before the body is read. The body is already held whole by the processor (BUFFERED),
    so this adds no copy and no wait of its own; only the upstream connection is chosen a little later."""
    return {
        "name": _BUFFER,
        "disabled": True,  # on only where the processor runs (the Responses routes), as the processor itself
        "typed_config": {"@type": _TYPE + "envoy.extensions.filters.http.buffer.v3.Buffer",
                         "max_request_bytes": BUFFER_LIMIT_BYTES},
    }


def _disabled() -> dict[str, Any]:
    return {_EXT_PROC: {"@type": _TYPE + "envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute",
                        "disabled": True}}


def _enabled() -> dict[str, Any]:
    # FilterConfig turns on a filter that is off by default; it must carry a per-route config: no overrides
    return {_EXT_PROC: {"@type": _TYPE + "envoy.config.route.v3.FilterConfig", "disabled": False, "config": {
        "@type": _TYPE + "envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute", "overrides": {}}},
            _BUFFER: {"@type": _TYPE + "envoy.config.route.v3.FilterConfig", "disabled": False, "config": {
                "@type": _TYPE + "envoy.extensions.filters.http.buffer.v3.BufferPerRoute",
                "buffer": {"max_request_bytes": BUFFER_LIMIT_BYTES}}}}


UNSUPPORTED_ENCODING_STATUS = 415


def _encoded_body_routes() -> list[dict[str, Any]]:
    """A Responses create with a compressed body is refused before the processor, as the HTTP door refuses it:
    the processor reads bodies as JSON, and Envoy would forward the ``Content-Encoding`` with the rewritten body."""
    encoded = [{"name": ":method", "string_match": {"exact": "POST"}},
               {"name": "content-encoding", "present_match": True},
               {"name": "content-encoding", "string_match": {"exact": "identity", "ignore_case": True},
                "invert_match": True}]
    return [{"name": f"{name}_encoded", "match": {"path": path, "headers": encoded},
             "direct_response": {"status": UNSUPPORTED_ENCODING_STATUS}, "typed_per_filter_config": _disabled()}
            for name, path in (("responses", "/v1/responses"), ("responses_unversioned", "/responses"))]


def _route_config(up: UpstreamURL, upstreams: Sequence[UpstreamSpec] = (), auth: Auth | None = None) -> dict[str, Any]:
    auth = auth or Auth()
    keys = auth.mode == "keys"
    post = [{"name": ":method", "string_match": {"exact": "POST"}}]
    get = [{"name": ":method", "string_match": {"exact": "GET"}}]
    cluster = upstream_cluster(upstreams[0].name) if upstreams else UPSTREAM_CLUSTER
    upstream_action = {"cluster": cluster, "timeout": "0s", **_host_rewrite(up)}
    routes: list[dict[str, Any]] = [*_encoded_body_routes()]
    if upstreams:
        routes += _per_upstream_routes(upstreams, keys)
    # A request the processor marked (server-side tools: the tool loop) goes, unchanged, to the sidecar's HTTP
    # door, which makes every model turn through this listener (``--upstream-via``). The processor has read its
    # body already; it passes the door's answer through untouched (the filter stays on the response path).
    marked = [{"filter": ROUTE_NAMESPACE, "path": [{"key": ROUTE_KEY}],
               "value": {"string_match": {"exact": ROUTE_TO_SIDECAR}}}]
    routes += [
        {"name": f"sidecar_{name}", "match": {"path": path, "headers": post, "dynamic_metadata": marked},
         "route": {"cluster": HTTP_CLUSTER, "timeout": "0s"},
         "typed_per_filter_config": _disabled(), "request_body_buffer_limit": BUFFER_LIMIT_BYTES}
        for name, path in (("tools", "/v1/responses"), ("tools_unversioned", "/responses"))
    ]
    routes += [
        # The processor rewrites the body; the route rewrites the path (the processor sets the same :path), so
        # even a request the processor never saw a body for (a POST without one) cannot reach the upstream's own
        # /v1/responses: the processor answers it with the error for an empty request.
        {"name": name, "match": {"path": path, "headers": post},
         "route": {**upstream_action, "prefix_rewrite": f"{up.base_path}/chat/completions"},
         **_upstream_headers(keys),
         "typed_per_filter_config": _enabled(), "request_body_buffer_limit": BUFFER_LIMIT_BYTES}
        for name, path in (("responses", "/v1/responses"), ("responses_unversioned", "/responses"))
    ]
    routes += _files_routes()
    routes += _vector_store_routes()
    if upstreams:  # the sidecar's HTTP door merges the models of every upstream (the catch-all below)
        routes += [
            {"name": f"chat_completions{suffix}", "match": {"path": path, "headers": post},
             "route": {**upstream_action, "prefix_rewrite": f"{up.base_path}/chat/completions"},
             "typed_per_filter_config": _routing_only(), "request_body_buffer_limit": BUFFER_LIMIT_BYTES}
            for suffix, path in (("", "/v1/chat/completions"), ("_unversioned", "/chat/completions"))
        ]
    else:
        routes += [
            {"name": "models", "match": {"path_separated_prefix": "/v1/models", "headers": get},
             "route": {**upstream_action, "prefix_rewrite": f"{up.base_path}/models"},
             "typed_per_filter_config": _headers_only() if keys else _disabled()},
            {"name": "chat_completions", "match": {"path": "/v1/chat/completions", "headers": post},
             "route": {**upstream_action, "prefix_rewrite": f"{up.base_path}/chat/completions"},
             "typed_per_filter_config": _headers_only() if keys else _disabled(),
             "request_body_buffer_limit": BUFFER_LIMIT_BYTES},
        ]
    routes += [
        {"name": "sidecar", "match": {"prefix": "/"},
         "route": {"cluster": HTTP_CLUSTER, "timeout": "0s", "upgrade_configs": [{"upgrade_type": "websocket"}]},
         "typed_per_filter_config": _disabled(), "request_body_buffer_limit": BUFFER_LIMIT_BYTES},
    ]
    config = {"name": "responses_bridge", "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]}
    if upstreams:  # the sidecar's routing header means nothing here (_internal_listener): it goes nowhere
        config["request_headers_to_remove"] = [ROUTE_HEADER]
    return config


def upstream_cluster(name: str) -> str:
    """The Envoy cluster of a configured upstream (upstreams.py): its stats are ``cluster.upstream_<name>.*``."""
    return f"upstream_{name}"


def _upstream_headers(keys: bool) -> dict[str, Any]:
    """A translated (or native) Responses call's headers: the processor's (:func:`_upstream_headers_from_processor`),
    and with ``auth: keys`` never the client's Authorization (its bridge key): the route removes it before adding
    the processor's (Envoy removes a route's headers before it adds them)."""
    return {"request_headers_to_add": _upstream_headers_from_processor(),
            **({"request_headers_to_remove": ["authorization"]} if keys else {})}


def _headers_only() -> dict[str, Any]:
    """A passthrough route with ``auth: keys``: the processor sees its request headers (only), checks the caller's
    bridge key (401 without a valid one) and replaces it with the upstream's key, or removes it."""
    return {_EXT_PROC: {"@type": _TYPE + "envoy.config.route.v3.FilterConfig", "disabled": False, "config": {
        "@type": _TYPE + "envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute", "overrides": {
            "processing_mode": {"request_header_mode": "SEND", "request_body_mode": "NONE",
                                "request_trailer_mode": "SKIP", "response_header_mode": "SKIP",
                                "response_body_mode": "NONE", "response_trailer_mode": "SKIP"}}}}}


def _per_upstream_routes(upstreams: Sequence[UpstreamSpec], keys: bool = False) -> list[dict[str, Any]]:
    """Several upstreams: for each, the routes that send a request to its cluster once its upstream is known.

    * The processor read a Responses request's model and set ``ROUTE_NAMESPACE.upstream`` (and cleared the route
      cache): the request goes to that upstream's cluster, translated (``chat/completions``) or, for a native
      upstream, to its own ``/responses``; the processor stays on for the answer.
    * The same for ``POST /v1/chat/completions``: the processor only chose the upstream; the body goes as it is.
    The sidecar's own calls (``--upstream-via``, naming their upstream in ``ROUTE_HEADER``) go to the internal
    listener (:func:`_internal_listener`), never to these routes."""
    post = [{"name": ":method", "string_match": {"exact": "POST"}}]
    routes: list[dict[str, Any]] = []
    for spec in upstreams:
        up = UpstreamURL(spec.url)
        action = {"cluster": upstream_cluster(spec.name), "timeout": "0s", **_host_rewrite(up)}
        chosen = _chosen(spec.name)
        # a translated Responses request goes to chat/completions, a native one to the backend's own /responses;
        # an "auto" upstream (probed when the sidecar starts) may be either, so it gets both routes
        targets = {"translate": [("", "chat/completions")], "native": [(NATIVE_SUFFIX, "responses")],
                   "auto": [("", "chat/completions"), (NATIVE_SUFFIX, "responses")]}[spec.mode]
        routes += [
            *({"name": f"{spec.name}{suffix.replace(':', '_')}_{name}",
               "match": {"path": path, "headers": post, "dynamic_metadata": _chosen(spec.name + suffix)},
               "route": {**action, "prefix_rewrite": f"{up.base_path}/{target}"},
               **_upstream_headers(keys),  # the upstream's key, if held
               "typed_per_filter_config": _enabled(), "request_body_buffer_limit": BUFFER_LIMIT_BYTES}
              for suffix, target in targets
              for name, path in (("responses", "/v1/responses"), ("responses_unversioned", "/responses"))),
            *({"name": f"{spec.name}_chat_completions{suffix}",
               "match": {"path": path, "headers": post, "dynamic_metadata": chosen},
               "route": {**action, "prefix_rewrite": f"{up.base_path}/chat/completions"},
               "typed_per_filter_config": _disabled(), "request_body_buffer_limit": BUFFER_LIMIT_BYTES}
              for suffix, path in (("", "/v1/chat/completions"), ("_unversioned", "/chat/completions"))),
        ]
    return routes


def _chosen(value: str) -> list[dict[str, Any]]:
    return [{"filter": ROUTE_NAMESPACE, "path": [{"key": UPSTREAM_KEY}], "value": {"string_match": {"exact": value}}}]


def _routing_only() -> dict[str, Any]:
    """``POST /v1/chat/completions`` with several upstreams: the processor sees the request's path and body, to pick
    the upstream from the model (the route then changes), and nothing of the answer."""
    return {_EXT_PROC: {"@type": _TYPE + "envoy.config.route.v3.FilterConfig", "disabled": False, "config": {
        "@type": _TYPE + "envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute", "overrides": {
            "processing_mode": {"request_header_mode": "SEND", "request_body_mode": "BUFFERED",
                                "request_trailer_mode": "SKIP", "response_header_mode": "SKIP",
                                "response_body_mode": "NONE", "response_trailer_mode": "SKIP"}}}},
            _BUFFER: {"@type": _TYPE + "envoy.config.route.v3.FilterConfig", "disabled": False, "config": {
                "@type": _TYPE + "envoy.extensions.filters.http.buffer.v3.BufferPerRoute",
                "buffer": {"max_request_bytes": BUFFER_LIMIT_BYTES}}}}


def _files_routes() -> list[dict[str, Any]]:
    """The Files API to the sidecar's HTTP door, ext_proc off and no body limit of the route's own: an upload of
    hundreds of MB streams through, held back by flow control (the connection's buffer limit), never buffered
    whole; the door enforces the file size limit (RESPONSES_BRIDGE_MAX_FILE_BYTES). Named ``sidecar_…`` so that
    Envoy's own 5xx on it name the door (``_local_reply_config``)."""
    return [{"name": f"sidecar_{name}", "match": {"path_separated_prefix": prefix},
             "route": {"cluster": FILES_CLUSTER, "timeout": "0s"}, "typed_per_filter_config": _disabled()}
            for name, prefix in (("files", "/v1/files"), ("files_unversioned", "/files"))]


def _vector_store_routes() -> list[dict[str, Any]]:
    """The Vector Stores API is the sidecar's own (its HTTP door, every method): never through the processor.
    Named ``sidecar_…`` so that Envoy's own 5xx on it name the door (``_local_reply_config``)."""
    return [{"name": f"sidecar_{name}", "match": {"path_separated_prefix": prefix},
             "route": {"cluster": HTTP_CLUSTER, "timeout": "0s"}, "typed_per_filter_config": _disabled(),
             "request_body_buffer_limit": BUFFER_LIMIT_BYTES}
            for name, prefix in (("vector_stores", "/v1/vector_stores"),
                                 ("vector_stores_unversioned", "/vector_stores"))]


def _host_rewrite(up: UpstreamURL) -> dict[str, Any]:
    # A hostname upstream (a provider, a Kubernetes service) expects its own name in Host / :authority.
    return {} if up.is_ip else {"host_rewrite_literal": up.authority}


def _local_reply_config(sidecar: tuple[str, int]) -> dict[str, Any]:
    """Envoy's own replies as OpenAI-shaped errors; the processor's immediate responses pass untouched. A 5xx on
    the route to the sidecar's HTTP door names that door (``sidecar``: address and port), not the model server: it
    is what a wrong ``--http-port`` looks like."""
    sidecar_host, sidecar_port = sidecar
    not_ours = {"extension_filter": {
        "name": "envoy.access_loggers.extension_filters.cel",
        "typed_config": {
            "@type": _TYPE + "envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
            "expression": f"!response.code_details.startsWith('{IMMEDIATE_RESPONSE_DETAILS}')",
        },
    }}
    processor_failed = {"extension_filter": {
        "name": "envoy.access_loggers.extension_filters.cel",
        "typed_config": {
            "@type": _TYPE + "envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
            "expression": "response.code_details.startsWith('ext_proc_error')",
        },
    }}

    def mapper(filters: list[dict[str, Any]], message: str, kind: str, code: str) -> dict[str, Any]:
        return {
            "filter": {"and_filter": {"filters": [not_ours, *filters]}},
            "body_format_override": {
                "json_format": {"error": {"message": message, "type": kind, "param": None, "code": code}},
                "content_type": "application/json",
            },
        }

    def status(op: str, value: int) -> dict[str, Any]:
        return {"status_code_filter": {"comparison": {
            "op": op, "value": {"default_value": value, "runtime_key": f"responses_bridge.local_reply.{op}{value}"},
        }}}

    late_reset = {"extension_filter": {
        "name": "envoy.access_loggers.extension_filters.cel",
        "typed_config": {
            "@type": _TYPE + "envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
            "expression": "response.code_details.startsWith('upstream_reset_after_response_started')",
        },
    }}
    sidecar_route = {"extension_filter": {
        "name": "envoy.access_loggers.extension_filters.cel",
        "typed_config": {
            "@type": _TYPE + "envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
            "expression": "xds.route_name.startsWith('sidecar')",
        },
    }}

    def details(prefix: str) -> dict[str, Any]:
        return {"extension_filter": {
            "name": "envoy.access_loggers.extension_filters.cel",
            "typed_config": {
                "@type": _TYPE + "envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
                "expression": f"response.code_details.startsWith('{prefix}')",
            },
        }}

    return {"mappers": [
        mapper([sidecar_route, status("GE", 500)],
               f"The responses-bridge sidecar's HTTP door at {_host_port(sidecar_host, sidecar_port)} did not answer "
               f"(%RESPONSE_CODE_DETAILS%): is `responses-bridge serve` running with --http-port {sidecar_port}?",
               "server_error", "sidecar_unavailable"),
        mapper([processor_failed, status("GE", 500)],
               "The Responses API processor is unavailable (%RESPONSE_CODE_DETAILS%).", "server_error",
               "processor_unavailable"),
        mapper([late_reset, status("GE", 500)],
               "The upstream model server dropped the connection before its answer was complete "
               "(%RESPONSE_CODE_DETAILS%).", "server_error", "upstream_disconnected"),
        mapper([status("GE", 500)], "%LOCAL_REPLY_BODY% (%RESPONSE_CODE_DETAILS%)", "server_error",
               "gateway_error"),
        mapper([status("EQ", 413)], "The request body is too large.", "invalid_request_error",
               "request_too_large"),
        # the same answers as the HTTP door's (adapters/http/errors.py, protocol_errors.py)
        mapper([status("EQ", UNSUPPORTED_ENCODING_STATUS)], "This Content-Encoding is not supported: send the "
               "request body uncompressed.", "invalid_request_error", "unsupported_content_encoding"),
        mapper([status("EQ", 431)], "The request line or headers are larger than this server accepts.",
               "invalid_request_error", "request_header_fields_too_large"),
        mapper([details("path_normalization_failed"), status("EQ", 400)], "The request path is not valid.",
               "invalid_request_error", "invalid_path"),
        mapper([details("http1."), status("EQ", 400)], "The request is not valid HTTP (%RESPONSE_CODE_DETAILS%).",
               "invalid_request_error", "invalid_http_request"),
        mapper([status("GE", 400)], "%LOCAL_REPLY_BODY% (%RESPONSE_CODE_DETAILS%)", "invalid_request_error",
               "invalid_request"),
    ]}


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _cluster_base(name: str, address: str, port: int, *, dns: bool) -> dict[str, Any]:
    return {
        "name": name,
        "type": "STRICT_DNS" if dns else "STATIC",
        **({"dns_lookup_family": "V4_PREFERRED", "respect_dns_ttl": True} if dns else {}),
        "connect_timeout": "5s",
        "per_connection_buffer_limit_bytes": BUFFER_LIMIT_BYTES,
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": _socket(address, port)}},
        ]}]},
    }


def _is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def _http_protocol_options(http2: bool = False) -> dict[str, Any]:
    explicit: dict[str, Any] = {"http2_protocol_options": {}} if http2 else {"http_protocol_options": {}}
    return {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": _TYPE + "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": explicit,
    }}


def _upstream_cluster(up: UpstreamURL, ca_file: str | None, name: str = UPSTREAM_CLUSTER) -> dict[str, Any]:
    cluster = _cluster_base(name, up.host, up.port, dns=not up.is_ip)
    cluster["typed_extension_protocol_options"] = _http_protocol_options()
    if up.tls:
        validation: dict[str, Any] = {"trusted_ca": {"filename": ca_file or _system_ca_bundle()}}
        # Envoy checks the chain against the CAs, and the name only when told to: the upstream's certificate must
        # name the host we connect to.
        validation["match_typed_subject_alt_names"] = [
            {"san_type": "IP_ADDRESS" if up.is_ip else "DNS", "matcher": {"exact": up.host}},
        ]
        cluster["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": _TYPE + "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                **({"sni": up.host} if not up.is_ip else {}),
                "common_tls_context": {"validation_context": validation},
            },
        }
    return cluster


def _system_ca_bundle() -> str:
    for path in CA_BUNDLES:
        if os.path.exists(path):
            return path
    return CA_BUNDLES[0]


def _extproc_cluster(address: str, port: int) -> dict[str, Any]:
    cluster = _cluster_base(EXTPROC_CLUSTER, address, port, dns=not _is_ip(address))
    cluster["typed_extension_protocol_options"] = _http_protocol_options(http2=True)
    cluster["health_checks"] = [_health_check({"grpc_health_check": {"service_name": EXTPROC_SERVICE}})]
    return cluster


def _http_cluster(address: str, port: int) -> dict[str, Any]:
    cluster = _cluster_base(HTTP_CLUSTER, address, port, dns=not _is_ip(address))
    cluster["typed_extension_protocol_options"] = _http_protocol_options()
    cluster["health_checks"] = [_health_check({"http_health_check": {"path": "/health"}})]
    return cluster


def _files_cluster(address: str, port: int) -> dict[str, Any]:
    """The HTTP door again, for uploads: a connection buffer of 1 MiB instead of the 65 MiB the other routes need
    for whole Responses bodies, so Envoy holds about that much of an upload whose client sends faster than the
    door writes to disk, not up to 65 MiB of it per upload. No health check of its own: the door is the one the
    ``sidecar`` cluster checks."""
    cluster = _cluster_base(FILES_CLUSTER, address, port, dns=not _is_ip(address))
    cluster["per_connection_buffer_limit_bytes"] = FILES_BUFFER_BYTES
    cluster["typed_extension_protocol_options"] = _http_protocol_options()
    return cluster


def _health_check(kind: dict[str, Any]) -> dict[str, Any]:
    return {"timeout": "1s", "interval": "2s", "no_traffic_interval": "5s", "unhealthy_threshold": 2,
            "healthy_threshold": 1, **kind}


# ------------------------------------------------------------------------------------------------------ YAML


def to_yaml(value: Any, *, header: str = "") -> str:
    """Block-style YAML in the dicts' own key order, as people write Envoy configs."""
    import yaml  # only the envoy-config and demo commands need it, not a running sidecar

    return header + yaml.dump(value, Dumper=_no_alias_dumper(), sort_keys=False, default_flow_style=False,
                              width=120)


def _no_alias_dumper() -> type:
    """A SafeDumper that writes a shared dict out again instead of as an anchor (``&id002``) and alias: a part
    of the YAML copied out on its own must still be complete. Built on first use, so PyYAML loads only when YAML
    is written."""
    import yaml

    class NoAliasDumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    def quote_yaml11_booleans(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
        # Envoy's YAML 1.1 parser reads a bare y / n as a boolean (PyYAML does not, so it leaves them bare): an
        # upstream named "n" must stay a string in its cluster and route names
        style = '"' if data in _YAML11_SHORT_BOOLEANS else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)

    NoAliasDumper.add_representer(str, quote_yaml11_booleans)
    return NoAliasDumper


_YAML11_SHORT_BOOLEANS = frozenset(("y", "Y", "n", "N"))


# ------------------------------------------------------------------------------------------------------- CLI


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("envoy-config", help="print the Envoy bootstrap YAML that fronts the bridge")
    parser.add_argument("--listen-port", type=int, default=LISTEN_PORT,
                        help=f"port clients call (default {LISTEN_PORT})")
    parser.add_argument("--extproc-port", type=int, default=None,
                        help=f"the bridge's ext_proc gRPC port (default: the configuration's `extproc_port`, else "
                             f"{DEFAULT_EXTPROC_PORT}, as `serve`)")
    parser.add_argument("--http-port", type=int, default=None,
                        help=f"the bridge's HTTP door port (default: the configuration's `http_port`, else "
                             f"{DEFAULT_HTTP_PORT}, as `serve`)")
    parser.add_argument("--upstream", default=None,
                        help="Chat Completions base URL, e.g. http://vllm:8000/v1 or https://api.openai.com/v1 "
                             "(default: the configuration's `upstream`, else http://127.0.0.1:8090/v1)")
    parser.add_argument("--admin-port", type=int, default=9901, help="Envoy admin port, on loopback")
    parser.add_argument("--listen-address", default="127.0.0.1", help="0.0.0.0 to accept outside connections")
    parser.add_argument("--extproc-address", default="127.0.0.1", help="where the bridge's ext_proc door is")
    parser.add_argument("--sidecar-address", default="127.0.0.1", help="where the bridge's HTTP door is")
    parser.add_argument("--ca-file", default=None, help="CA bundle for an https upstream (default: the system's)")
    parser.add_argument("--internal-port", type=int, default=None,
                        help="several upstreams: the loopback listener for the sidecar's own upstream calls, which "
                             "its --upstream-via names (default: --listen-port + 1)")
    parser.add_argument("--config", metavar="FILE", default=None,
                        help="the YAML configuration file `serve` reads (env: RESPONSES_BRIDGE_CONFIG): one cluster "
                             "per upstream of its `upstreams`, and its ports and upstream unless given here")
    identity = parser.add_argument_group(
        "identity", "how callers are identified; must match the sidecar's RESPONSES_BRIDGE_AUTH")
    identity.add_argument("--auth", choices=("none", "keys", "header"), default=None,
                          help="default: the configuration's `auth` (RESPONSES_BRIDGE_AUTH), else none. keys: no "
                               "client Authorization reaches an upstream, and the passthrough routes need a bridge "
                               "key; header: a client's own tenant header is removed first thing")
    identity.add_argument("--tenant-header", default=None,
                          help="default: the configuration's `tenant_header` (RESPONSES_BRIDGE_TENANT_HEADER)")
    identity.add_argument("--jwt-issuer", default=None,
                          help="render a jwt_authn example (auth header): tokens of this issuer, whose tenant claim "
                               "becomes the tenant header")
    identity.add_argument("--jwt-jwks-file", default=None, help="the issuer's JWKS, a file Envoy reads")
    identity.add_argument("--jwt-jwks", default=None, help="the issuer's JWKS inline (JSON text)")
    identity.add_argument("--jwt-tenant-claim", default="tenant", help="the claim naming the tenant (default tenant)")
    identity.add_argument("--jwt-audience", action="append", default=[],
                          help="an accepted audience (repeatable; default: any)")
    parser.set_defaults(func=_run)


def _auth(args: argparse.Namespace, configured_mode: str, configured_header: str) -> Auth:
    jwt = None
    if args.jwt_issuer is not None:
        jwt = JwtExample(issuer=args.jwt_issuer, tenant_claim=args.jwt_tenant_claim, jwks_file=args.jwt_jwks_file,
                         jwks=args.jwt_jwks, audiences=tuple(args.jwt_audience))
    elif args.jwt_jwks_file or args.jwt_jwks:
        raise ValueError("--jwt-jwks-file / --jwt-jwks need --jwt-issuer")
    return Auth(mode=args.auth or configured_mode, tenant_header=(args.tenant_header or configured_header).lower(),
                jwt=jwt)


def _run(args: argparse.Namespace) -> int:
    from .config import SettingsError, load_settings

    try:  # the settings `serve` starts with (flags > environment > file > defaults): the same upstreams and ports
        settings = load_settings(config=args.config)
    except SettingsError as exc:
        print(f"envoy-config: {exc}", file=sys.stderr)
        return 2
    try:
        auth = _auth(args, settings.auth, settings.tenant_header)
        text = render_bootstrap(
            listen_port=args.listen_port,
            extproc_port=settings.extproc_port if args.extproc_port is None else args.extproc_port,
            http_port=settings.http_port if args.http_port is None else args.http_port,
            upstream=settings.upstream if args.upstream is None else args.upstream, admin_port=args.admin_port,
            listen_address=args.listen_address, extproc_address=args.extproc_address,
            sidecar_address=args.sidecar_address, ca_file=args.ca_file, upstreams=settings.upstreams,
            internal_port=args.internal_port, auth=auth)
    except ValueError as exc:
        print(f"envoy-config: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0
