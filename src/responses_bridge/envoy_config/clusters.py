"""The clusters: the upstream LLM cluster(s), the processor's gRPC cluster and the sidecar's HTTP door.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from .names import (
    _TYPE,
    BUFFER_LIMIT_BYTES,
    CA_BUNDLES,
    EXTPROC_CLUSTER,
    EXTPROC_SERVICE,
    FILES_BUFFER_BYTES,
    FILES_CLUSTER,
    HTTP_CLUSTER,
    UPSTREAM_CLUSTER,
    UpstreamURL,
    _is_ip,
    _socket,
)
from .timeouts import EnvoyTimeouts, duration

if TYPE_CHECKING:
    pass

DEFAULT_CONNECT = EnvoyTimeouts().connect
DEFAULT_DOOR_IDLE = EnvoyTimeouts().door_idle


def _cluster_base(name: str, address: str, port: int, *, dns: bool, connect: float) -> dict[str, Any]:
    """``connect``: seconds to connect (``envoy_connect_timeout``)."""
    return {
        "name": name,
        "type": "STRICT_DNS" if dns else "STATIC",
        **({"dns_lookup_family": "V4_PREFERRED"} if dns else {}),  # the resolver's TTLs apply (Envoy 1.40)
        "connect_timeout": duration(connect),
        "per_connection_buffer_limit_bytes": BUFFER_LIMIT_BYTES,
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": _socket(address, port)}},
        ]}]},
    }


def _http_protocol_options(http2: bool = False, idle: float | None = None) -> dict[str, Any]:
    """``idle``: seconds Envoy keeps an unused connection of the pool (Envoy's default: an hour)."""
    explicit: dict[str, Any] = {"http2_protocol_options": {}} if http2 else {"http_protocol_options": {}}
    return {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": _TYPE + "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        **({"common_http_protocol_options": {"idle_timeout": duration(idle)}} if idle is not None else {}),
        "explicit_http_config": explicit,
    }}


def circuit_breakers(requests: int) -> dict[str, Any]:
    """Envoy's circuit breakers of one cluster at ``requests`` (``envoy_max_requests``): requests in flight,
    requests waiting for a connection, connections. Envoy's defaults (1,024 each) answer the 1,025th concurrent
    stream an immediate 503, which an LLM gateway holding thousands of long streams must not."""
    return {"thresholds": [{"priority": "DEFAULT", "max_connections": requests, "max_pending_requests": requests,
                            "max_requests": requests}]}


def with_circuit_breakers(clusters: list[dict[str, Any]], requests: int) -> list[dict[str, Any]]:
    for cluster in clusters:
        cluster["circuit_breakers"] = circuit_breakers(requests)
    return clusters


def _upstream_cluster(up: UpstreamURL, ca_file: str | None, name: str = UPSTREAM_CLUSTER, *,
                      connect: float = DEFAULT_CONNECT) -> dict[str, Any]:
    cluster = _cluster_base(name, up.host, up.port, dns=not up.is_ip, connect=connect)
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


def _extproc_cluster(address: str, port: int, *, uds: str | None = None, workers: int = 1,
                     connect: float = DEFAULT_CONNECT) -> dict[str, Any]:
    """The processor: one endpoint per worker of ``serve --workers`` (ports from ``port`` up, or the Unix sockets
    ``uds``, ``uds.1``, …), so Envoy opens a connection to each and spreads the requests' gRPC streams over them
    (least requests): a single endpoint would carry every stream on one HTTP/2 connection to one worker."""
    cluster = _cluster_base(EXTPROC_CLUSTER, address, port, dns=not _is_ip(address) and uds is None, connect=connect)
    if uds is not None:
        endpoints = [{"pipe": {"path": uds if index == 0 else f"{uds}.{index}"}} for index in range(workers)]
    else:
        endpoints = [_socket(address, port + index) for index in range(workers)]
    cluster["load_assignment"]["endpoints"] = [{"lb_endpoints": [{"endpoint": {"address": endpoint}}
                                                                 for endpoint in endpoints]}]
    if workers > 1:
        cluster["lb_policy"] = "LEAST_REQUEST"
    cluster["typed_extension_protocol_options"] = _http_protocol_options(http2=True)
    cluster["health_checks"] = [_health_check({"grpc_health_check": {"service_name": EXTPROC_SERVICE}})]
    return cluster


def _http_cluster(address: str, port: int, *, connect: float = DEFAULT_CONNECT,
                  idle: float = DEFAULT_DOOR_IDLE) -> dict[str, Any]:
    """``idle``: under the door's keep-alive timeout (timeouts.py ``door_idle``)."""
    cluster = _cluster_base(HTTP_CLUSTER, address, port, dns=not _is_ip(address), connect=connect)
    cluster["typed_extension_protocol_options"] = _http_protocol_options(idle=idle)
    cluster["health_checks"] = [_health_check({"http_health_check": {"path": "/health"}})]
    return cluster


def _files_cluster(address: str, port: int, *, connect: float = DEFAULT_CONNECT,
                   idle: float = DEFAULT_DOOR_IDLE) -> dict[str, Any]:
    """The HTTP door again, for uploads: a connection buffer of 1 MiB instead of the 65 MiB the other routes need
    for whole Responses bodies, so Envoy holds about that much of an upload whose client sends faster than the
    door writes to disk, not up to 65 MiB of it per upload. No health check of its own: the door is the one the
    ``sidecar`` cluster checks."""
    cluster = _cluster_base(FILES_CLUSTER, address, port, dns=not _is_ip(address), connect=connect)
    cluster["per_connection_buffer_limit_bytes"] = FILES_BUFFER_BYTES
    cluster["typed_extension_protocol_options"] = _http_protocol_options(idle=idle)
    return cluster


def _health_check(kind: dict[str, Any]) -> dict[str, Any]:
    return {"timeout": "1s", "interval": "2s", "no_traffic_interval": "5s", "unhealthy_threshold": 2,
            "healthy_threshold": 1, **kind}
