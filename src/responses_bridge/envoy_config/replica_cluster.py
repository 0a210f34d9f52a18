"""The cluster of an upstream with several replicas: every replica an endpoint of the upstream's one cluster, and
the replica the sidecar picked (replicas/: the one holding the chain's prefix in its cache, balanced by load)
honoured by Envoy, which still makes the call.

How Envoy honours the pick: the processor names the replica under ``x-gateway-destination-endpoint`` in dynamic
metadata, the HTTP door on its own calls through Envoy in that header (names.DESTINATION_ENDPOINT_HEADER,
``ip:port``, the Gateway API Inference Extension's header), and the cluster's load balancer is Envoy's
``override_host`` policy reading the one, then the other: the named endpoint when it is one of the cluster's own,
else (none named, a name that is no endpoint of this upstream) the fallback policy, least request. The Inference
Extension's plain-Envoy example reads the same header with an ``ORIGINAL_DST`` cluster instead; that cluster
connects to whatever address the header names, so a request whose header the processor did not set (a passthrough
route it never sees, a client's own header) would make Envoy an open proxy to any address, and one without the
header would be sent back to the listener's own address. ``override_host`` keeps the pick within the upstream's
replicas and gives a request without one a balanced replica.

Everything else is the single-URL cluster's (clusters.py): its name (so its stats and every route keep theirs), its
connect timeout, buffers, protocol options and circuit breakers. The routes keep the same cluster, path rewrite, host
rewrite and ``timeout: 0s``, and add one retry of a call that reached no replica (:data:`RETRY_BEFORE_SENDING`, on
the next replica named) and the means to learn which replica answered (:func:`with_replica_routes`).

Replicas are given as several URLs (``urls``, ``--upstream`` repeated: one endpoint each; a host name resolved by
Envoy, ``STRICT_DNS``), or as one DNS name standing for all its addresses (a Kubernetes headless Service,
``discover: dns``): ``STRICT_DNS`` makes every address an endpoint and re-resolves it every ``dns_refresh_seconds``,
as the sidecar's own discovery does, so both see the same replicas.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from .clusters import DEFAULT_CONNECT, _upstream_cluster
from .names import (
    _EXT_PROC,
    _TYPE,
    DESTINATION_ENDPOINT_HEADER,
    INTERNAL_LISTENER,
    OWN_CALL_VALUE,
    REPLICA_ANSWERED_HEADER,
    ROUTE_HEADER,
    UPSTREAM_HEADERS_NAMESPACE,
    UpstreamURL,
    _socket,
)
from .timeouts import duration

_LB = _TYPE + "envoy.extensions.load_balancing_policies."


def picked_endpoint_policy() -> dict[str, Any]:
    """The cluster's ``load_balancing_policy``: the endpoint the sidecar picked when it is one of the cluster's, else
    least request (Envoy's ``override_host`` with a fallback policy). The processor names it in dynamic metadata
    (``UPSTREAM_HEADERS_NAMESPACE``, under the header's name), as it leaves every header of the translated call
    there: Envoy applies no header mutation from the body phase when the request headers were skipped
    (filters.py). The HTTP door's own calls through Envoy (``upstream_via``) name it in the header itself."""
    fallback = {"name": "envoy.load_balancing_policies.least_request",
                "typed_config": {"@type": _LB + "least_request.v3.LeastRequest"}}
    return {"policies": [{"typed_extension_config": {
        "name": "envoy.load_balancing_policies.override_host",
        "typed_config": {"@type": _LB + "override_host.v3.OverrideHost",
                         "override_host_sources": [
                             {"metadata": {"key": UPSTREAM_HEADERS_NAMESPACE,
                                           "path": [{"key": DESTINATION_ENDPOINT_HEADER}]}},
                             {"header": DESTINATION_ENDPOINT_HEADER}],
                         "fallback_policy": {"policies": [{"typed_extension_config": fallback}]}}}}]}


def replica_urls(urls: Sequence[str]) -> list[UpstreamURL]:
    """The replicas' URLs, parsed; ValueError unless they agree on what one upstream must be the same on: the
    scheme (one cluster has one transport) and the base path (the routes rewrite to one)."""
    parsed = [UpstreamURL(url) for url in urls]
    first = parsed[0]
    for up in parsed[1:]:
        if up.tls != first.tls or up.base_path != first.base_path:
            raise ValueError(f"the replicas of one upstream share their scheme and path: {first.url} and {up.url} "
                             "differ")
    if first.tls and len({up.host for up in parsed if not up.is_ip}) > 1:  # one cluster sends one SNI
        raise ValueError("https replicas of one upstream are addresses or share one host name: "
                         + ", ".join(up.url for up in parsed))
    return parsed


def replicas_cluster(urls: Sequence[str], ca_file: str | None, name: str, *, connect: float = DEFAULT_CONNECT,
                     discover_dns: bool = False, dns_refresh: float | None = None) -> dict[str, Any]:
    """The upstream cluster ``name`` of the replicas at ``urls`` (several; or one name with ``discover_dns``, whose
    every address is a replica, re-resolved each ``dns_refresh`` seconds)."""
    parsed = replica_urls(urls)
    first = parsed[0]
    cluster = _upstream_cluster(first, ca_file, name, connect=connect)
    dns = any(not up.is_ip for up in parsed)
    cluster["type"] = "STRICT_DNS" if dns else "STATIC"
    if not dns:
        cluster.pop("dns_lookup_family", None)
    else:
        cluster["dns_lookup_family"] = "V4_PREFERRED"
        if discover_dns and dns_refresh is not None:
            # the sidecar re-resolves on the same period (replicas/): neither keeps a replica the other dropped
            cluster["dns_refresh_rate"] = duration(dns_refresh)
    cluster["load_assignment"]["endpoints"] = [{"lb_endpoints": [
        {"endpoint": {"address": _socket(up.host, up.port)}} for up in parsed]}]
    cluster["load_balancing_policy"] = picked_endpoint_policy()
    if first.tls:  # every replica's certificate names its own address, or the one host name they share
        validation = cluster["transport_socket"]["typed_config"]["common_tls_context"]["validation_context"]
        hosts = {up.host: up.is_ip for up in parsed}
        validation["match_typed_subject_alt_names"] = [
            {"san_type": "IP_ADDRESS" if is_ip else "DNS", "matcher": {"exact": host}} for host, is_ip in hosts.items()]
    return cluster



UPSTREAM_ADDRESS = "upstream.address"
"""The Envoy attribute the processor gets with an answer's headers on a replicated upstream's routes: the replica
that actually answered (``ip:port``), which differs from the one it named when Envoy retried elsewhere."""

RETRY_BEFORE_SENDING = {"retry_on": "connect-failure,refused-stream,reset-before-request", "num_retries": 1}
"""A replicated upstream's routes retry a call once, on the next replica the processor named, when nothing of it
reached the first: a refused connection, a refused stream, a reset before the request went out. As the HTTP door's
own calls do (adapters/replicated_client.py): nothing is made twice, and a killed replica costs no client an error.
Anything later (the replica failed while answering) is the client's answer, as with one URL."""


def with_replica_routes(listeners: list[dict[str, Any]], replicated: set[str]) -> list[dict[str, Any]]:
    """``listeners`` with every route to a cluster in ``replicated`` retrying a call that reached no replica
    (:data:`RETRY_BEFORE_SENDING`), and the processor of every route it sees the answers of told which replica
    answered (:data:`UPSTREAM_ADDRESS`, a per-route ``response_attributes`` override). With several upstreams the
    processor's routes are the generic ones until it names the upstream, so they all carry it. The HTTP door's own
    calls (``upstream_via``) are told too, in a header of the answer (:func:`_tells_replica`). No replicas:
    ``listeners`` as they are."""
    if not replicated:
        return listeners
    names = [listener["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["name"]
             for listener in listeners]
    several = INTERNAL_LISTENER in names  # several upstreams: the door's own calls take the internal listener
    for listener, name in zip(listeners, names, strict=True):
        config = listener["filter_chains"][0]["filters"][0]["typed_config"]
        internal = name == INTERNAL_LISTENER
        for host in config["route_config"]["virtual_hosts"]:
            own = [] if several or internal else [
                _own_chat_route(route) for route in host["routes"]
                if route.get("name") == "chat_completions" and route["route"].get("cluster") in replicated]
            if own:  # one upstream: the door's own chat calls on a route of their own, just before the clients'
                at = next(index for index, route in enumerate(host["routes"])
                          if route.get("name") == "chat_completions")
                host["routes"][at:at] = own
            for route in host["routes"]:
                action = route.get("route", {})
                if action.get("cluster") in replicated:
                    action["retry_policy"] = dict(RETRY_BEFORE_SENDING)
                    if internal:
                        _tells_replica(route)
                per_route = route.get("typed_per_filter_config", {}).get(_EXT_PROC, {})
                overrides = per_route.get("config", {}).get("overrides")
                if overrides is not None and not per_route.get("disabled") and _sees_answers(overrides):
                    overrides["response_attributes"] = [UPSTREAM_ADDRESS]
    return listeners


def _tells_replica(route: dict[str, Any]) -> dict[str, Any]:
    """``route``'s answers name the replica that answered (:data:`~.names.REPLICA_ANSWERED_HEADER`, Envoy's
    ``%UPSTREAM_HOST%``): the HTTP door's own calls learn where Envoy's retry moved a call, as the processor learns it
    from :data:`UPSTREAM_ADDRESS`. Only on routes only the sidecar's own calls take: a client is not told the
    replicas' addresses."""
    route.setdefault("response_headers_to_add", []).append({
        "header": {"key": REPLICA_ANSWERED_HEADER, "value": "%UPSTREAM_HOST%"},
        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"})
    return route


def _own_chat_route(route: dict[str, Any]) -> dict[str, Any]:
    """The one-upstream ``chat_completions`` route for the HTTP door's own calls through Envoy: the same route (the
    processor sees them as before, and leaves the replica they name), matched on the upstream's name in
    ``ROUTE_HEADER`` (the door sends it; envoy-config's route config removes it before the upstream), its answers
    naming the replica that answered."""
    own = copy.deepcopy(route)
    own["name"] = "chat_completions_own"
    own["match"]["headers"] = [*own["match"].get("headers", []),
                               {"name": ROUTE_HEADER, "string_match": {"exact": OWN_CALL_VALUE}}]
    return _tells_replica(own)


def _sees_answers(overrides: dict[str, Any]) -> bool:
    """Does the route's processor see the answer's headers (the filter's default, or its own mode)?"""
    return overrides.get("processing_mode", {}).get("response_header_mode", "SEND") != "SKIP"
