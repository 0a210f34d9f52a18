"""The client-facing listener (its connection manager, filters and routes) and the internal listener the sidecar's
own model calls use with several upstreams.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .filters import (
    DEFAULT_TIMEOUTS,
    Auth,
    _client_credentials_filter,
    _ext_proc_filter,
    _hold_for_route_filter,
    _identity_filters,
    _route_offered_filter,
)
from .local_replies import _local_reply_config
from .names import _TYPE, BUFFER_LIMIT_BYTES, INTERNAL_LISTENER, ROUTE_HEADER, UpstreamURL, _socket, upstream_cluster
from .routes import _host_rewrite, _route_config
from .timeouts import EnvoyTimeouts, duration

if TYPE_CHECKING:
    from ..config.upstreams import UpstreamSpec


def _loopback_like(listen_address: str) -> str:
    """The admin interface stays on loopback, of the same IP family as the listener."""
    try:
        return "::1" if ipaddress.ip_address(listen_address).version == 6 else "127.0.0.1"
    except ValueError:
        return "127.0.0.1"


def _listener(address: str, port: int, up: UpstreamURL, sidecar: tuple[str, int],
              upstreams: Sequence[UpstreamSpec] = (), auth: Auth | None = None, chat_store: bool = True,
              processor: tuple[str, str] = ("", ""), timeouts: EnvoyTimeouts = DEFAULT_TIMEOUTS) -> dict[str, Any]:
    """``processor``: where the processor is looked for and the flags that put it there (local_replies.py)."""
    auth = auth or Auth()
    return _http_listener("responses_bridge", address, port, _route_config(up, upstreams, auth, chat_store), [
        *_identity_filters(auth), _client_credentials_filter(auth), _route_offered_filter(), _ext_proc_filter(timeouts),
        _hold_for_route_filter()], timeouts, {
            # the whole request head (URL and headers); over it, a 431. The sidecar reads longer lines
            # (adapters/http/parser_errors.py), so it never refuses a head that Envoy forwarded.
            "max_request_headers_kb": 60,
            "normalize_path": True,
            "merge_slashes": True,
            "local_reply_config": _local_reply_config(sidecar, processor, timeouts),
        })


def _internal_listener(address: str, port: int, upstreams: Sequence[UpstreamSpec],
                       timeouts: EnvoyTimeouts = DEFAULT_TIMEOUTS) -> dict[str, Any]:
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
    return _http_listener(INTERNAL_LISTENER, address, port, {
        "name": INTERNAL_LISTENER, "request_headers_to_remove": [ROUTE_HEADER],
        "virtual_hosts": [{"name": "sidecar", "domains": ["*"], "routes": routes}]}, [], timeouts, {})


def _http_listener(name: str, address: str, port: int, route_config: dict[str, Any],
                   filters: list[dict[str, Any]], timeouts: EnvoyTimeouts, options: dict[str, Any]) -> dict[str, Any]:
    """A listener of one HTTP connection manager: ``filters`` before the router, ``options`` on top of what every
    listener of the bridge has (no ceiling on a whole request: LLM streams may last minutes; at most
    ``envoy_stream_idle_timeout`` seconds of silence; a request head within ``http_head_timeout``)."""
    return {
        "name": name,
        "address": _socket(address, port),
        "per_connection_buffer_limit_bytes": BUFFER_LIMIT_BYTES,
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": _TYPE + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": name,
                "codec_type": "AUTO",
                "stream_idle_timeout": duration(timeouts.stream_idle),
                "request_timeout": "0s",
                "request_headers_timeout": duration(timeouts.request_headers),
                **options,
                "route_config": route_config,
                "http_filters": [*filters, {
                    "name": "envoy.filters.http.router",
                    "typed_config": {"@type": _TYPE + "envoy.extensions.filters.http.router.v3.Router"},
                }],
            },
        }]}],
    }
