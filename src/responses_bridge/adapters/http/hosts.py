"""Which ``Host`` an HTTP door without keys (``auth: none``) answers: loopback names, and those the deployment names.

Without keys the door trusts whoever reaches it, and "whoever reaches it" on a loopback port is meant to be this
machine's own programs. A web page is not one of them, yet under DNS rebinding a page on a name the attacker
controls (``evil.example``) has that name resolve to 127.0.0.1 after it loaded: the browser then sends the page's
requests, and their answers, to the door — same origin, so no CORS stands in the way, and the peer address is
loopback, as for the programs it trusts. What such a page cannot choose is the ``Host`` header (the browser writes
the name the page was loaded from), so a door without keys answers only a ``Host`` that is a loopback name or
address — ``localhost`` and ``*.localhost`` (RFC 6761), 127.0.0.0/8, ``[::1]`` — or one the deployment names in
``allowed_hosts`` (``RESPONSES_BRIDGE_ALLOWED_HOSTS``, ``--allowed-hosts``; ``*`` turns the check off), as the
DNS-rebinding defences of other local servers do. Anything else is a 403 naming the setting.

Requests Envoy forwards are not judged by their ``Host`` (their client named Envoy's listener, under whatever name
it faces): the rendered Envoy routes to the HTTP door add ``Via: 1.1 responses-bridge`` (envoy_config/names.py),
a header a browser cannot set (a forbidden header name of the Fetch standard), so a page cannot claim to be one.
The console stays refused to them (console/sign_in.py: a proxied request is not loopback).

The check costs a request without keys one dict lookup (the ``Host`` values already judged, kept up to a bound),
and a request with keys nothing: the middleware only calls it in the ``auth: none`` branch.
"""

from __future__ import annotations

import ipaddress

from aiohttp import hdrs, web

from ...envoy_config.names import VIA_DOOR
from ...protocol.errors import APIError

SETTING = "allowed_hosts"
KEPT = 256
"""``Host`` values whose judgement is remembered (a hostile client sending many names fills nothing past it)."""
LOOPBACK_NAMES = frozenset(("localhost", "localhost.", "localhost.localdomain"))


class HostGate:
    """``admits(request)``: whether a request to a door without keys may be answered, by its ``Host``."""

    def __init__(self, allowed: str = "", bound_host: str = "") -> None:
        names = {_name(part) for part in allowed.split(",") if part.strip()}
        self.everyone = "*" in names
        self.named = frozenset(name for name in names if name and name != "*")
        bound = _name(bound_host)
        if bound and _loopback(bound):
            self.named |= {bound}
        self._judged: dict[str, bool] = {}  # a Host value -> loopback or named

    def admits(self, request: web.Request) -> bool:
        host = request.headers.get(hdrs.HOST)  # aiohttp's istr: no case folding of the name per request
        if not host or self.everyone:
            return True  # no Host at all: not a browser (every browser sends one), so not a rebinding page
        judged = self._judged.get(host)
        if judged is None:
            judged = self._judge(host)
            if len(self._judged) < KEPT:
                self._judged[host] = judged
        return judged or _via_envoy(request)

    def _judge(self, host: str) -> bool:
        name = _name(host)
        return bool(name) and (name in self.named or _loopback(name))

    @staticmethod
    def refusal(request: web.Request) -> APIError:
        """The 403 for a request :meth:`admits` turned away."""
        return refused(request.headers.get(hdrs.HOST, ""))


def refused(host: str) -> APIError:
    """The 403 naming the setting; the Host is shown cut to 100 characters, escaped (``repr``), so no byte a client
    chose reaches a terminal or a log as it was sent."""
    return APIError(403, f"This server has no API keys (auth: none) and answers loopback names only; the Host "
                         f"{host[:100]!r} is not one. Name it in {SETTING} (RESPONSES_BRIDGE_ALLOWED_HOSTS, "
                         "--allowed-hosts) to serve it, or give the server keys (auth: keys).",
                    code="host_not_allowed", param=SETTING)


def _via_envoy(request: web.Request) -> bool:
    via = request.headers.get(hdrs.VIA)
    return via is not None and VIA_DOOR in via


def _name(host: str) -> str:
    """The host part of a ``Host`` value (or a setting's entry), lower-cased, without its port or brackets."""
    text = host.strip().lower()
    if text.startswith("["):
        end = text.find("]")
        return text[1:end] if end > 0 else ""
    if text.count(":") == 1:
        text = text.split(":", 1)[0]
    return text


def _loopback(name: str) -> bool:
    if name in LOOPBACK_NAMES or name.endswith((".localhost", ".localhost.")):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
