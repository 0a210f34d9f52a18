"""The routes: which paths go to the upstream through the processor, straight to the upstream, or to the sidecar's
HTTP door, and per-upstream routing with several upstreams.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .filters import Auth, _disabled, _enabled, _upstream_headers_from_processor
from .names import (
    _BUFFER,
    _EXT_PROC,
    _TYPE,
    BUFFER_LIMIT_BYTES,
    FILES_CLUSTER,
    HANDS_OFF_METADATA,
    HTTP_CLUSTER,
    NATIVE_SUFFIX,
    OWN_CALL_VALUE,
    ROUTE_HEADER,
    ROUTE_KEY,
    ROUTE_NAMESPACE,
    ROUTE_TO_SIDECAR,
    UNSUPPORTED_ENCODING_STATUS,
    UPSTREAM_CLUSTER,
    UPSTREAM_KEY,
    VIA_DOOR,
    UpstreamURL,
    upstream_cluster,
)

if TYPE_CHECKING:
    from ..config.upstreams import UpstreamSpec


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


_REQUEST_ID_ECHO = {"header": {"key": "x-request-id", "value": "%REQ(x-request-id)%"},
                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
"""Every answer carries the request's own id, the one Envoy forwarded and the sidecar logged (the client's, or one
Envoy made): never an upstream's (a Chat Completions server may answer with its own ``x-request-id``)."""


def _route_config(up: UpstreamURL, upstreams: Sequence[UpstreamSpec] = (), auth: Auth | None = None,
                  chat_store: bool = True) -> dict[str, Any]:
    auth = auth or Auth()
    keys = auth.mode == "keys"
    post = [{"name": ":method", "string_match": {"exact": "POST"}}]
    get = [{"name": ":method", "string_match": {"exact": "GET"}}]
    cluster = upstream_cluster(upstreams[0].name) if upstreams else UPSTREAM_CLUSTER
    upstream_action = {"cluster": cluster, "timeout": "0s", **_host_rewrite(up)}
    routes: list[dict[str, Any]] = [*_encoded_body_routes()]
    if upstreams:
        routes += _per_upstream_routes(upstreams, keys, chat_store)
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
    routes += _agents_routes()
    if upstreams:  # the sidecar's HTTP door merges the models of every upstream; the processor only answers
        routes += [
            {"name": "sidecar_models", "match": {"path": "/v1/models", "headers": get},
             "route": {"cluster": HTTP_CLUSTER, "timeout": "0s"}, "typed_per_filter_config": _headers_only(True)},
        ]
        routes += [
            {"name": f"chat_completions{suffix}", "match": {"path": path, "headers": post},
             "route": {**upstream_action, "prefix_rewrite": f"{up.base_path}/chat/completions"},
             "typed_per_filter_config": _chat_filter(chat_store, keys, several=True),
             "request_body_buffer_limit": BUFFER_LIMIT_BYTES}
            for suffix, path in (("", "/v1/chat/completions"), ("_unversioned", "/chat/completions"))
        ]
    else:
        routes += [
            # the Codex CLI's catalog request (``?client_version=``) is the sidecar's: its HTTP door adds the
            # ``models`` array Codex decodes to the upstream's list (adapters/http/upstream/codex_models.py)
            {"name": "models_codex", "match": {"path": "/v1/models", "headers": get, "query_parameters": [
                {"name": "client_version", "present_match": True}]},
             "route": {"cluster": HTTP_CLUSTER, "timeout": "0s"}, "typed_per_filter_config": _headers_only(True)},
            # the sidecar's own calls (``--upstream-via``, naming the upstream in ROUTE_HEADER) for the model list
            # and for an upstream's embedding model go to the upstream; a client's go to the sidecar, whose door
            # lists the upstream's models with the deployment's embedder and answers /v1/embeddings for every model
            # (adapters/http/upstream/embeddings_routes.py). One model (/v1/models/{id}) is the sidecar's too. A client
            # naming the upstream itself gets no more than the upstream's own list and embeddings, with the same key
            # check (``auth: keys``).
            {"name": "models", "match": {"path": "/v1/models", "headers": [*get, _own_call()]},
             "route": {**upstream_action, "prefix_rewrite": f"{up.base_path}/models"},
             "typed_per_filter_config": _headers_only() if keys else _disabled()},
            {"name": "embeddings", "match": {"path": "/v1/embeddings", "headers": [*post, _own_call()]},
             "route": {**upstream_action, "prefix_rewrite": f"{up.base_path}/embeddings"},
             "typed_per_filter_config": _headers_only() if keys else _disabled(),
             "request_body_buffer_limit": BUFFER_LIMIT_BYTES},
            # a client's list: the sidecar's, and the processor sees its headers (told to change nothing), even
            # without keys to check: the list is what a smoke test asks for, and it must fail (503
            # processor_unavailable) when the processor cannot be reached, as every Responses request then does
            {"name": "models_list", "match": {"path": "/v1/models", "headers": get},
             "route": {"cluster": HTTP_CLUSTER, "timeout": "0s"}, "typed_per_filter_config": _headers_only(True)},
            # the image generation tool's calls (--upstream-via): the upstream's Images API, passed through as the
            # model list is (a client may use it too); with several upstreams the internal listener carries them
            {"name": "images_generations", "match": {"path": "/v1/images/generations", "headers": post},
             "route": {**upstream_action, "prefix_rewrite": f"{up.base_path}/images/generations"},
             "typed_per_filter_config": _headers_only() if keys else _disabled(),
             "request_body_buffer_limit": BUFFER_LIMIT_BYTES},
            {"name": "chat_completions", "match": {"path": "/v1/chat/completions", "headers": post},
             "route": {**upstream_action, "prefix_rewrite": f"{up.base_path}/chat/completions"},
             "typed_per_filter_config": _chat_filter(chat_store, keys, several=False),
             "request_body_buffer_limit": BUFFER_LIMIT_BYTES},
        ]
    routes += [
        {"name": "sidecar", "match": {"prefix": "/"},
         "route": {"cluster": HTTP_CLUSTER, "timeout": "0s", "upgrade_configs": [{"upgrade_type": "websocket"}]},
         "typed_per_filter_config": _disabled(), "request_body_buffer_limit": BUFFER_LIMIT_BYTES},
    ]
    for route in routes:  # what goes to the door says it came through Envoy (names.VIA_DOOR)
        if route.get("route", {}).get("cluster") in (HTTP_CLUSTER, FILES_CLUSTER):
            route.setdefault("request_headers_to_add", []).append(_via())
    # the sidecar's routing header goes nowhere: with several upstreams it means nothing here (_internal_listener),
    # with one it has chosen its route (the models and embeddings routes) and the upstream has no use for it
    return {"name": "responses_bridge", "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}],
            "response_headers_to_add": [_REQUEST_ID_ECHO], "request_headers_to_remove": [ROUTE_HEADER]}


def _via() -> dict[str, Any]:
    """A fresh ``Via`` entry (one dict per route: a shared one would be written as a YAML alias)."""
    return {"header": {"key": "via", "value": VIA_DOOR}, "append_action": "APPEND_IF_EXISTS_OR_ADD"}


def _own_call() -> dict[str, Any]:
    """The header match of the sidecar's own call through this listener with one upstream (adapters/upstream_client.py
    sets ``ROUTE_HEADER`` to the lone upstream's name)."""
    return {"name": ROUTE_HEADER, "string_match": {"exact": OWN_CALL_VALUE}}


def _upstream_headers(keys: bool) -> dict[str, Any]:
    """A translated (or native) Responses call's headers: the processor's (:func:`_upstream_headers_from_processor`),
    and with ``auth: keys`` never the client's Authorization (its bridge key): the route removes it before adding
    the processor's (Envoy removes a route's headers before it adds them)."""
    return {"request_headers_to_add": _upstream_headers_from_processor(),
            **({"request_headers_to_remove": ["authorization"]} if keys else {})}


def _headers_only(hands_off: bool = False) -> dict[str, Any]:
    """A passthrough route: the processor sees its request headers (only); with ``auth: keys`` it checks the
    caller's bridge key (401 without a valid one) and replaces it with the upstream's key, or removes it.
    ``hands_off``: a route to the sidecar's HTTP door, which checks the caller itself; the processor is told
    (``HANDS_OFF_METADATA``) to change nothing, and is there only so that the route fails when it is down."""
    overrides: dict[str, Any] = {
        "processing_mode": {"request_header_mode": "SEND", "request_body_mode": "NONE",
                            "request_trailer_mode": "SKIP", "response_header_mode": "SKIP",
                            "response_body_mode": "NONE", "response_trailer_mode": "SKIP"}}
    if hands_off:
        overrides["grpc_initial_metadata"] = [{"key": HANDS_OFF_METADATA, "value": "1"}]
    return {_EXT_PROC: {"@type": _TYPE + "envoy.config.route.v3.FilterConfig", "disabled": False, "config": {
        "@type": _TYPE + "envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute", "overrides": overrides}}}


def _per_upstream_routes(upstreams: Sequence[UpstreamSpec], keys: bool = False, chat_store: bool = True
                         ) -> list[dict[str, Any]]:
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
               "typed_per_filter_config": _chat_filter(chat_store, keys, several=True, chosen=True),
               "request_body_buffer_limit": BUFFER_LIMIT_BYTES}
              for suffix, path in (("", "/v1/chat/completions"), ("_unversioned", "/chat/completions"))),
        ]
    return routes


def _chosen(value: str) -> list[dict[str, Any]]:
    return [{"filter": ROUTE_NAMESPACE, "path": [{"key": UPSTREAM_KEY}], "value": {"string_match": {"exact": value}}}]


def _chat_filter(store: bool, keys: bool, several: bool, chosen: bool = False) -> dict[str, Any]:
    """The processor's part in ``POST /v1/chat/completions``. ``store`` (the sidecar's
    ``store_chat_completions``): it reads every chat request's body (:func:`_chat_processing`). Otherwise it reads
    only what routing needs: with several upstreams the body, for the model (:func:`_routing_only`; the route a
    request is then ``chosen`` for needs nothing more), and with ``auth: keys`` the headers, for the caller's key;
    else it never sees the request."""
    if store:
        return _chat_processing()
    if several:
        return _disabled() if chosen else _routing_only()
    return _headers_only() if keys else _disabled()


def _routing_only() -> dict[str, Any]:
    """``POST /v1/chat/completions`` with several upstreams and no stored chats: the processor sees the request's
    path and body, to pick the upstream from the model (the route then changes), and nothing of the answer."""
    return _buffered_request(response_header_mode="SKIP", response_body_mode="NONE")


def _chat_processing() -> dict[str, Any]:
    """``POST /v1/chat/completions``: the processor sees the request's headers (the caller's key, the tenant) and
    buffered body (``store``, and with several upstreams the model, which picks the route), then, for a request
    with ``store: true`` only, the answer's headers and its body as it streams (adapters/extproc/chat_phase.py);
    for any other it ends its stream after the body and the answer passes untouched. The per-upstream routes a
    request is routed on to carry the same, so the modes hold whichever route Envoy reads them from."""
    return _buffered_request(response_header_mode="SEND", response_body_mode="STREAMED")


def _buffered_request(*, response_header_mode: str, response_body_mode: str) -> dict[str, Any]:
    """The per-route filter config of a chat completions route: the processor sees the request's headers and its
    body buffered (within the buffer filter's limit), and of the answer what the two modes say."""
    return {_EXT_PROC: {"@type": _TYPE + "envoy.config.route.v3.FilterConfig", "disabled": False, "config": {
        "@type": _TYPE + "envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute", "overrides": {
            "processing_mode": {"request_header_mode": "SEND", "request_body_mode": "BUFFERED",
                                "request_trailer_mode": "SKIP", "response_header_mode": response_header_mode,
                                "response_body_mode": response_body_mode, "response_trailer_mode": "SKIP"}}}},
            _BUFFER: {"@type": _TYPE + "envoy.config.route.v3.FilterConfig", "disabled": False, "config": {
                "@type": _TYPE + "envoy.extensions.filters.http.buffer.v3.BufferPerRoute",
                "buffer": {"max_request_bytes": BUFFER_LIMIT_BYTES}}}}


def _files_routes() -> list[dict[str, Any]]:
    """The Files, Uploads, Containers, Skills and Batch APIs to the sidecar's HTTP door, ext_proc off and no body
    limit of the route's own: an upload of hundreds of MB streams through, held back by flow control (the
    connection's buffer limit), never buffered whole; the door enforces the file size limits
    (RESPONSES_BRIDGE_MAX_FILE_BYTES, RESPONSES_BRIDGE_CODE_MAX_FILE_BYTES). Named ``sidecar_…`` so that Envoy's own
    5xx on it name the door (``_local_reply_config``)."""
    return [{"name": f"sidecar_{name}", "match": {"path_separated_prefix": prefix},
             "route": {"cluster": FILES_CLUSTER, "timeout": "0s"}, "typed_per_filter_config": _disabled()}
            for name, prefix in (("files", "/v1/files"), ("files_unversioned", "/files"),
                                 ("uploads", "/v1/uploads"), ("uploads_unversioned", "/uploads"),
                                 ("containers", "/v1/containers"), ("containers_unversioned", "/containers"),
                                 ("skills", "/v1/skills"), ("skills_unversioned", "/skills"),
                                 ("batches", "/v1/batches"), ("batches_unversioned", "/batches"))]


def _vector_store_routes() -> list[dict[str, Any]]:
    """The Vector Stores API is the sidecar's own (its HTTP door, every method): never through the processor.
    Named ``sidecar_…`` so that Envoy's own 5xx on it name the door (``_local_reply_config``)."""
    return [{"name": f"sidecar_{name}", "match": {"path_separated_prefix": prefix},
             "route": {"cluster": HTTP_CLUSTER, "timeout": "0s"}, "typed_per_filter_config": _disabled(),
             "request_body_buffer_limit": BUFFER_LIMIT_BYTES}
            for name, prefix in (("vector_stores", "/v1/vector_stores"),
                                 ("vector_stores_unversioned", "/vector_stores"))]


def _agents_routes() -> list[dict[str, Any]]:
    """The Agents API (agents, sessions, their event streams, vaults) is the sidecar's own (its HTTP door, every
    method): never through the processor, a session's SSE stream passed on as it is written. Named ``sidecar_…`` so that
    Envoy's own 5xx on it name the door (``_local_reply_config``)."""
    return [{"name": f"sidecar_{name}", "match": {"path_separated_prefix": prefix},
             "route": {"cluster": HTTP_CLUSTER, "timeout": "0s",  # codex exec-server's websocket (executor_routes.py)
                       "upgrade_configs": [{"upgrade_type": "websocket"}]}, "typed_per_filter_config": _disabled(),
             "request_body_buffer_limit": BUFFER_LIMIT_BYTES}
            for name, prefix in (("agents", "/v1/agents"), ("agents_unversioned", "/agents"),
                                 ("vaults", "/v1/vaults"), ("vaults_unversioned", "/vaults"))]


def _host_rewrite(up: UpstreamURL) -> dict[str, Any]:
    # A hostname upstream (a provider, a Kubernetes service) expects its own name in Host / :authority.
    return {} if up.is_ip else {"host_rewrite_literal": up.authority}
