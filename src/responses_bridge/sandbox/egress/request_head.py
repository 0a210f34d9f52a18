"""The egress proxy's reading of what the code sends it: one request head (request line and header fields), parsed
strictly, and the target it names.

Strict on purpose: the proxy decides on the host a request names, so every ambiguity a lenient parser would settle
one way while the server behind settles it another is refused instead (RFC 9112's request smuggling and host
confusion): no bare CR or LF inside a line, no whitespace before a field's colon, no folded lines, no NUL, no second
``Host``, no ``Transfer-Encoding`` beside a ``Content-Length``, a request line of exactly three parts, ``HTTP/1.0``
or ``HTTP/1.1``. Two forms of target only (what ``HTTP_PROXY``/``HTTPS_PROXY`` clients send): ``CONNECT host:port``
(the authority form, for HTTPS) and ``http://host[:port]/path`` (the absolute form, for plain HTTP).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .domain_secrets import carries_credentials
from .policy import normalize_host

MAX_HEAD_BYTES = 32 * 1024
TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
TARGET = re.compile(rb"[\x21-\x7e]+")
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "proxy-authorization", "proxy-authenticate",
                        "te", "trailer", "upgrade"})


class BadRequest(ValueError):
    """The head is not one the proxy forwards; the message says why (it goes back to the code)."""


class ExpectationFailed(BadRequest):
    """An ``Expect`` the proxy does not meet (anything but ``100-continue``): a 417, as RFC 9110 says."""


@dataclass(frozen=True, slots=True)
class RequestHead:
    method: str
    target: str
    version: str
    headers: tuple[tuple[str, str], ...]

    def get(self, name: str) -> list[str]:
        lowered = name.lower()
        return [value for key, value in self.headers if key.lower() == lowered]


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a request goes: the host (normalized), the port, and for plain HTTP the origin-form path."""

    host: str
    port: int
    tunnel: bool
    path: str = "/"


def parse_head(data: bytes) -> RequestHead:
    """The request line and fields of ``data`` (up to and including the blank line ending the head)."""
    if len(data) > MAX_HEAD_BYTES:
        raise BadRequest("the request head is too large")
    if not data.endswith(b"\r\n\r\n"):
        raise BadRequest("the request head does not end with an empty line")
    lines = data[:-4].split(b"\r\n")
    if any(b"\n" in line or b"\r" in line or b"\x00" in line for line in lines):
        raise BadRequest("a bare CR, LF or NUL in the request head")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not TOKEN.fullmatch(parts[0]) or not TARGET.fullmatch(parts[1]):
        raise BadRequest("the request line is not 'METHOD target HTTP/1.1'")
    if parts[2] not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise BadRequest("only HTTP/1.0 and HTTP/1.1 are spoken")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not TOKEN.fullmatch(name):
            raise BadRequest("a header field is not 'name: value'")
        value = value.strip(b" \t")
        if not FIELD_VALUE.fullmatch(value):
            raise BadRequest("a header field's value holds a control character")
        headers.append((name.decode("ascii"), value.decode("latin-1")))
    head = RequestHead(parts[0].decode("ascii"), parts[1].decode("ascii"), parts[2].decode("ascii"), tuple(headers))
    if len(head.get("host")) > 1:
        raise BadRequest("more than one Host field")
    if head.get("transfer-encoding") and head.get("content-length"):
        raise BadRequest("both Transfer-Encoding and Content-Length")
    if len(set(head.get("content-length"))) > 1:
        raise BadRequest("Content-Length fields that differ")
    return head


def destination(head: RequestHead) -> Destination:
    """The host and port ``head`` is for: ``CONNECT host:port`` or ``http://host[:port]/…``; anything else (an
    origin-form request, ``https://`` in absolute form, user info, a host that is no name) is refused."""
    if head.method == "CONNECT":
        host, port = _authority(head.target, default=None)
        return Destination(host, port, tunnel=True)
    target = head.target
    if not target.lower().startswith("http://"):
        raise BadRequest("a plain request through the proxy names an absolute http:// URL (HTTPS goes by CONNECT)")
    rest = target[len("http://"):]
    cut = min((at for at in (rest.find("/"), rest.find("?")) if at >= 0), default=len(rest))
    authority, path = rest[:cut], rest[cut:]
    host, port = _authority(authority, default=80)
    if path.startswith("?"):
        path = "/" + path
    return Destination(host, port, tunnel=False, path=path or "/")


def named_destination(prefix: bytes) -> Destination | None:
    """Where the start of a request head goes, read as :func:`destination` reads a whole one, or None: for
    logging and telling whom a head the proxy refused unread (past :data:`MAX_HEAD_BYTES`) was for — never for deciding
    anything, which only a whole head parsed strictly does. ``prefix``: the head's first bytes; a target cut off
    before its host ended names none."""
    parts = prefix.split(b"\r\n", 1)[0].split(b" ")
    if len(parts) < 2 or not TOKEN.fullmatch(parts[0]) or not TARGET.fullmatch(parts[1]):
        return None
    method, target = parts[0].decode("ascii"), parts[1].decode("ascii")
    whole = len(parts) > 2  # the request line's target ended within the prefix
    if not whole and (method == "CONNECT" or not any(mark in target[len("http://"):] for mark in "/?")):
        return None
    try:
        return destination(RequestHead(method, target, "HTTP/1.1", ()))
    except BadRequest:
        return None


def _authority(text: str, *, default: int | None) -> tuple[str, int]:
    if "@" in text or not text:
        raise BadRequest("the target names no host, or carries user information")
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise BadRequest("an unclosed IPv6 literal")
        host_text, rest = text[: end + 1], text[end + 1:]
    else:
        host_text, colon, port_text = text.rpartition(":") if ":" in text else (text, "", "")
        rest = f":{port_text}" if colon else ""
    if rest:
        if not rest.startswith(":") or not rest[1:].isdigit() or not rest[1:].isascii():
            raise BadRequest("the target's port is not a number")
        port = int(rest[1:])
    elif default is None:
        raise BadRequest("CONNECT names host:port")
    else:
        port = default
    if not 0 < port < 65536:
        raise BadRequest("the target's port is out of range")
    host = normalize_host(host_text)
    if host is None:
        raise BadRequest("the target's host is not a host name or an IP address")
    return host, port


def continues(head: RequestHead) -> bool:
    """Whether the proxy answers ``100 Continue`` itself before relaying the body: an HTTP/1.1 request that
    expects it. ``Expect`` is never forwarded (forwarded_head): a server that meets it answers with an interim head
    first, and the proxy has no use for one — it reads each head of an answer it writes secrets out of
    (answer.py) and passes on only the final one — so the proxy meets the expectation itself, once the
    request's head is on its way; the server gets the body without waiting. An HTTP/1.0 request's ``Expect`` is
    ignored (RFC 9110 §10.1.1); any other expectation of an HTTP/1.1 one is :class:`ExpectationFailed`."""
    values = [token.strip().lower() for value in head.get("expect") for token in value.split(",") if token.strip()]
    if not values or head.version != "HTTP/1.1":
        return False
    if values != ["100-continue"]:
        raise ExpectationFailed(f"the proxy meets no expectation but 100-continue, not {', '.join(values)[:100]}")
    return True


def forwarded_head(head: RequestHead, where: Destination, replace: dict[str, str], *,
                   default_port: int = 80) -> bytes:
    """The head sent on to the server for a plain-HTTP request: origin form, the hop-by-hop fields (and whatever
    ``Connection`` names) dropped, ``Connection: close`` (one request per connection, so each one is checked and
    gets its secrets), ``Host`` the URL's own (a ``Host`` naming another site would have a shared front end
    route the request, and its secrets, there), no ``Expect`` (:func:`continues`), and in each credential field's
    value (domain_secrets.py) each placeholder of ``replace`` swapped for its secret; a request with
    secrets goes as HTTP/1.0 asking for an unencoded answer, which the proxy can then take the secrets back out of."""
    dropped = set(HOP_BY_HOP) | {"host", "expect"}  # Expect is met by the proxy itself (continues)
    if replace:  # the answer must come back scannable (domain_secrets.py): unencoded, unchunked
        dropped |= {"accept-encoding", "te"}
    for value in head.get("connection"):
        dropped.update(token.strip().lower() for token in value.split(","))
    lines = [f"{head.method} {where.path} {'HTTP/1.0' if replace else head.version}"]
    for name, value in head.headers:
        if name.lower() in dropped:
            continue
        if replace and carries_credentials(name):
            for placeholder, secret in replace.items():
                value = value.replace(placeholder, secret)
        lines.append(f"{name}: {value}")
    host = f"[{where.host}]" if ":" in where.host else where.host
    lines.insert(1, f"Host: {host}" if where.port == default_port else f"Host: {host}:{where.port}")
    if replace:
        lines.append("Accept-Encoding: identity")
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
