"""``envoy-config --format envoy-gateway``: the bridge behind Envoy Gateway (Gateway API), as the objects a platform
team applies: a ``Backend`` for the LLM upstream, ``HTTPRoute``s for the Responses routes (to the upstream,
translated), Chat Completions (to the upstream) and everything the sidecar serves (to its HTTP door), an
``EnvoyExtensionPolicy`` attaching the processor to the Responses routes, and an ``EnvoyPatchPolicy`` for the
processor settings the policy cannot express.

The policy is derived from the bootstrap's own ext_proc filter (targets.py), field by field
(:func:`extension_policy`); :func:`gateway_translation` is Envoy Gateway's translation of that policy back into
the filter (internal/xds/translator/extproc.go, v1.9.0), and every top-level field where it differs from the
bootstrap's becomes one JSON patch (:func:`patch_policy`). Envoy Gateway sends the request headers whenever a
request phase is configured (the bootstrap skips them) and has no ``max_message_timeout``: those two are patched
today, and whatever a later bootstrap changes is patched the same way, without an edit here.
"""

from __future__ import annotations

from typing import Any

from .names import _TYPE, OWN_CALL_VALUE, ROUTE_HEADER, UpstreamURL
from .targets import Placement, bridge_filters, listener_limits, processor_filter, routes

GATEWAY_API = "gateway.networking.k8s.io/v1"
ENVOY_GATEWAY_API = "gateway.envoyproxy.io/v1alpha1"
POLICY = "responses-bridge"
UPSTREAM_BACKEND = "llm-upstream"
GATEWAY_LISTENER = "http"
"""The Gateway's listener the routes attach to; Envoy Gateway names its xDS listener ``namespace/gateway/listener``,
which the patch policy targets."""

DOOR_HEADER = ("x-responses-bridge-door", "http")
"""A Responses request carrying this header goes to the sidecar's HTTP door, which runs the tool loop (MCP, web
search, code interpreter, context management): the bootstrap's processor sends such requests there itself, through a
route on dynamic metadata that HTTPRoute cannot express. Gateway API's precedence (more header matches win) puts
this route ahead of the processor's."""

_BODY_MODES = {"BUFFERED": "Buffered", "STREAMED": "Streamed", "BUFFERED_PARTIAL": "BufferedPartial",
               "FULL_DUPLEX_STREAMED": "FullDuplexStreamed"}
_MODE_DEFAULTS = {"request_header_mode": "SEND", "response_header_mode": "SEND", "request_body_mode": "NONE",
                  "response_body_mode": "NONE", "request_trailer_mode": "SKIP", "response_trailer_mode": "SKIP"}
"""The ProcessingMode proto's defaults: a field the bootstrap leaves out means this."""


def processing_mode(config: dict[str, Any]) -> dict[str, str]:
    """The filter's processing mode with every field present (the proto's defaults filled in)."""
    return {**_MODE_DEFAULTS, **config.get("processing_mode", {})}


def _phase(mode: dict[str, str], side: str) -> dict[str, Any] | None:
    """Envoy Gateway's ``request`` / ``response`` options: present when the processor sees that phase at all."""
    body = mode[f"{side}_body_mode"]
    if mode[f"{side}_header_mode"] == "SKIP" and body == "NONE":
        return None
    return {"body": _BODY_MODES[body]} if body != "NONE" else {}


def extension_policy(config: dict[str, Any], placement: Placement, route: str) -> dict[str, Any]:
    """The ``EnvoyExtensionPolicy`` closest to the bootstrap's filter ``config`` (its typed_config)."""
    mode = processing_mode(config)
    processing: dict[str, Any] = {}
    for side in ("request", "response"):
        phase = _phase(mode, side)
        if phase is not None:
            processing[side] = phase
    if config.get("allow_mode_override"):
        processing["allowModeOverride"] = True
    ext_proc: dict[str, Any] = {
        "backendRefs": [{"name": placement.service, "port": placement.extproc_port}],
        "processingMode": processing,
        "failOpen": bool(config.get("failure_mode_allow", False)),
    }
    if "message_timeout" in config:
        ext_proc["messageTimeout"] = config["message_timeout"]
    if "status_on_error" in config:
        ext_proc["statusOnError"] = config["status_on_error"]["code"]
    options = config.get("metadata_options", {})
    metadata = {key: options[field]["untyped"] for key, field in (
        ("accessibleNamespaces", "forwarding_namespaces"), ("writableNamespaces", "receiving_namespaces"))
        if field in options}
    if metadata:
        ext_proc["metadata"] = metadata
    return {"apiVersion": ENVOY_GATEWAY_API, "kind": "EnvoyExtensionPolicy",
            "metadata": {"name": POLICY, "namespace": placement.namespace},
            "spec": {"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": route}],
                     "extProc": [ext_proc]}}


def gateway_translation(policy: dict[str, Any]) -> dict[str, Any]:
    """The ext_proc typed_config Envoy Gateway builds from ``policy`` (its extProcConfig and buildProcessingMode),
    in the bootstrap's YAML spelling; the ``grpc_service`` is the gateway's own and left out."""
    [spec] = policy["spec"]["extProc"]
    processing = spec.get("processingMode", {})
    reverse = {value: key for key, value in _BODY_MODES.items()}
    mode = {"request_header_mode": "SKIP", "response_header_mode": "SKIP", "request_body_mode": "NONE",
            "response_body_mode": "NONE", "request_trailer_mode": "SKIP", "response_trailer_mode": "SKIP"}
    for side in ("request", "response"):
        if side not in processing:
            continue
        mode[f"{side}_header_mode"] = "SEND"  # "If present, request headers are sent"
        if "body" in processing[side]:
            mode[f"{side}_body_mode"] = reverse[processing[side]["body"]]
            if processing[side]["body"] == "FullDuplexStreamed":
                mode[f"{side}_trailer_mode"] = "SEND"
    config: dict[str, Any] = {"@type": _TYPE + "envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
                              "processing_mode": mode, "failure_mode_allow": bool(spec.get("failOpen", False))}
    if "messageTimeout" in spec:
        config["message_timeout"] = spec["messageTimeout"]
    metadata = spec.get("metadata", {})
    options = {field: {"untyped": metadata[key]} for key, field in (
        ("accessibleNamespaces", "forwarding_namespaces"), ("writableNamespaces", "receiving_namespaces"))
        if key in metadata}
    if options:
        config["metadata_options"] = options
    if processing.get("allowModeOverride"):
        config["allow_mode_override"] = True
    if "statusOnError" in spec:
        config["status_on_error"] = {"code": spec["statusOnError"]}
    return config


def filter_name(placement: Placement) -> str:
    """The name Envoy Gateway gives the policy's ext_proc filter in the listener."""
    return f"envoy.filters.http.ext_proc/envoyextensionpolicy/{placement.namespace}/{POLICY}/extproc/0"


def comparable(config: dict[str, Any]) -> dict[str, Any]:
    """A filter's typed_config without what each platform sets its own way (where the processor is), and with the
    processing mode's defaults spelt out: two of these are equal when the processor is driven the same."""
    return {**{k: v for k, v in config.items() if k != "grpc_service"}, "processing_mode": processing_mode(config)}


def filters_before(filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The bootstrap's filters ahead of the processor that Envoy Gateway has no API for: identity (the tenant
    header's removal, the jwt_authn example) and the credentials and request context copied into metadata. The
    route-offered mark is left out: the sidecar route it announces needs a dynamic-metadata route match, which
    HTTPRoute cannot express (docs/kubernetes.md)."""
    processor = filters.index(processor_filter(filters))
    return [f for f in filters[:processor] if f["name"] != "envoy.filters.http.set_metadata"]


ROUTE_HEADER_FIELDS = ("request_headers_to_add", "request_headers_to_remove")
"""A Responses route's header settings in the bootstrap: the headers the processor decides (left in metadata, set
when the router builds the upstream call) and, with ``auth: keys``, the client's Authorization removed. An
HTTPRoute's header modifier cannot take a value from dynamic metadata: the patch policy sets them."""


def patch_policy(config: dict[str, Any], policy: dict[str, Any], placement: Placement,
                 before: list[dict[str, Any]] | None = None, route: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``EnvoyPatchPolicy`` that makes Envoy Gateway's filter equal the bootstrap's: one JSON patch per
    top-level field the translation of ``policy`` gets wrong or leaves out, the filters ``before`` put first in
    the chain, and the bootstrap's Responses ``route``'s header settings on the policy's routes (Envoy Gateway must
    run with ``extensionApis.enableEnvoyPatchPolicy: true``)."""
    want, got = comparable(config), comparable(gateway_translation(policy))
    listener = {"type": _TYPE + "envoy.config.listener.v3.Listener",
                "name": f"{placement.namespace}/{placement.gateway}/{GATEWAY_LISTENER}"}
    selector = f"..http_filters[?@.name == '{filter_name(placement)}']"
    patches = [{**listener, "operation": {"op": "add", "jsonPath": selector, "path": f"/typed_config/{key}",
                                          "value": value}}
               for key, value in want.items() if got.get(key) != value]
    # each added at the front of the chain, the last first: they end up in the bootstrap's order, ahead of all
    patches += [{**listener, "operation": {"op": "add", "jsonPath": "..http_filters", "path": "/0",
                                           "value": http_filter}} for http_filter in reversed(before or [])]
    [target] = policy["spec"]["targetRefs"]
    routes = f"..routes[?match(@.name, 'httproute/{placement.namespace}/{target['name']}/rule/[0-9]+/match/.*')]"
    patches += [{"type": _TYPE + "envoy.config.route.v3.RouteConfiguration", "name": listener["name"],
                 "operation": {"op": "add", "jsonPath": routes, "path": f"/{key}", "value": (route or {})[key]}}
                for key in ROUTE_HEADER_FIELDS if key in (route or {})]
    removed = [key for key in got if key not in want]
    if removed:
        raise ValueError(f"Envoy Gateway would set {removed}, which the bootstrap's processor filter does not")
    return {"apiVersion": ENVOY_GATEWAY_API, "kind": "EnvoyPatchPolicy",
            "metadata": {"name": f"{POLICY}-ext-proc", "namespace": placement.namespace},
            "spec": {"type": "JSONPatch", "targetRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                                         "name": placement.gateway},
                     "jsonPatches": patches}}


def apply_patches(config: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """``config`` (a translated typed_config) with the patch policy's operations applied, as Envoy Gateway applies
    them to the selected filter: each is an ``add`` of one top-level field of its typed_config."""
    result = dict(config)
    for entry in patch["spec"]["jsonPatches"]:
        operation = entry["operation"]
        if operation["jsonPath"] == "..http_filters" or not entry["type"].endswith(".Listener"):
            continue  # a filter put ahead of the processor, or a route's settings: not a field of it
        prefix = "/typed_config/"
        if operation["op"] != "add" or not operation["path"].startswith(prefix) or "/" in operation["path"][
                len(prefix):]:
            raise ValueError(f"not a top-level add: {operation}")
        result[operation["path"][len(prefix):]] = operation["value"]
    return result


def _backend(up: UpstreamURL, placement: Placement) -> dict[str, Any]:
    endpoint = ({"ip": {"address": up.host, "port": up.port}} if up.is_ip
                else {"fqdn": {"hostname": up.host, "port": up.port}})
    spec: dict[str, Any] = {"endpoints": [endpoint]}
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


def envoy_gateway_objects(bootstrap: dict[str, Any], upstream: str, placement: Placement) -> list[dict[str, Any]]:
    """Every object of the Envoy Gateway rendering, from the bootstrap rendered with the same settings."""
    up = UpstreamURL(upstream)
    filters = bridge_filters(bootstrap)
    config = processor_filter(filters)["typed_config"]
    responses_route = f"{POLICY}-responses"
    policy = extension_policy(config, placement, responses_route)
    door = [{"name": placement.service, "port": placement.http_port}]
    sidecar = {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}], "backendRefs": door,
               "timeouts": {"request": "0s"}}
    tool_loop = {"matches": [{"path": {"type": "Exact", "value": path}, "method": "POST",
                              "headers": [{"type": "Exact", "name": DOOR_HEADER[0], "value": DOOR_HEADER[1]}]}
                             for path in ("/v1/responses", "/responses")],
                 "backendRefs": door, "timeouts": {"request": "0s"}}
    return [
        _backend(up, placement),
        _route(responses_route, placement, [_to_upstream(up, ("/v1/responses", "/responses"), "chat/completions")]),
        # Chat Completions pass through; the sidecar's own model list and embeddings calls reach the upstream
        _route(f"{POLICY}-passthrough", placement, [
            _to_upstream(up, ("/v1/chat/completions", "/chat/completions"), "chat/completions"),
            _to_upstream(up, ("/v1/models",), "models", method="GET", own_call=True),
            _to_upstream(up, ("/v1/embeddings",), "embeddings", own_call=True),
            _to_upstream(up, ("/v1/images/generations",), "images/generations")]),
        # stored responses, conversations, files, vector stores, containers, models, WebSocket, health: the door's
        _route(f"{POLICY}-sidecar", placement, [tool_loop, sidecar]),
        policy,
        _client_traffic_policy(bootstrap, placement),
        patch_policy(config, policy, placement, filters_before(filters), routes(bootstrap)["responses"]),
    ]
