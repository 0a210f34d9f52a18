"""What every rendering shares: the bridge's HTTP filters, its processor filter and its per-route settings, taken
from the bootstrap itself (:func:`bootstrap.bootstrap_dict`), so the snippet for an existing Envoy, Envoy
Gateway's policies and Istio's EnvoyFilters cannot drift from it: a change to a filter in filters.py or to a route
in routes.py reaches every target at once.

Also where the bridge is reached in a cluster (:class:`Placement`): the Service in front of its two doors.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from .names import _EXT_PROC, EXTPROC_CLUSTER


@dataclass(frozen=True)
class Placement:
    """Where a Kubernetes platform finds the bridge: the Service ``service`` in ``namespace`` with the ext_proc door
    on ``extproc_port`` and the HTTP door on ``http_port``, behind the Gateway ``gateway`` (Envoy Gateway: the
    HTTPRoutes' parent; Istio: the ingress gateway's ``istio`` label and the Gateway the VirtualService binds)."""

    namespace: str = "default"
    root_namespace: str = "istio-system"
    """Istio's root namespace, where the EnvoyFilters go: one outside it applies only to workloads of its own
    namespace, and the ingress gateway of a standard install is not in the bridge's."""
    service: str = "responses-bridge"
    gateway: str = "responses-bridge"
    extproc_port: int = 50051
    http_port: int = 8081

    @property
    def host(self) -> str:
        return f"{self.service}.{self.namespace}.svc.cluster.local"


def _connection_manager(bootstrap: dict[str, Any]) -> dict[str, Any]:
    listener = bootstrap["static_resources"]["listeners"][0]
    config: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return config


def listener_limits(bootstrap: dict[str, Any]) -> dict[str, Any]:
    """The client-facing listener's connection buffer and its connection manager's stream idle timeout."""
    listener = bootstrap["static_resources"]["listeners"][0]
    return {"per_connection_buffer_limit_bytes": listener["per_connection_buffer_limit_bytes"],
            "stream_idle_timeout": _connection_manager(bootstrap)["stream_idle_timeout"]}


def bridge_filters(bootstrap: dict[str, Any]) -> list[dict[str, Any]]:
    """The client-facing listener's HTTP filters before the router, in order: what an existing Envoy inserts."""
    filters = copy.deepcopy(_connection_manager(bootstrap)["http_filters"])
    assert filters[-1]["name"] == "envoy.filters.http.router", "the router ends the bootstrap's chain"
    return list(filters[:-1])


def processor_filter(filters: list[dict[str, Any]]) -> dict[str, Any]:
    """The ext_proc filter among ``filters``, its name as the bootstrap gives it or with a platform's suffix."""
    [found] = [f for f in filters if f["name"].split("/")[0] == _EXT_PROC]
    return found


def routes(bootstrap: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The client-facing listener's routes by name."""
    hosts = _connection_manager(bootstrap)["route_config"]["virtual_hosts"]
    return {route["name"]: copy.deepcopy(route) for host in hosts for route in host["routes"]}


def processor_cluster(bootstrap: dict[str, Any]) -> dict[str, Any]:
    [cluster] = [c for c in bootstrap["static_resources"]["clusters"] if c["name"] == EXTPROC_CLUSTER]
    return copy.deepcopy(cluster)


def with_clusters(value: Any, names: dict[str, str]) -> Any:
    """``value`` with every ``cluster`` / ``cluster_name`` naming one of ``names`` renamed: a platform names the
    bridge's doors after its own Services (Istio's ``outbound|port||host``)."""
    if isinstance(value, dict):
        return {key: (names.get(item, item) if key in ("cluster", "cluster_name") and isinstance(item, str)
                      else with_clusters(item, names)) for key, item in value.items()}
    if isinstance(value, list):
        return [with_clusters(item, names) for item in value]
    return value


def http_filter_document(bootstrap: dict[str, Any]) -> dict[str, Any]:
    """``envoy-config --format http-filter``: the pieces an Envoy of your own needs, each as the bootstrap has it —
    the filters to put before its router, the processor's cluster, and the per-route settings of the Responses
    routes (``enable``: the processor and route buffer on; ``upstream_headers``: the headers the processor
    decides) and of every other route (``disable``)."""
    by_name = routes(bootstrap)
    responses = by_name["responses"]
    return {
        "http_filters": bridge_filters(bootstrap),
        "clusters": [processor_cluster(bootstrap)],
        "per_route": {
            "enable": responses["typed_per_filter_config"],
            "upstream_headers": {key: responses[key] for key in ("request_headers_to_add",
                                                                  "request_headers_to_remove") if key in responses},
            "disable": by_name["sidecar"]["typed_per_filter_config"],
        },
    }

