"""``envoy-config --format istio``: the bridge in an Istio mesh. Two ``EnvoyFilter``s put the bootstrap's own HTTP
filters (targets.py; the processor's, closed on failure, among them) before the router — one at the ingress
gateway, one in the sidecar of the workloads labelled :data:`WORKLOAD_LABEL` — and patch the Responses routes as
the bootstrap's are: the processor and route buffer on, the upstream headers the processor decides, and ahead of
them the routes that send a request the processor marked (server-side tools) to the sidecar's HTTP door. Two
``VirtualService``s (the gateway's, any host; the mesh's, the bridge's Service host) route the paths, and a
``ServiceEntry`` names an upstream outside the mesh.

Istio's EnvoyFilter carries raw Envoy config, so every filter is the bootstrap's byte for byte; only the clusters
are Istio's (``outbound|port||host``). An upstream with replicas (``--upstream`` given several times) is the one
exception: the EnvoyFilters add the bootstrap's own cluster of them (replica_cluster.py: the replica the processor
names in ``x-gateway-destination-endpoint`` when it is one of them) and send the VirtualService's upstream routes
there; the VirtualService still names the first replica, whose host gives the routes their ``Host``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from .names import (
    EXTPROC_CLUSTER,
    FILES_CLUSTER,
    HTTP_CLUSTER,
    OWN_CALL_VALUE,
    ROUTE_HEADER,
    UPSTREAM_CLUSTER,
    VIA_DOOR,
    UpstreamURL,
)
from .replica_cluster import RETRY_BEFORE_SENDING
from .targets import Placement, bridge_filters, routes, with_clusters

NETWORKING_API = "networking.istio.io/v1alpha3"
VIRTUAL_SERVICE_API = "networking.istio.io/v1"
WORKLOAD_LABEL = ("responses-bridge.io/ext-proc", "enabled")
"""The label a workload's pod carries for its sidecar to run the bridge's filters on its outbound calls."""
INGRESS_SELECTOR = {"istio": "ingressgateway"}
RESPONSES_ROUTES = ("responses", "responses_unversioned")
TOOL_ROUTES = ("sidecar_tools", "sidecar_tools_unversioned")
"""The bootstrap's routes for a Responses request the processor marked (server-side tools), each inserted ahead of
the Responses route it stands beside."""
ROUTE_SETTINGS = ("typed_per_filter_config", "request_headers_to_add", "request_headers_to_remove",
                  "request_body_buffer_limit")
"""What a VirtualService route cannot say and each route takes from the bootstrap's route of the same name: whether
and how the processor and route buffer run there, the headers the processor decides, the body limit."""


ROUTE_NAMES = ("responses", "responses_unversioned", "models", "embeddings", "images_generations", "chat_completions",
               "sidecar")
"""The VirtualService's routes, in order, each named as the bootstrap route it stands for."""


def istio_cluster(port: int, host: str) -> str:
    return f"outbound|{port}||{host}"


def _clusters(placement: Placement) -> dict[str, str]:
    door = istio_cluster(placement.http_port, placement.host)
    return {EXTPROC_CLUSTER: istio_cluster(placement.extproc_port, placement.host), HTTP_CLUSTER: door,
            FILES_CLUSTER: door}


def istio_filters(bootstrap: dict[str, Any], placement: Placement) -> list[dict[str, Any]]:
    """The bootstrap's filters with Istio's cluster names: what each EnvoyFilter inserts."""
    filters: list[dict[str, Any]] = with_clusters(bridge_filters(bootstrap), _clusters(placement))
    return filters


UPSTREAM_ROUTES = ("responses", "responses_unversioned", "models", "embeddings", "images_generations",
                   "chat_completions")
"""The VirtualService's routes to the upstream: with replicas, each sent to the bootstrap's replicas cluster."""


def _replicas_cluster(bootstrap: dict[str, Any]) -> dict[str, Any] | None:
    """The bootstrap's upstream cluster when it is one of replicas (replica_cluster.py), else None."""
    for cluster in bootstrap["static_resources"]["clusters"]:
        if cluster["name"] == UPSTREAM_CLUSTER and "load_balancing_policy" in cluster:
            return copy.deepcopy(cluster)
    return None


def _config_patches(bootstrap: dict[str, Any], placement: Placement, context: str) -> list[dict[str, Any]]:
    listener = {"filterChain": {"filter": {"name": "envoy.filters.network.http_connection_manager",
                                           "subFilter": {"name": "envoy.filters.http.router"}}}}
    # each inserted before the router in turn: they keep the bootstrap's order
    patches: list[dict[str, Any]] = [
        {"applyTo": "HTTP_FILTER", "match": {"context": context, "listener": listener},
         "patch": {"operation": "INSERT_BEFORE", "value": http_filter}}
        for http_filter in istio_filters(bootstrap, placement)]
    by_name = with_clusters(routes(bootstrap), _clusters(placement))
    tools = dict(zip(RESPONSES_ROUTES, TOOL_ROUTES, strict=True))
    replicas = _replicas_cluster(bootstrap)
    if replicas is not None:  # the bootstrap's own cluster of the replicas, honouring the processor's pick
        patches.append({"applyTo": "CLUSTER", "match": {"context": context},
                        "patch": {"operation": "ADD", "value": replicas}})
    for name in ROUTE_NAMES:  # every VirtualService route, named as the bootstrap's
        route = by_name[name]
        match = {"context": context, "routeConfiguration": {"vhost": {"route": {"name": name}}}}
        settings = {key: route[key] for key in ROUTE_SETTINGS if key in route}
        if replicas is not None and name in UPSTREAM_ROUTES:
            settings["route"] = {"cluster": UPSTREAM_CLUSTER, "retry_policy": dict(RETRY_BEFORE_SENDING)}
        patches.append({"applyTo": "HTTP_ROUTE", "match": match, "patch": {"operation": "MERGE", "value": settings}})
        if name in tools:
            patches.append({"applyTo": "HTTP_ROUTE", "match": match,
                            "patch": {"operation": "INSERT_BEFORE", "value": by_name[tools[name]]}})
    return patches


def _envoy_filter(name: str, placement: Placement, labels: dict[str, str], context: str,
                  bootstrap: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": NETWORKING_API, "kind": "EnvoyFilter",
            "metadata": {"name": name, "namespace": placement.root_namespace},  # applies in every namespace
            "spec": {"workloadSelector": {"labels": labels},
                     "configPatches": _config_patches(bootstrap, placement, context)}}


def _http_routes(up: UpstreamURL, placement: Placement) -> list[dict[str, Any]]:
    """The paths, as the bootstrap routes them; each route is named as the bootstrap's, which the EnvoyFilters'
    route patches find (Istio names an Envoy route after its VirtualService route)."""
    upstream = {"destination": {"host": up.host, "port": {"number": up.port}}}
    door = {"destination": {"host": placement.host, "port": {"number": placement.http_port}}}

    def to_upstream(name: str, path: str, target: str, method: str = "POST", own_call: bool = False
                    ) -> dict[str, Any]:
        match: dict[str, Any] = {"uri": {"exact": path}, "method": {"exact": method}}
        if own_call:
            match["headers"] = {ROUTE_HEADER: {"exact": OWN_CALL_VALUE}}
        return {"name": name, "match": [match],
                "rewrite": {"uri": f"{up.base_path}/{target}", "authority": up.authority},
                "headers": {"request": {"remove": [ROUTE_HEADER]}},
                "route": [upstream]}  # no timeout: Istio's default is none, and its CRD refuses "0s"

    http = [
        to_upstream("responses", "/v1/responses", "chat/completions"),
        to_upstream("responses_unversioned", "/responses", "chat/completions"),
        to_upstream("models", "/v1/models", "models", method="GET", own_call=True),
        to_upstream("embeddings", "/v1/embeddings", "embeddings", own_call=True),
        to_upstream("images_generations", "/v1/images/generations", "images/generations"),
        to_upstream("chat_completions", "/v1/chat/completions", "chat/completions"),
        # stored responses, conversations, files, vector stores, containers, models, WebSocket, health
        {"name": "sidecar", "match": [{"uri": {"prefix": "/"}}], "route": [door],
         "headers": {"request": {"add": {"via": VIA_DOOR}}}},  # names.VIA_DOOR: the bootstrap's routes add it too
    ]
    assert tuple(route["name"] for route in http) == ROUTE_NAMES
    return http


def _virtual_service(name: str, placement: Placement, hosts: list[str], gateways: list[str],
                     up: UpstreamURL) -> dict[str, Any]:
    return {"apiVersion": VIRTUAL_SERVICE_API, "kind": "VirtualService",
            "metadata": {"name": name, "namespace": placement.namespace},
            "spec": {"hosts": hosts, "gateways": gateways, "http": _http_routes(up, placement)}}


def _service_entry(up: UpstreamURL, placement: Placement) -> dict[str, Any]:
    """The upstream, when it is not a Service of the cluster: the mesh knows it by name and port, and its traffic
    as HTTP, which Envoy reads and routes (an https upstream gets its TLS from :func:`_tls_origination`)."""
    return {"apiVersion": NETWORKING_API, "kind": "ServiceEntry",
            "metadata": {"name": "llm-upstream", "namespace": placement.namespace},
            "spec": {"hosts": [up.host], "location": "MESH_EXTERNAL", "resolution": "DNS",
                     "ports": [{"number": up.port, "name": "http-llm", "protocol": "HTTP"}]}}


def _tls_origination(up: UpstreamURL, placement: Placement) -> dict[str, Any]:
    """An https upstream: Envoy opens the TLS connection itself (checking the upstream's certificate against the
    system's CAs and its name), as the bootstrap's upstream cluster does."""
    return {"apiVersion": NETWORKING_API, "kind": "DestinationRule",
            "metadata": {"name": "llm-upstream", "namespace": placement.namespace},
            "spec": {"host": up.host, "trafficPolicy": {"portLevelSettings": [
                {"port": {"number": up.port}, "tls": {"mode": "SIMPLE", "sni": up.host}}]}}}


def istio_objects(bootstrap: dict[str, Any], upstream: str, placement: Placement,
                  upstream_urls: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Every object of the Istio rendering, from the bootstrap rendered with the same settings; ``upstream_urls``:
    the upstream's replicas (the bootstrap's cluster of them goes in the EnvoyFilters), the first standing for them
    in the VirtualServices."""
    up = UpstreamURL(upstream_urls[0] if upstream_urls else upstream)
    if up.is_ip:
        raise ValueError("Istio routes to an upstream by its host name: give --upstream with a name, not an address")
    objects = [
        _envoy_filter("responses-bridge-gateway", placement, INGRESS_SELECTOR, "GATEWAY", bootstrap),
        _envoy_filter("responses-bridge-sidecar", placement, dict([WORKLOAD_LABEL]), "SIDECAR_OUTBOUND", bootstrap),
        _virtual_service("responses-bridge-gateway", placement, ["*"], [placement.gateway], up),
        _virtual_service("responses-bridge-mesh", placement, [placement.host], ["mesh"], up),
    ]
    if not up.host.endswith(".svc.cluster.local"):
        objects.append(_service_entry(up, placement))
    if up.tls:
        objects.append(_tls_origination(up, placement))
    return objects
