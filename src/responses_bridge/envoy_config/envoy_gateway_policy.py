"""The bootstrap's processor settings as Envoy Gateway's ``EnvoyExtensionPolicy``, and back.

:func:`extension_policy` maps a bootstrap ext_proc config (the filter's, with a route's overrides applied:
:func:`route_processor`) field by field; :func:`gateway_translation` is Envoy Gateway's translation of a policy into
the filter it runs (internal/xds/translator/extproc.go, v1.9.0); every top-level field where the two differ
becomes one JSON patch of an ``EnvoyPatchPolicy`` (:func:`filter_patches`). Envoy Gateway sends the request headers
whenever a request phase is configured, the response headers whenever a response phase is, and has no
``max_message_timeout``: those are patched today, and whatever a later bootstrap changes is patched the same way,
without an edit here.
"""

from __future__ import annotations

from typing import Any

from .names import _EXT_PROC, _TYPE
from .targets import Placement, processor_filter

ENVOY_GATEWAY_API = "gateway.envoyproxy.io/v1alpha1"
GATEWAY_LISTENER = "http"
"""The Gateway's listener the routes attach to; Envoy Gateway names its xDS listener and route configuration
``namespace/gateway/listener``, which the patches target."""

_BODY_MODES = {"BUFFERED": "Buffered", "STREAMED": "Streamed", "BUFFERED_PARTIAL": "BufferedPartial",
               "FULL_DUPLEX_STREAMED": "FullDuplexStreamed"}
_MODE_DEFAULTS = {"request_header_mode": "SEND", "response_header_mode": "SEND", "request_body_mode": "NONE",
                  "response_body_mode": "NONE", "request_trailer_mode": "SKIP", "response_trailer_mode": "SKIP"}
"""The ProcessingMode proto's defaults: a field the bootstrap leaves out means this."""

ROUTE_HEADER_FIELDS = ("request_headers_to_add", "request_headers_to_remove")
"""A bootstrap route's header settings: on the Responses routes, the headers the processor decides (left in
metadata, set when the router builds the upstream call) and, with ``auth: keys``, the client's Authorization
removed. An HTTPRoute's header modifier cannot take a value from dynamic metadata: the patch policy sets them."""


def processing_mode(config: dict[str, Any]) -> dict[str, str]:
    """The filter's processing mode with every field present (the proto's defaults filled in)."""
    return {**_MODE_DEFAULTS, **config.get("processing_mode", {})}


def route_processor(config: dict[str, Any], route: dict[str, Any]) -> dict[str, Any] | None:
    """The processor settings a bootstrap ``route`` runs with: None where the processor is off there, else the
    filter's ``config`` with the route's overrides (its processing mode). An override this cannot carry over (the
    models list's hands-off gRPC metadata) is refused, not dropped."""
    per_route = route.get("typed_per_filter_config", {}).get(_EXT_PROC)
    if per_route is None or per_route.get("disabled", False):
        return None
    overrides = dict(per_route.get("config", {}).get("overrides", {}))
    mode = overrides.pop("processing_mode", None)
    # a replicated upstream's routes tell the processor which replica answered (replica_cluster.py)
    attributes = overrides.pop("response_attributes", None)
    if overrides:
        raise ValueError(f"route {route['name']}: processor overrides {sorted(overrides)} have no Envoy Gateway form")
    return {**config, **({"processing_mode": mode} if mode is not None else {}),
            **({"response_attributes": attributes} if attributes is not None else {})}


def _phase(mode: dict[str, str], side: str) -> dict[str, Any] | None:
    """Envoy Gateway's ``request`` / ``response`` options: present when the processor sees that phase at all."""
    body = mode[f"{side}_body_mode"]
    if mode[f"{side}_header_mode"] == "SKIP" and body == "NONE":
        return None
    return {"body": _BODY_MODES[body]} if body != "NONE" else {}


def extension_policy(config: dict[str, Any], placement: Placement, name: str, route: str) -> dict[str, Any]:
    """The ``EnvoyExtensionPolicy`` ``name`` closest to the processor settings ``config``, on HTTPRoute ``route``."""
    mode = processing_mode(config)
    processing: dict[str, Any] = {}
    for side in ("request", "response"):
        phase = _phase(mode, side)
        if phase is not None:
            processing[side] = phase
    if "response_attributes" in config:
        processing.setdefault("response", {})["attributes"] = list(config["response_attributes"])
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
            "metadata": {"name": name, "namespace": placement.namespace},
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
    if processing.get("response", {}).get("attributes"):
        config["response_attributes"] = list(processing["response"]["attributes"])
    if "statusOnError" in spec:
        config["status_on_error"] = {"code": spec["statusOnError"]}
    return config


def filter_name(placement: Placement, policy: str) -> str:
    """The name Envoy Gateway gives a policy's ext_proc filter in the listener."""
    return f"{_EXT_PROC}/envoyextensionpolicy/{placement.namespace}/{policy}/extproc/0"


def comparable(config: dict[str, Any]) -> dict[str, Any]:
    """A filter's typed_config without what each platform sets its own way (where the processor is), and with the
    processing mode's and ``failure_mode_allow``'s defaults spelt out: two of these are equal when the processor
    is driven the same."""
    return {"failure_mode_allow": False, **{k: v for k, v in config.items() if k != "grpc_service"},
            "processing_mode": processing_mode(config)}


def filters_before(filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The bootstrap's filters ahead of the processor that Envoy Gateway has no API for: identity (the tenant
    header's removal, the jwt_authn example) and the credentials and request context copied into metadata. The
    route-offered mark is left out: the sidecar route it announces needs a dynamic-metadata route match, which
    HTTPRoute cannot express (docs/kubernetes.md)."""
    processor = filters.index(processor_filter(filters))
    return [f for f in filters[:processor] if f["name"] != "envoy.filters.http.set_metadata"]


def _target(placement: Placement, kind: str) -> dict[str, str]:
    return {"type": _TYPE + kind, "name": f"{placement.namespace}/{placement.gateway}/{GATEWAY_LISTENER}"}


def filter_patches(config: dict[str, Any], policy: dict[str, Any], placement: Placement) -> list[dict[str, Any]]:
    """One JSON patch per top-level field of ``config`` that Envoy Gateway's translation of ``policy`` gets wrong
    or leaves out, on that policy's filter."""
    want, got = comparable(config), comparable(gateway_translation(policy))
    removed = [key for key in got if key not in want]
    if removed:
        raise ValueError(f"Envoy Gateway would set {removed}, which the bootstrap's processor filter does not")
    selector = f"..http_filters[?@.name == '{filter_name(placement, policy['metadata']['name'])}']"
    return [{**_target(placement, "envoy.config.listener.v3.Listener"), "operation": {
        "op": "add", "jsonPath": selector, "path": f"/typed_config/{key}", "value": value}}
        for key, value in want.items() if got.get(key) != value]


def filter_insert_patches(before: list[dict[str, Any]], placement: Placement) -> list[dict[str, Any]]:
    """``before`` put at the front of the listener's chain, each added first, the last first: they end up in the
    bootstrap's order, ahead of every filter of the gateway's."""
    return [{**_target(placement, "envoy.config.listener.v3.Listener"), "operation": {
        "op": "add", "jsonPath": "..http_filters", "path": "/0", "value": http_filter}}
        for http_filter in reversed(before)]


def route_header_patches(route: dict[str, Any], httproute: str, placement: Placement) -> list[dict[str, Any]]:
    """The bootstrap ``route``'s header settings on every route Envoy Gateway makes of HTTPRoute ``httproute``."""
    selector = f"..routes[?match(@.name, 'httproute/{placement.namespace}/{httproute}/rule/[0-9]+/match/.*')]"
    return [{**_target(placement, "envoy.config.route.v3.RouteConfiguration"), "operation": {
        "op": "add", "jsonPath": selector, "path": f"/{key}", "value": route[key]}}
        for key in ROUTE_HEADER_FIELDS if key in route]


def patch_policy(name: str, patches: list[dict[str, Any]], placement: Placement) -> dict[str, Any]:
    """The ``EnvoyPatchPolicy`` carrying ``patches`` (Envoy Gateway applies it only with
    ``extensionApis.enableEnvoyPatchPolicy: true``)."""
    return {"apiVersion": ENVOY_GATEWAY_API, "kind": "EnvoyPatchPolicy",
            "metadata": {"name": name, "namespace": placement.namespace},
            "spec": {"type": "JSONPatch", "targetRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                                         "name": placement.gateway},
                     "jsonPatches": patches}}


def apply_patches(config: dict[str, Any], patch: dict[str, Any], filter_selector: str) -> dict[str, Any]:
    """``config`` (a translated typed_config) with the patch policy's operations on the filter named in
    ``filter_selector`` applied, as Envoy Gateway applies them: each an ``add`` of one top-level field."""
    result = dict(config)
    for entry in patch["spec"]["jsonPatches"]:
        operation = entry["operation"]
        if filter_selector not in operation["jsonPath"]:
            continue  # another policy's filter, a filter put ahead of the processor, a route's settings
        prefix = "/typed_config/"
        field = operation["path"].removeprefix(prefix)
        if operation["op"] != "add" or not operation["path"].startswith(prefix) or "/" in field:
            raise ValueError(f"not a top-level add: {operation}")
        result[field] = operation["value"]
    return result
