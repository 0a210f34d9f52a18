"""The Envoy bootstrap that puts the bridge in front of a Chat Completions upstream.

``render_bootstrap`` builds the whole Envoy v3 bootstrap from Python dicts and writes it as YAML. What it sets up,
and why:

* ``POST /v1/responses`` and ``POST /responses`` (exact paths) go to the **upstream LLM cluster** with the
  ext_proc filter on: the processor rewrites the request into a Chat Completions call (path, body, auth) and the
  answer back into a Response or a Responses event stream. Envoy makes the upstream call and streams it.
* ``POST /v1/chat/completions`` goes straight to the upstream (ext_proc off but to check a key or record a stored
  completion), with the ``/v1`` prefix rewritten to the upstream's base path. ``GET /v1/models`` and
  ``POST /v1/embeddings`` are the sidecar's HTTP door's: it lists the upstream's models with the deployment's
  embedder, and embeds with that embedder or passes the request to the upstream serving the model. Its own calls
  for them (``--upstream-via``, marked with ``ROUTE_HEADER``) are the ones this listener sends to the upstream. The
  processor sees a client's list request's headers only (changing nothing), so that a smoke test of the list fails
  when the processor is out of reach.
* A ``POST /v1/responses`` with server-side tools the deployment runs (``mcp``, ``web_search``, server
  ``tool_search``) is marked by the processor (dynamic metadata ``responses_bridge.route: {to: sidecar}``, route
  cache cleared) and goes, unchanged, to the **sidecar's HTTP door**, which runs the tool loop and makes every
  model turn through this listener (``--upstream-via``). A buffer filter holds the request's headers until the
  processor has read the body, so the router picks the route only then.
* ``/v1/files`` (the Files API) goes to the sidecar's HTTP door with ext_proc off and no route buffer, through a
  cluster of its own with 1 MiB connection buffers, so uploads stream through Envoy to the door's disk writer
  and Envoy holds about a MiB of each, not tens.
* Everything else (``/v1/responses/{id}``, ``/health``, WebSocket upgrades, ...) goes to the **sidecar's HTTP
  door**, ext_proc off.
* ``failure_mode_allow: false``: when the processor is unreachable the client gets a 503, never the
  untranslated request sent upstream. ``local_reply_config`` turns every reply Envoy makes itself (no healthy
  upstream, processor down, timeouts, 413) into an OpenAI-shaped ``{"error": {...}}`` JSON body; the
  processor's own immediate responses (already OpenAI-shaped) are recognised by their response code details
  and left alone.
* Buffers and timeouts sized for LLM traffic: bodies of tens of MB, streams that last minutes.

The ``responses-bridge envoy-config`` command prints it.

Imports the settings and the process's worker count; renders only, never serves.

The names both the bootstrap and the ext_proc door use (names.py) are imported here; the rendering (bootstrap,
routes, filters, clusters, the Envoy Gateway and Istio objects, the command: ~100 KB of modules) only when one of
its names is first asked for — a serving sidecar never renders, and its ext_proc door needs only the names.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .names import (
    BUFFER_LIMIT_BYTES,
    CA_BUNDLES,
    CLIENT_CONTEXT_HEADERS,
    CREDENTIALS_NAMESPACE,
    EXTPROC_CLUSTER,
    EXTPROC_SERVICE,
    FILES_BUFFER_BYTES,
    FILES_CLUSTER,
    HANDS_OFF_METADATA,
    HTTP_CLUSTER,
    IDEMPOTENCY_KEY_HEADER,
    IMMEDIATE_RESPONSE_DETAILS,
    INTERNAL_LISTENER,
    JWT_PROVIDER,
    LISTEN_PORT,
    MAX_DOWNSTREAM_CONNECTIONS,
    NATIVE_SUFFIX,
    OBSERVED_HEADERS,
    ROUTE_HEADER,
    ROUTE_KEY,
    ROUTE_NAMESPACE,
    ROUTE_OFFERED_KEY,
    ROUTE_TO_SIDECAR,
    TENANT_METADATA_KEY,
    UNSUPPORTED_ENCODING_STATUS,
    UPSTREAM_CLUSTER,
    UPSTREAM_HEADERS_NAMESPACE,
    UPSTREAM_KEY,
    UPSTREAM_METADATA_HEADERS,
    UpstreamURL,
    upstream_cluster,
    upstream_path_prefix,
)

if TYPE_CHECKING:
    from .bootstrap import bootstrap_dict, internal_listener_port, render_bootstrap, to_yaml
    from .command import add_parser
    from .filters import Auth, JwtExample

_RENDERING = {"bootstrap_dict": ".bootstrap", "internal_listener_port": ".bootstrap", "render_bootstrap": ".bootstrap",
              "to_yaml": ".bootstrap", "add_parser": ".command", "Auth": ".filters", "JwtExample": ".filters"}


def __getattr__(name: str) -> Any:
    """The rendering's names, imported on first use (module ``__getattr__``, PEP 562)."""
    module = _RENDERING.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)


__all__ = [
    "BUFFER_LIMIT_BYTES",
    "CA_BUNDLES",
    "CLIENT_CONTEXT_HEADERS",
    "CREDENTIALS_NAMESPACE",
    "EXTPROC_CLUSTER",
    "EXTPROC_SERVICE",
    "FILES_BUFFER_BYTES",
    "FILES_CLUSTER",
    "HANDS_OFF_METADATA",
    "HTTP_CLUSTER",
    "IDEMPOTENCY_KEY_HEADER",
    "IMMEDIATE_RESPONSE_DETAILS",
    "INTERNAL_LISTENER",
    "JWT_PROVIDER",
    "LISTEN_PORT",
    "MAX_DOWNSTREAM_CONNECTIONS",
    "NATIVE_SUFFIX",
    "OBSERVED_HEADERS",
    "ROUTE_HEADER",
    "ROUTE_KEY",
    "ROUTE_NAMESPACE",
    "ROUTE_OFFERED_KEY",
    "ROUTE_TO_SIDECAR",
    "TENANT_METADATA_KEY",
    "UNSUPPORTED_ENCODING_STATUS",
    "UPSTREAM_CLUSTER",
    "UPSTREAM_HEADERS_NAMESPACE",
    "UPSTREAM_KEY",
    "UPSTREAM_METADATA_HEADERS",
    "Auth",
    "JwtExample",
    "UpstreamURL",
    "add_parser",
    "bootstrap_dict",
    "internal_listener_port",
    "render_bootstrap",
    "to_yaml",
    "upstream_cluster",
    "upstream_path_prefix",
]
