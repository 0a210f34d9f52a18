"""Reading request bodies and query strings, and writing JSON replies, the same way on every route."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from ...protocol.errors import APIError
from ...protocol.request import parse_json_object


def json_reply(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


async def json_object(request: web.Request, *, optional: bool = False) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip() and optional:
        return {}
    return parse_json_object(raw)


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


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
