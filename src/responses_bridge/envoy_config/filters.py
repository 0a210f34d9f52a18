"""The HTTP filters around the processor: identity (``auth: keys`` / ``header``, the jwt_authn example), the
credentials and request context copied into metadata for the processor, the ext_proc filter itself (closed on
any processor failure), and the buffer that holds a request until its route is known.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .names import (
    _BUFFER,
    _EXT_PROC,
    _TYPE,
    BUFFER_LIMIT_BYTES,
    CLIENT_CONTEXT_HEADERS,
    CREDENTIALS_NAMESPACE,
    EXTPROC_CLUSTER,
    JWT_PROVIDER,
    OBSERVED_HEADERS,
    ROUTE_NAMESPACE,
    ROUTE_OFFERED_KEY,
    TENANT_METADATA_KEY,
    UPSTREAM_HEADERS_NAMESPACE,
    UPSTREAM_METADATA_HEADERS,
)
from .timeouts import EnvoyTimeouts, duration

if TYPE_CHECKING:
    pass

DEFAULT_TIMEOUTS = EnvoyTimeouts()


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


def _request_context_rules() -> list[dict[str, Any]]:
    return [{"header": header, "remove": False,
             "on_header_present": {"metadata_namespace": CREDENTIALS_NAMESPACE, "key": header, "type": "STRING"}}
            for header in (*OBSERVED_HEADERS, *CLIENT_CONTEXT_HEADERS)]


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


def _ext_proc_filter(timeouts: EnvoyTimeouts = DEFAULT_TIMEOUTS) -> dict[str, Any]:
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
            "message_timeout": duration(timeouts.message),  # envoy_message_timeout
            "max_message_timeout": duration(timeouts.max_message),
        },
    }


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
