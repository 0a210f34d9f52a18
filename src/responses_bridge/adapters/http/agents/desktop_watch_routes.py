"""Watching a session's desktop live, on the HTTP door: a view-only page, the desktop's frames and the session's
calls beside them (services/agents/desktop_watch/ finds the desktop and feeds its frames).

    GET /v1/agents/sessions/{session_id}/desktop/live     the page: the tenant's key, or a page token (the link)
    GET /v1/agents/sessions/{session_id}/desktop/frames   the frames, as MJPEG: the view token the page names
    GET /v1/agents/sessions/{session_id}/desktop/calls    the session's calls, refreshing: the same view token

The frames are one ``multipart/x-mixed-replace`` response of JPEGs (MJPEG), each part a new screen: an ``<img>``
shows it as it comes in every browser, with no script, no library and no second protocol, where a WebSocket of
frames needs a script to draw them and noVNC a VNC server in the desktop beside a websockify. The page has no
script at all (its Content-Security-Policy allows none) and sends nothing to the desktop: it is a view.

Chromium draws a part only once the next part's headers have come (it finishes a part when it starts the next),
so each frame is followed at once by the boundary and headers of the next, and no part has a ``Content-Length``
(each ends at its boundary, as multipart allows); when the desktop stops, its last frame is sent again as the
last part, so the view keeps it rather than an empty one.

A browser cannot send the key on a link, an ``<img>`` or an ``<iframe>``, so these requests carry short-lived
tokens (adapters/http/desktop_watch_tokens.py), resolved to the tenant by the identity middleware as a key is; another
tenant's session, or one without a running desktop, is a 404. The view tokens the page and the calls' refresh mint
end with the token the request came with (the page token that opened the page): watching ends with the link.
"""

from __future__ import annotations

import html
from typing import Any
from urllib.parse import quote

import orjson
from aiohttp import web

from ....services.agents.desktop_watch.feed import FrameFeeds
from ....services.agents.sessions import SessionService
from ..desktop_watch_tokens import Kind, WatchTokens
from ..drain import DRAIN
from ..identity import request_tenant
from ..routes import api_routes

BOUNDARY = b"frame"
PART = b"--" + BOUNDARY + b"\r\nContent-Type: image/jpeg\r\n\r\n"
"""A part's start: written right after the frame before it, so a browser knows that frame is whole at once."""
NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff"}
PAGE_POLICY = ("default-src 'none'; img-src 'self'; frame-src 'self'; style-src 'unsafe-inline'; "
               "frame-ancestors 'none'; form-action 'none'; base-uri 'none'")
CALLS_POLICY = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'self'"
CALLS_SHOWN = 50
CALLS_REFRESH = 2
"""Seconds between two refreshes of the calls beside the desktop (a ``<meta>`` refresh: no script)."""
ARGUMENTS_SHOWN = 160

STYLE = ("body{margin:0;font:14px system-ui,sans-serif;background:#1e1e1e;color:#ddd;display:flex;gap:12px;"
         "padding:12px}main img{display:block;max-width:100%;height:auto;border:1px solid #444}"
         "aside{flex:0 0 340px}aside iframe{width:100%;height:calc(100vh - 60px);border:0}"
         "h1{font-size:15px;margin:0 0 8px}")
CALLS_STYLE = ("body{margin:0;font:13px system-ui,sans-serif;background:#1e1e1e;color:#ddd}"
               "li{margin:0 0 8px;list-style:none}ol{padding:0;margin:0}code{color:#9cdcfe;word-break:break-all}"
               ".status{color:#999}")


class DesktopWatchRoutes:
    def __init__(self, feeds: FrameFeeds, tokens: WatchTokens, sessions: SessionService) -> None:
        self.feeds = feeds
        self.tokens = tokens
        self.sessions = sessions

    def register(self, app: web.Application) -> None:
        app.on_shutdown.append(self._close)
        app[DRAIN].on_drain(self.feeds.end_all)  # open views end at once, not at the drain's deadline
        with api_routes(app) as routes:
            desktop = "/agents/sessions/{session_id}/desktop"
            routes.get(f"{desktop}/live", self.page)
            routes.get(f"{desktop}/frames", self.frames)
            routes.get(f"{desktop}/calls", self.calls)

    async def _close(self, app: web.Application) -> None:
        await self.feeds.close()

    async def live_url(self, request: web.Request, session_id: str, tenant: str) -> str | None:
        """The link to the session's live desktop (a page token in it), as the caller reached this door; None
        while the session has no running desktop."""
        if await self.feeds.registry.desktop_for(tenant, session_id) is None:
            return None
        scheme = request.headers.get("X-Forwarded-Proto", request.scheme).split(",")[0].strip()
        prefix = "/v1" if request.path.startswith("/v1/") else ""
        return (f"{scheme}://{request.host}{prefix}/agents/sessions/{quote(session_id, safe='')}/desktop/live"
                f"?token={self._token('page', tenant, session_id)}")

    def _token(self, kind: Kind, tenant: str, session_id: str, until: float | None = None) -> str:
        return quote(self.tokens.mint(kind, tenant, session_id, until), safe="")

    def _until(self, request: web.Request, kind: Kind, session_id: str) -> float | None:
        """When the token the request came with ends (a view token minted now must end then too); None for a
        request opened with the tenant's key (the identity middleware took no token: the link's own bound)."""
        token = request.query.get("token")
        return None if token is None else self.tokens.expires(token, kind, session_id)

    async def page(self, request: web.Request) -> web.Response:
        session_id = request.match_info["session_id"]
        tenant = request_tenant(request)
        desktop = await self.feeds.desktop(tenant, session_id)
        view = self._token("view", tenant, session_id, self._until(request, "page", session_id))
        name = html.escape(session_id)
        body = (f'<!doctype html><html><head><meta charset="utf-8"><title>Desktop of {name}</title>'
                f'<meta name="referrer" content="no-referrer"><style>{STYLE}</style></head><body>'
                f'<main><h1>Desktop of session <code>{name}</code> (view only)</h1>'
                f'<img id="desktop" alt="the session\'s desktop" width="{desktop.width}" height="{desktop.height}" '
                f'src="frames?token={view}"></main>'
                f'<aside><h1>Calls</h1><iframe id="calls" title="the session\'s calls" '
                f'src="calls?token={view}"></iframe></aside></body></html>')
        return web.Response(text=body, content_type="text/html",
                            headers={**NO_STORE, "Content-Security-Policy": PAGE_POLICY})

    async def frames(self, request: web.Request) -> web.StreamResponse:
        """The desktop's screen as MJPEG, a part per change (services/agents/desktop_watch/feed.py), until the
        watcher leaves or the desktop stops; a 404 (JSON) before the stream starts when there is none."""
        session_id = request.match_info["session_id"]
        async with self.feeds.watch(request_tenant(request), session_id) as feed:
            response = web.StreamResponse(headers={
                **NO_STORE, "Content-Type": f"multipart/x-mixed-replace; boundary={BOUNDARY.decode()}",
                "X-Accel-Buffering": "no"})
            await response.prepare(request)
            await response.write(PART)
            last = None
            async for last in feed.frames():
                await response.write(last)
                await response.write(b"\r\n" + PART)
            if last is not None:  # the desktop stopped: its last screen closes the stream (not an empty part)
                await response.write(last)
            await response.write(b"\r\n--" + BOUNDARY + b"--\r\n")
            await response.write_eof()
            return response

    async def calls(self, request: web.Request) -> web.Response:
        """The session's newest calls (and approval requests), refreshed every few seconds by the page itself."""
        session_id = request.match_info["session_id"]
        tenant = request_tenant(request)
        await self.feeds.desktop(tenant, session_id)
        page = await self.sessions.list_items(session_id, turn_id=None, after=None, limit=CALLS_SHOWN,
                                              order="desc", tenant=tenant)
        rows = "".join(_call_row(item) for item in page["data"] if _is_call(item)) or "<li>No calls yet.</li>"
        view = self._token("view", tenant, session_id, self._until(request, "view", session_id))  # never later
        refresh = f"{CALLS_REFRESH};url=calls?token={view}"
        body = (f'<!doctype html><html><head><meta charset="utf-8">'
                f'<meta http-equiv="refresh" content="{html.escape(refresh)}">'
                f'<meta name="referrer" content="no-referrer"><style>{CALLS_STYLE}</style></head>'
                f'<body><ol id="calls">{rows}</ol></body></html>')
        return web.Response(text=body, content_type="text/html",
                            headers={**NO_STORE, "Content-Security-Policy": CALLS_POLICY})


def _is_call(item: dict[str, Any]) -> bool:
    kind = str(item.get("type", ""))
    return kind.endswith("_call") or "approval_request" in kind


def _call_row(item: dict[str, Any]) -> str:
    """One call: its type, what it names (a function, a title), its status and the start of its arguments."""
    kind = html.escape(str(item.get("type", "")))
    named = item.get("title") or item.get("name") or item.get("server_label") or ""
    status = item.get("status")
    arguments = item.get("arguments", item.get("action"))
    shown = "" if arguments is None else arguments if isinstance(arguments, str) else orjson.dumps(arguments).decode()
    if len(shown) > ARGUMENTS_SHOWN:
        shown = shown[:ARGUMENTS_SHOWN] + "…"
    return (f'<li class="call"><b>{kind}</b> {html.escape(str(named))}'
            + (f' <span class="status">{html.escape(str(status))}</span>' if status else "")
            + (f"<br><code>{html.escape(shown)}</code>" if shown else "") + "</li>")
