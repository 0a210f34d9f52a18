"""Small pieces every console page uses (pages.py's handlers): the headers every answer carries (a strict
Content-Security-Policy: nothing inline, nothing from elsewhere), a 303 to a console page, a posted form read within
its bound, the query that keeps an operator's chosen tenant on links, a position from the query, a timing as a cell
shows it."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlencode

from aiohttp import web

from ....protocol.errors import APIError
from .sign_in import Viewer

POLICY = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-src 'self'; "
          "frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'")
# same-origin, not no-referrer: under no-referrer a browser sends ``Origin: null`` with the console's own forms, which
# a browser that sends no Sec-Fetch-Site then had refused (sign_in.same_origin); another site still gets no Referer
HEADERS = {"Content-Security-Policy": POLICY, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
           "Cache-Control": "no-store", "X-Frame-Options": "DENY"}
FORM_BYTES = 16 * 1024


def milliseconds(value: float | None) -> str:
    """A timing as a cell shows it: whole milliseconds, a tenth below ten (no timing: nothing)."""
    if value is None:
        return ""
    return f"{value:.1f} ms" if value < 10 else f"{value:.0f} ms"


def position(value: str | None) -> int:
    """A page's first item position from the query (anything but a small whole number: the first page)."""
    return int(value) if value is not None and value.isascii() and value.isdigit() and len(value) <= 9 else 0


def see_other(location: str) -> web.Response:
    """A 303 to a console page (after a POST: the browser then GETs it, so a reload posts nothing twice)."""
    return web.Response(status=303, headers={**HEADERS, "Location": location})


async def posted_form(request: web.Request) -> dict[str, str]:
    if request.content_length is not None and request.content_length > FORM_BYTES:
        raise APIError(413, "The form is too large.", code="too_large")
    posted = await request.post()
    return {name: value for name, value in posted.items() if isinstance(value, str)}


def tenant_query(viewer: Viewer | None, tenant: str) -> dict[str, str]:
    return {"tenant": tenant} if viewer is not None and viewer.operator and tenant != viewer.tenant else {}


def suffix(viewer: Viewer | None, tenant: str) -> str:
    query = tenant_query(viewer, tenant)
    return "?" + urlencode(query) if query else ""


def linker(viewer: Viewer | None, tenant: str) -> Callable[..., str]:
    """``link("/console/logs/x")``: a console path keeping an operator's chosen tenant."""
    def link(path: str, **query: str) -> str:
        values = {**tenant_query(viewer, tenant), **{name: value for name, value in query.items() if value}}
        return path + ("?" + urlencode(values) if values else "")
    return link
