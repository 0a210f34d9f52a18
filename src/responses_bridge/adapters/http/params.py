"""Reading request bodies and query strings, and writing JSON replies, the same way on every route."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web

from ...protocol.errors import APIError
from ...protocol.known_fields import UnknownFields, check_known_fields
from ...protocol.responses.request import parse_json_object
from ...run.response_run import LARGE_BODY_BYTES
from ...services.tenancy.body_admission import BodyAdmission
from ...services.tenancy.memory_budget import Held
from .body_watch import BODY_WATCH

BODY_LIMIT = web.RequestKey("body_limit", int)
"""The request key of the caller's own body limit (limits.py: the tenant's, never above ``client_max_size``)."""
HELD_MEMORY = web.RequestKey("held_memory", Held)
"""The request key of what the request holds of the process's memory budget (limits.py gives it back)."""


def json_reply(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


async def read_body(request: web.Request) -> bytes:
    """The whole request body, at most the tenant's limit or the app's ``client_max_size`` (a 413 past it), read once
    and kept by nobody but the caller. aiohttp's ``request.read()`` keeps the bytes on the request for as long as
    the handler runs (for ``POST /v1/responses`` the whole upstream call, minutes for a stream), next to what was
    parsed from them; a large body is then held twice for no use. Admitted as its bytes arrive
    (services/tenancy/body_admission.py: its memory reserved by its shape, a 503 when the budget or the tenant's
    share is full), never its declared size up front; the door only hands its stream over."""
    admission = BodyAdmission(request.get(HELD_MEMORY), request.get(BODY_LIMIT) or request.client_max_size,
                              request.content_length, request.get(BODY_WATCH))
    return await admission.pull(request.content.iter_any())


UNKNOWN_FIELDS: web.AppKey[UnknownFields] = web.AppKey("unknown_fields")
"""The deployment's ``unknown_fields`` (``reject`` or ``warn``), for :func:`json_object`'s check."""


async def json_object(request: web.Request, *, optional: bool = False, fields: str | None = None) -> dict[str, Any]:
    """The body's JSON object. A large body is parsed in a worker thread: tens of megabytes take the CPU for
    longer than the event loop may stall every other request (and the health checks). ``fields``: the SDK's name
    for the route's method (``containers.create``), whose table of known fields the body is checked against (a 400
    ``unknown_parameter`` for a misspelled one: protocol/known_fields.py)."""
    raw = await read_body(request)
    if len(raw) > LARGE_BODY_BYTES:
        body = await asyncio.to_thread(parse_json_object, raw)
    elif not raw.strip() and optional:
        body = {}
    else:
        body = parse_json_object(raw)
    if fields is not None:
        check_known_fields(body, request.config_dict.get(UNKNOWN_FIELDS, "reject"), fields)
    return body


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def page_query(request: web.Request, *, limit: int = 20, before: bool = True) -> dict[str, Any]:
    """``after``, ``limit``, ``order`` (and ``before`` where the list takes it) as every OpenAI list reads them from
    the query string; their values are checked by whoever pages (a 400 naming the parameter)."""
    query = request.query
    args: dict[str, Any] = {"after": query.get("after"), "limit": int_query(request, "limit", limit),
                            "order": query.get("order", "desc")}
    if before:
        args["before"] = query.get("before")
    return args


def int_query(request: web.Request, name: str, default: int) -> int:
    value = request.query.get(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise APIError(400, f"Invalid value for '{name}': expected an integer.", param=name,
                       code="invalid_type") from None
    if not INT64_MIN <= number <= INT64_MAX:  # SQLite's integers: a larger one would fail in the store
        raise APIError(400, f"Invalid value for '{name}': out of range.", param=name, code="invalid_value")
    return number


def include_query(request: web.Request) -> list[str]:
    """``include`` as the SDK sends it (``include=a&include=b``), also ``include[]=…`` and comma lists."""
    values = request.query.getall("include", []) + request.query.getall("include[]", [])
    return [part for value in values for part in value.split(",") if part]


def metadata_query(request: web.Request) -> list[tuple[str, str]]:
    """``metadata[key]=value`` filters of a list (the first value of a key given twice)."""
    found: dict[str, str] = {}
    for name, value in request.query.items():
        if name.startswith("metadata[") and name.endswith("]"):
            key = name[len("metadata["):-1]
            if not key:
                raise APIError(400, "A 'metadata[key]' filter needs a key.", param="metadata", code="invalid_value")
            found.setdefault(key, value)
    return list(found.items())
