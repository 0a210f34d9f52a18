"""The whole bootstrap: :func:`render_bootstrap` (YAML) and :func:`bootstrap_dict`, assembled from the listeners and
clusters modules.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .clusters import _extproc_cluster, _files_cluster, _http_cluster, _upstream_cluster, with_circuit_breakers
from .filters import Auth
from .listeners import _internal_listener, _listener, _loopback_like
from .local_replies import processor_place
from .names import (
    _TYPE,
    MAX_DOWNSTREAM_CONNECTIONS,
    REQUESTS_PER_WORKER,
    UPSTREAM_CLUSTER,
    UpstreamURL,
    _socket,
    upstream_cluster,
)
from .replica_cluster import replicas_cluster, with_replica_routes
from .timeouts import EnvoyTimeouts

if TYPE_CHECKING:
    from ..config.upstreams import UpstreamSpec


def render_bootstrap(*, listen_port: int, extproc_port: int, http_port: int, upstream: str,
                     admin_port: int = 9901, listen_address: str = "127.0.0.1",
                     extproc_address: str = "127.0.0.1", sidecar_address: str = "127.0.0.1",
                     ca_file: str | None = None, upstreams: Sequence[UpstreamSpec] = (),
                     internal_port: int | None = None, auth: Auth | None = None, extproc_uds: str | None = None,
                     workers: int = 1, chat_store: bool = True, timeouts: EnvoyTimeouts | None = None,
                     max_requests: int = 0, upstream_urls: Sequence[str] = ()) -> str:
    """A complete Envoy v3 bootstrap, as YAML. ``ca_file`` (https upstreams only) defaults to the system CA
    bundle. ``upstreams``: several upstreams routed per model (one cluster each); empty: ``upstream`` alone.
    ``internal_port``: the internal listener's (several upstreams only), by default ``listen_port + 1``.
    ``auth``: the sidecar's ``RESPONSES_BRIDGE_AUTH`` (and a jwt_authn example), default none. ``extproc_uds``:
    the processor's Unix socket (``serve --extproc-uds``) instead of ``extproc_address``:``extproc_port``;
    ``workers``: the sidecar's ``serve --workers`` (one processor endpoint each); ``chat_store``: its
    ``store_chat_completions`` (off: the chat route never reaches the processor but to pick an upstream or check a
    key); ``timeouts``: the ``envoy_*`` timeout settings (timeouts.py), their defaults when None;
    ``max_requests``: every cluster's circuit breakers (``envoy_max_requests``; 0: :data:`REQUESTS_PER_WORKER` per
    worker); ``upstream_urls``: the replicas of the lone ``upstream`` (``--upstream`` given several times), one
    cluster of them all honouring the replica the sidecar picks (replica_cluster.py)."""
    return to_yaml(bootstrap_dict(
        listen_port=listen_port, extproc_port=extproc_port, http_port=http_port, upstream=upstream,
        admin_port=admin_port, listen_address=listen_address, extproc_address=extproc_address,
        sidecar_address=sidecar_address, ca_file=ca_file, upstreams=upstreams, internal_port=internal_port,
        auth=auth, extproc_uds=extproc_uds, workers=workers, chat_store=chat_store, timeouts=timeouts,
        max_requests=max_requests, upstream_urls=upstream_urls,
    ), header=_header(", ".join(f"{spec.name}={' '.join(spec.replica_urls())}" for spec in upstreams)
                      or (" ".join(upstream_urls) if len(upstream_urls) > 1 else upstream),
                      internal_listener_port(listen_port, internal_port) if upstreams else None))


def internal_listener_port(listen_port: int, given: int | None = None) -> int:
    """The internal listener's port: ``given``, else the one after the client-facing listener's."""
    return given if given is not None else listen_port + 1


def _header(upstream: str, internal: int | None = None) -> str:
    text = ("# Envoy bootstrap for responses-bridge, rendered by `responses-bridge envoy-config`.\n"
            f"# Upstream: {upstream}\n"
            "# /v1/responses -> upstream via the ext_proc processor (with server-side tools: the sidecar's door);\n"
            "# /v1/chat/completions -> upstream; /v1/models and /v1/embeddings -> the sidecar's HTTP door (its own\n"
            "# calls for them, marked x-responses-bridge-upstream, -> upstream);\n"
            "# everything else -> the sidecar's HTTP door.\n")
    if internal is not None:
        text += (f"# The sidecar's own upstream calls: --upstream-via http://127.0.0.1:{internal}/v1 (the internal\n"
                 "# listener, on loopback).\n")
    return text


def bootstrap_dict(*, listen_port: int, extproc_port: int, http_port: int, upstream: str, admin_port: int = 9901,
                   listen_address: str = "127.0.0.1", extproc_address: str = "127.0.0.1",
                   sidecar_address: str = "127.0.0.1", ca_file: str | None = None,
                   upstreams: Sequence[UpstreamSpec] = (), internal_port: int | None = None,
                   auth: Auth | None = None, extproc_uds: str | None = None, workers: int = 1,
                   chat_store: bool = True, timeouts: EnvoyTimeouts | None = None,
                   max_requests: int = 0, upstream_urls: Sequence[str] = ()) -> dict[str, Any]:
    if upstream_urls and not upstreams:
        upstream = upstream_urls[0]  # the replicas' first stands for them in the routes (path, Host)
    up = UpstreamURL(upstreams[0].url if upstreams else upstream)
    auth = auth or Auth()
    timeouts = timeouts or EnvoyTimeouts()
    connect, door_idle = timeouts.connect, timeouts.door_idle
    replicated = any(spec.replicated() for spec in upstreams) or len(upstream_urls) > 1
    if upstreams:
        upstream_clusters = [
            replicas_cluster(spec.replica_urls(), ca_file, upstream_cluster(spec.name), connect=connect,
                             discover_dns=spec.discover == "dns", dns_refresh=spec.dns_refresh_seconds)
            if spec.replicated() else
            _upstream_cluster(UpstreamURL(spec.url), ca_file, upstream_cluster(spec.name), connect=connect)
            for spec in upstreams]
    elif len(upstream_urls) > 1:
        upstream_clusters = [replicas_cluster(upstream_urls, ca_file, UPSTREAM_CLUSTER, connect=connect)]
    else:
        upstream_clusters = [_upstream_cluster(up, ca_file, connect=connect)]
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
            "listeners": with_replica_routes([
                # a chat request to replicas is read whatever is stored: the processor picks its replica from the
                # body and sees the answer's headers (a replica that refused the connection is taken out)
                _listener(listen_address, listen_port, up, (sidecar_address, http_port), upstreams, auth,
                          chat_store or replicated, processor_place(extproc_address, extproc_port, uds=extproc_uds,
                                                      workers=workers), timeouts),
                *([_internal_listener(_loopback_like(listen_address), internal_listener_port(
                    listen_port, internal_port), upstreams, timeouts)] if upstreams else []),
            ], {cluster["name"] for cluster in upstream_clusters if "load_balancing_policy" in cluster}),
            "clusters": with_circuit_breakers([
                *upstream_clusters,
                _extproc_cluster(extproc_address, extproc_port, uds=extproc_uds, workers=workers, connect=connect),
                _http_cluster(sidecar_address, http_port, connect=connect, idle=door_idle),
                _files_cluster(sidecar_address, http_port, connect=connect, idle=door_idle),
            ], max_requests or REQUESTS_PER_WORKER * max(1, workers)),
        },
    }


def to_yaml(value: Any, *, header: str = "") -> str:
    """Block-style YAML in the dicts' own key order, as people write Envoy configs."""
    import yaml  # only the envoy-config and demo commands need it, not a running sidecar

    return header + yaml.dump(value, Dumper=_no_alias_dumper(), sort_keys=False, default_flow_style=False,
                              width=120)


def _no_alias_dumper() -> type:
    """A safe dumper that writes a shared dict out again instead of as an anchor (``&id002``) and alias: a part
    of the YAML copied out on its own must still be complete. Built on first use, so PyYAML loads only when YAML
    is written. On libyaml's emitter where PyYAML has it (its wheels do): the same text for these configs, written
    ~6x faster than by the pure-Python one (the deployment examples' renderings are checked on every test run)."""
    import yaml

    class NoAliasDumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
        def ignore_aliases(self, data: Any) -> bool:
            return True

    def quote_yaml11_booleans(dumper: Any, data: str) -> yaml.ScalarNode:
        # Envoy's YAML 1.1 parser reads a bare y / n as a boolean (PyYAML does not, so it leaves them bare): an
        # upstream named "n" must stay a string in its cluster and route names
        style = '"' if data in _YAML11_SHORT_BOOLEANS else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)

    NoAliasDumper.add_representer(str, quote_yaml11_booleans)
    return NoAliasDumper


_YAML11_SHORT_BOOLEANS = frozenset(("y", "Y", "n", "N"))
