"""``envoy-config --format envoy-gateway``: the bridge behind Envoy Gateway (Gateway API), as the objects a platform
team applies: a ``Backend`` for the LLM upstream; an ``HTTPRoute`` per processor setting the bootstrap's routes to
the upstream use (the Responses routes, translated; Chat Completions; the bridge's own model-list, embeddings and
images calls), each with the ``EnvoyExtensionPolicy`` that attaches the processor as the bootstrap's route does;
an ``HTTPRoute`` for everything the sidecar serves (its HTTP door); a ``ClientTrafficPolicy`` with the bootstrap's
listener limits; and one ``EnvoyPatchPolicy`` for what the policies cannot express (envoy_gateway_policy.py).

Everything is taken from the bootstrap rendered with the same settings (targets.py): its processor filter, its
routes' per-route settings, its listener's limits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .envoy_gateway_policy import (
    ENVOY_GATEWAY_API,
    GATEWAY_LISTENER,
    extension_policy,
    filter_insert_patches,
    filter_patches,
    filters_before,
    patch_policy,
    route_header_patches,
    route_processor,
)
from .names import DESTINATION_ENDPOINT_HEADER, DOOR_HEADER, OWN_CALL_VALUE, ROUTE_HEADER, VIA_DOOR, UpstreamURL
from .replica_cluster import RETRY_BEFORE_SENDING, replica_urls
from .targets import Placement, bridge_filters, listener_limits, processor_filter, routes

GATEWAY_API = "gateway.networking.k8s.io/v1"
POLICY = "responses-bridge"
UPSTREAM_BACKEND = "llm-upstream"



def _backend(up: UpstreamURL, placement: Placement, replicas: Sequence[UpstreamURL] = ()) -> dict[str, Any]:
    """The upstream as a ``Backend``: its one server, or each of its ``replicas`` (an endpoint each)."""
    spec: dict[str, Any] = {"endpoints": [
        {"ip": {"address": each.host, "port": each.port}} if each.is_ip
        else {"fqdn": {"hostname": each.host, "port": each.port}} for each in (replicas or (up,))]}
    if up.tls:
        spec["tls"] = {"wellKnownCACertificates": "System", **({} if up.is_ip else {"sni": up.host})}
    return {"apiVersion": ENVOY_GATEWAY_API, "kind": "Backend",
            "metadata": {"name": UPSTREAM_BACKEND, "namespace": placement.namespace}, "spec": spec}


def _route(name: str, placement: Placement, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": GATEWAY_API, "kind": "HTTPRoute",
            "metadata": {"name": name, "namespace": placement.namespace},
            "spec": {"parentRefs": [{"name": placement.gateway, "sectionName": GATEWAY_LISTENER}], "rules": rules}}


def _to_upstream(up: UpstreamURL, paths: tuple[str, ...], target: str, method: str = "POST",
                 own_call: bool = False) -> dict[str, Any]:
    """One rule: a ``method`` request to any of ``paths`` goes to the upstream's ``target`` (under its base path);
    ``own_call``: only the sidecar's own (``--upstream-via``, marked with ``ROUTE_HEADER``), and the mark stays
    here."""
    mark = [{"type": "Exact", "name": ROUTE_HEADER, "value": OWN_CALL_VALUE}] if own_call else []
    return {
        "matches": [{"path": {"type": "Exact", "value": path}, "method": method, **({"headers": mark} if mark else {})}
                    for path in paths],
        "filters": [*([{"type": "RequestHeaderModifier", "requestHeaderModifier": {"remove": [ROUTE_HEADER]}}]
                      if own_call else []), {"type": "URLRewrite", "urlRewrite": {
                          **({} if up.is_ip else {"hostname": up.host}),
                          "path": {"type": "ReplaceFullPath", "replaceFullPath": f"{up.base_path}/{target}"}}}],
        "backendRefs": [{"group": "gateway.envoyproxy.io", "kind": "Backend", "name": UPSTREAM_BACKEND}],
        "timeouts": {"request": "0s"},  # LLM streams last minutes; Envoy's idle timeout still ends a silent one
    }


def _client_traffic_policy(bootstrap: dict[str, Any], placement: Placement) -> dict[str, Any]:
    """The bootstrap's listener limits on the Gateway's: a connection buffer that holds a whole Responses request
    while the processor reads it (Envoy Gateway's default, 32 KiB, would refuse most with 413), and the longest
    silence a stream may have."""
    limits = listener_limits(bootstrap)
    buffer = limits["per_connection_buffer_limit_bytes"]
    return {"apiVersion": ENVOY_GATEWAY_API, "kind": "ClientTrafficPolicy",
            "metadata": {"name": POLICY, "namespace": placement.namespace},
            "spec": {"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                     "name": placement.gateway}],
                     "connection": {"bufferLimit": f"{buffer // 2**20}Mi" if buffer % 2**20 == 0 else str(buffer)},
                     "timeout": {"http": {"streamIdleTimeout": limits["stream_idle_timeout"]}}}}


def _upstream_routes(up: UpstreamURL) -> list[tuple[str, tuple[str, ...], list[dict[str, Any]]]]:
    """(HTTPRoute, the bootstrap's routes it stands for, its rules): one HTTPRoute per processor setting, since a
    policy attaches to a whole HTTPRoute."""
    return [
        (f"{POLICY}-responses", ("responses", "responses_unversioned"),
         [_to_upstream(up, ("/v1/responses", "/responses"), "chat/completions")]),
        (f"{POLICY}-chat-completions", ("chat_completions",),
         [_to_upstream(up, ("/v1/chat/completions",), "chat/completions")]),
        # the sidecar's own model list and embeddings calls, and the image generation tool's (a client's too)
        (f"{POLICY}-upstream", ("models", "embeddings", "images_generations"),
         [_to_upstream(up, ("/v1/models",), "models", method="GET", own_call=True),
          _to_upstream(up, ("/v1/embeddings",), "embeddings", own_call=True),
          _to_upstream(up, ("/v1/images/generations",), "images/generations")]),
    ]


def _replica_policy(placement: Placement, httproutes: Sequence[str]) -> dict[str, Any]:
    """Replicas: the upstream routes' clusters send each request to the replica the processor names in
    ``x-gateway-destination-endpoint`` when it is one of the Backend's (Envoy's ``override_host``, as the bootstrap's
    cluster: replica_cluster.py), else to the least loaded. Envoy Gateway sends the processor the request headers,
    so the processor's header mutation reaches the load balancer here."""
    return {"apiVersion": ENVOY_GATEWAY_API, "kind": "BackendTrafficPolicy",
            "metadata": {"name": f"{POLICY}-replicas", "namespace": placement.namespace},
            "spec": {"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": name}
                                    for name in httproutes],
                     "loadBalancer": {"type": "LeastRequest", "endpointOverride": {
                         "extractFrom": [{"header": DESTINATION_ENDPOINT_HEADER}]}},
                     # a call that reached no replica, once more on the next one named (RETRY_BEFORE_SENDING)
                     "retry": {"numRetries": RETRY_BEFORE_SENDING["num_retries"], "retryOn": {
                         "triggers": str(RETRY_BEFORE_SENDING["retry_on"]).split(",")}}}}


def envoy_gateway_objects(bootstrap: dict[str, Any], upstream: str, placement: Placement,
                          upstream_urls: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Every object of the Envoy Gateway rendering, from the bootstrap rendered with the same settings;
    ``upstream_urls``: the upstream's replicas, when several."""
    replicas = replica_urls(upstream_urls) if len(upstream_urls) > 1 else []
    up = replicas[0] if replicas else UpstreamURL(upstream)
    filters = bridge_filters(bootstrap)
    config = processor_filter(filters)["typed_config"]
    by_name = routes(bootstrap)
    objects: list[dict[str, Any]] = [_backend(up, placement, replicas)]
    policies: list[dict[str, Any]] = []
    patches: list[dict[str, Any]] = []
    for name, stands_for, rules in _upstream_routes(up):
        settings = {route: route_processor(config, by_name[route]) for route in stands_for}
        if len({repr(s) for s in settings.values()}) != 1:
            raise ValueError(f"the bootstrap's routes {sorted(settings)} differ in processor settings")
        objects.append(_route(name, placement, rules))
        processor = settings[stands_for[0]]
        if processor is not None:
            policy = extension_policy(processor, placement, name, name)
            policies.append(policy)
            patches += filter_patches(processor, policy, placement)
        patches += route_header_patches(by_name[stands_for[0]], name, placement)
    door = [{"name": placement.service, "port": placement.http_port}]
    tool_loop = {"matches": [{"path": {"type": "Exact", "value": path}, "method": "POST",
                              "headers": [{"type": "Exact", "name": DOOR_HEADER[0], "value": DOOR_HEADER[1]}]}
                             for path in ("/v1/responses", "/responses")],
                 "backendRefs": door, "timeouts": {"request": "0s"}, "filters": [_via()]}
    sidecar = {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}], "backendRefs": door,
               "timeouts": {"request": "0s"}, "filters": [_via()]}
    # stored responses, conversations, files, vector stores, containers, models, WebSocket, health: the door's
    objects.append(_route(f"{POLICY}-sidecar", placement, [tool_loop, sidecar]))
    patches += filter_insert_patches(filters_before(filters), placement)
    if replicas:
        policies.append(_replica_policy(placement, [name for name, _, _ in _upstream_routes(up)]))
    return [*objects, *policies, _client_traffic_policy(bootstrap, placement),
            patch_policy(f"{POLICY}-ext-proc", patches, placement)]


def _via() -> dict[str, Any]:
    """``Via`` on what goes to the door, as the bootstrap's routes add it (names.VIA_DOOR: the door without keys
    answers what a gateway forwarded under any ``Host``)."""
    return {"type": "RequestHeaderModifier", "requestHeaderModifier": {"add": [{"name": "Via", "value": VIA_DOOR}]}}
