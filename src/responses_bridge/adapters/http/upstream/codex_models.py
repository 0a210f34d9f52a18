"""The model list as the Codex CLI reads it: ``GET /v1/models?client_version=<version>``.

Codex (openai/codex, ``codex-rs/codex-api/src/endpoint/models.rs``) asks a provider's ``/models`` with a
``client_version`` query parameter whenever it may refresh its model catalog (a provider whose token comes from an
``auth`` command, or a ChatGPT login), and decodes the answer as its ``ModelsResponse``: an object with a
``models`` array of its own ``ModelInfo`` entries. OpenAI's list shape (``object``, ``data``) alone fails that
decode (``failed to decode models response``), and Codex logs the error on every refresh.

The answer to such a request is OpenAI's list, unchanged, with ``models: []`` beside it: the ``openai`` SDK reads
``data`` and ignores the extra key, Codex reads ``models`` and ignores the rest. The array is empty on purpose. A
``ModelInfo`` replaces Codex's own metadata for every model whose name it prefixes, ``base_instructions`` (Codex's
system prompt) included, and the bridge knows no instructions, context window or reasoning levels worth more than
the ones Codex ships with, so an entry would only take them away; an empty catalog leaves Codex's bundled one in
force. The ``ETag`` (Codex keeps it with its cached catalog) is the answer's digest: it changes only with the list.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import structlog
from aiohttp import web

log = structlog.get_logger("responses_bridge.http")

CLIENT_VERSION = "client_version"
"""The query parameter Codex adds to every model-list request (its version, e.g. ``0.169.0``)."""


def wants_codex_catalog(request: web.Request) -> bool:
    return CLIENT_VERSION in request.query


def models_answer(request: web.Request, body: dict[str, Any]) -> web.Response:
    """``body`` (an OpenAI list) as JSON, with Codex's ``models`` and an ``ETag`` when Codex asks for it."""
    if not wants_codex_catalog(request):
        return web.Response(body=orjson.dumps(body), content_type="application/json")
    return _codex_response({**body, "models": _codex_models(body)})


def passthrough_answer(request: web.Request, raw: bytes) -> web.Response:
    """An upstream's own list, passed on as its bytes; for Codex, decoded and answered as :func:`models_answer`
    does. An upstream answer that is no JSON object is passed on as it is (Codex reports it; the bridge cannot
    make a catalog of it), and logged."""
    if not wants_codex_catalog(request):
        return web.Response(body=raw, content_type="application/json")
    try:
        decoded = orjson.loads(raw)
    except orjson.JSONDecodeError:
        decoded = None
    if not isinstance(decoded, dict):
        log.warning("upstream_models_not_an_object", client_version=request.query[CLIENT_VERSION])
        return web.Response(body=raw, content_type="application/json")
    return models_answer(request, decoded)


def _codex_models(body: dict[str, Any]) -> list[Any]:
    """An upstream that already answers Codex's shape (another Codex-aware gateway) keeps its own entries."""
    models = body.get("models")
    return models if isinstance(models, list) else []


def _codex_response(body: dict[str, Any]) -> web.Response:
    raw = orjson.dumps(body)
    etag = '"' + hashlib.sha256(raw).hexdigest()[:32] + '"'
    return web.Response(body=raw, content_type="application/json", headers={"ETag": etag})
