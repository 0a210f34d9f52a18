"""Who is looking at the console, and whether a change they ask for came from the console itself.

Signing in takes an API key once (keys mode); the answer is a cookie holding the key's id, its tenant, when the
sign-in ends and a token against cross-site posts, sealed with the deployment's key (sealing.py): the key itself
never comes back to the browser, and the cookie is ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other
site's page sends it) and expires. Each page checks the key again by its id, so a revoked key is signed out at
its next page, and the sign-in against the store's signed-out ones, so signing out ends it on the server too.
Without keys (``auth: none``) everyone is the operator of the one tenant, on loopback only unless
``console_remote``; with a tenant header set by Envoy (``auth: header``) the header's tenant sees its own objects.

A change (a revoked key, an approval) is a POST carrying the page's token, and refused when the browser says it
came from another site (``Sec-Fetch-Site``, else ``Origin``).

A page asked for while signed out (a link pasted from chat) sends the browser to the sign-in page with the page's
own path as ``next``, and the sign-in back to it: only a console path of this origin (:func:`return_path`) — never
another host, a scheme, a ``//`` or ``\\`` that a browser reads as another host, a path out of ``/console`` — so a
link cannot make the sign-in page send a viewer elsewhere (no open redirect).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import time
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from aiohttp import web

from ....protocol.errors import APIError
from ....runtime import Runtime
from ....store.base import DEFAULT_TENANT

COOKIE = "rb_console"
PURPOSE = "console sign-in"
PATH = "/console"
RETURN_CHARS = 2048
DEFAULT_PAGE = "/console/logs"
NOT_RETURNED = ("/console/sign-in", "/console/sign-out", "/console/static/")


@dataclass(frozen=True, slots=True)
class Viewer:
    """A signed-in viewer: the tenant whose objects they see, whether they are an operator (every tenant, and
    Operations), and the token their forms carry."""

    tenant: str
    operator: bool
    csrf: str
    key_id: str | None = None
    expires: int = 0  # when the cookie's sign-in ends (keys only)

    def scope(self, request: web.Request) -> str:
        """The tenant a page shows: a tenant's own, always; an operator's choice (``?tenant=``), else their own."""
        if self.operator:
            chosen = request.query.get("tenant", "").strip()
            if chosen:
                return chosen[:200]
        return self.tenant


class SignIn:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        settings = runtime.settings
        self.mode = settings.auth
        self.lifetime = int(settings.console_sign_in_seconds)
        self.remote = settings.console_remote

    @property
    def takes_keys(self) -> bool:
        return self.mode == "keys"

    async def viewer(self, request: web.Request) -> Viewer | None:
        """The viewer of this request, or None (the sign-in page answers them). A request beyond loopback to a
        console without keys is refused outright (403)."""
        if self.mode == "none":
            if not self.remote and not (_loopback(request.remote) and not _proxied(request)):
                raise APIError(403, "The console without API keys (auth: none) answers loopback only; set "
                               "RESPONSES_BRIDGE_CONSOLE_REMOTE=true to serve it beyond.", code="console_loopback_only")
            return Viewer(DEFAULT_TENANT, True, self._token(f"none\0{DEFAULT_TENANT}"))
        if self.mode == "header":
            tenant = (request.headers.get(self.runtime.identity.tenant_header) or "").strip()
            return Viewer(tenant, False, self._token(f"header\0{tenant}")) if tenant else None
        return await self._cookie_viewer(request.cookies.get(COOKIE))

    async def _cookie_viewer(self, cookie: str | None) -> Viewer | None:
        if not cookie or self.runtime.api_keys is None:
            return None
        try:
            held = self.runtime.sealer.open(PURPOSE, cookie)
            key_id, csrf, expires = str(held["k"]), str(held["c"]), int(held["e"])
        except (APIError, KeyError, TypeError, ValueError):
            return None
        now = int(time.time())
        if expires <= now:
            return None
        key = await self.runtime.api_keys.find_key(key_id)
        if key is None or not key.usable(now):
            return None  # revoked or expired since: signed out at the next page
        if await self.runtime.api_keys.sign_in_ended(sign_in_id(csrf)):
            return None  # signed out of (a copy of the cookie kept from before is refused)
        return Viewer(key.tenant, key.operator, csrf, key.id, expires)

    async def sign_out(self, viewer: Viewer | None) -> None:
        """Ends ``viewer``'s sign-in on the server, not only in the browser: the cookie's copies (a stolen one, a
        page kept open elsewhere) are refused from now on, on every process sharing the database."""
        if viewer is not None and viewer.key_id is not None and self.runtime.api_keys is not None:
            await self.runtime.api_keys.end_sign_in(sign_in_id(viewer.csrf), viewer.expires)

    async def sign_in(self, key_text: str) -> str | None:
        """The sealed cookie for a usable key, or None (the page says the key was not accepted, never why)."""
        if self.runtime.api_keys is None:
            return None
        resolved = await self.runtime.api_keys.resolve_key(key_text.strip())
        now = int(time.time())
        if resolved is None or not resolved.key.usable(now):
            return None
        return self.runtime.sealer.seal(PURPOSE, {"k": resolved.key.id, "c": secrets.token_urlsafe(24),
                                                  "e": now + self.lifetime})

    def set_cookie(self, response: web.StreamResponse, request: web.Request, value: str) -> None:
        response.set_cookie(COOKIE, value, max_age=self.lifetime, path=PATH, httponly=True, samesite="Strict",
                            secure=request.secure)

    def clear_cookie(self, response: web.StreamResponse) -> None:
        response.del_cookie(COOKIE, path=PATH)

    def _token(self, who: str) -> str:
        """A fixed token for a viewer with no cookie (no keys): only a page of the console shows it, so a page of
        another site cannot read it (and is refused by its origin before that)."""
        return self.runtime.sealer.mac("console csrf", who.encode())


def sign_in_id(csrf: str) -> str:
    """What the store keeps of a signed-out sign-in: a hash of its form token (random per sign-in), never the token
    a form still carries."""
    return hashlib.blake2b(csrf.encode(), digest_size=16, person=b"console signout").hexdigest()


def same_origin(request: web.Request) -> bool:
    """Did the browser send this from the console's own pages? ``Sec-Fetch-Site`` when it says (every current
    browser), else ``Origin`` against the request's own host; a client that sends neither is not a browser on
    another site, and still needs the token."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site == "same-origin"
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    return origin == f"{request.scheme}://{request.host}"


def check_change(request: web.Request, viewer: Viewer | None, token: str | None) -> None:
    """A POST that changes something: from the console's own page (:func:`same_origin`), with that viewer's token."""
    if not same_origin(request):
        raise APIError(403, "Cross-site request refused: the console takes changes from its own pages only.",
                       code="cross_site_refused")
    if viewer is not None and not hmac.compare_digest((token or "").encode(), viewer.csrf.encode()):
        raise APIError(403, "The form's token is missing or stale: reload the page and try again.",
                       code="csrf_token_invalid")


PROXY_HEADERS = ("X-Forwarded-For", "X-Forwarded-Proto", "Forwarded", "X-Envoy-External-Address",
                 "X-Envoy-Internal", "Via")
"""What a proxy in front adds (Envoy sets ``x-forwarded-proto`` on every request it forwards): such a request came
from wherever the proxy's own clients are, however near the proxy is."""


def _proxied(request: web.Request) -> bool:
    return any(name in request.headers for name in PROXY_HEADERS)


def _loopback(remote: str | None) -> bool:
    if not remote:
        return False
    try:
        return ipaddress.ip_address(remote.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def return_path(value: str | None) -> str | None:
    """``value`` when it is a path of this console to go back to after signing in, else None: a path (no scheme,
    no host, not ``//`` nor ``/\\``), under ``/console/``, without a dot segment (``..``, also percent-encoded) or a
    control character, not the sign-in itself, at most RETURN_CHARS long."""
    if not value or len(value) > RETURN_CHARS or not value.startswith("/console/"):
        return None
    if any(ord(char) < 0x20 or ord(char) == 0x7F or char == "\\" for char in value):
        return None
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or value.startswith("//"):
        return None
    lowered = parts.path.lower()
    if ".." in lowered or "%2e" in lowered or "/./" in lowered or "%2f" in lowered or "%5c" in lowered:
        return None
    if lowered.startswith(NOT_RETURNED):
        return None
    return value


def sign_in_location(request: web.Request) -> str:
    """Where a signed-out viewer is sent: the sign-in page, naming the page asked for (a GET's, when it is one
    :func:`return_path` admits, and not the page a sign-in lands on anyway) to return to."""
    back = return_path(request.path_qs) if request.method == "GET" else None
    if back == DEFAULT_PAGE:  # where a sign-in lands anyway
        back = None
    return "/console/sign-in" + (f"?next={quote(back, safe='')}" if back else "")
