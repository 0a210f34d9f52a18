"""A per-call hook of the egress proxy: origins its owner approves one by one (a desktop's browser, whose client
approves each new site: OpenAI's ``browser_origin_access``).

The proxy asks the hook only after its own checks passed — the host in the call's network policy, every address it
resolves to allowed by the deployment's rules, the port allowed — so the policy bounds what can be approved at all:
a host it refuses is refused whatever was approved, and its owner is never asked about it. Only then, and before
any connection to the server is opened, the proxy awaits :meth:`OriginGate.decide`; False is a 403
(``origin_not_approved``) and the server is never reached. The hook sits where the traffic passes, not in the
browser: whatever the page or the model makes the browser do, nothing leaves the call unapproved.

An origin is written as the web writes it (RFC 6454's serialization): ``scheme://host`` and ``:port`` unless the
scheme's default. A ``CONNECT`` (what a browser sends for ``https://`` and ``wss://``) is the ``https`` origin of
its host and port, an absolute ``http://`` request the ``http`` one.
"""

from __future__ import annotations

from typing import Protocol

from .policy import normalize_host
from .request_head import Destination

DEFAULT_PORTS = {"http": 80, "https": 443}


class OriginGate(Protocol):
    """What the proxy asks before it connects anywhere for a call that has one (runner.py's ``origins``)."""

    async def decide(self, origin: str) -> bool:
        """Whether the call may reach ``origin`` now (it may wait for its owner's decision, bounded by itself)."""
        ...


def origin_of(where: Destination) -> str:
    """The origin a request the proxy read is for."""
    return origin("https" if where.tunnel else "http", where.host, where.port)


def origin(scheme: str, host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}" if DEFAULT_PORTS.get(scheme) == port else f"{scheme}://{shown}:{port}"


def url_origin(url: str) -> str | None:
    """The origin of an ``http``/``https`` URL (its path, query and fragment dropped), or None."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        return None
    authority = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    return parse_origin(f"{scheme}://{authority}")


def parse_origin(text: str) -> str | None:
    """``text`` (``scheme://host[:port]``, a trailing ``/`` allowed) as :func:`origin_of` writes it, or None when it
    is not an ``http``/``https`` origin (a path, a query, user information, a bad host or port)."""
    scheme, separator, rest = text.strip().partition("://")
    scheme = scheme.lower()
    if not separator or scheme not in DEFAULT_PORTS:
        return None
    rest = rest[:-1] if rest.endswith("/") else rest
    if not rest or any(character in rest for character in "/?#@\\ "):
        return None
    if rest.startswith("["):
        end = rest.find("]")
        host_text, port_text = (rest[: end + 1], rest[end + 1:]) if end > 0 else ("", "")
    else:
        host_text, colon, port_text = rest.rpartition(":") if ":" in rest else (rest, "", "")
        port_text = f":{port_text}" if colon else ""
    if port_text and (not port_text.startswith(":") or not port_text[1:].isdigit() or not port_text[1:].isascii()):
        return None
    port = int(port_text[1:]) if port_text else DEFAULT_PORTS[scheme]
    host = normalize_host(host_text) if host_text else None
    if host is None or not 0 < port < 65536:
        return None
    return origin(scheme, host, port)
