"""Where a domain secret goes on its way out, and that it never comes back in.

Out: the placeholder the sandbox holds is swapped for the secret only in the header fields credentials travel in
(``Authorization``, ``Proxy-Authorization``, ``X-Api-Key`` and fields named like it), never in ``Host``,
``Origin``, ``Referer``, ``Via``, ``Forwarded``, cookies or any other field a server is known to repeat back
(``Origin`` comes back as ``Access-Control-Allow-Origin``), never in the request line or the body. ``TRACE``, whose
answer is the request itself, is refused on a connection that carries a secret.

In: a server may still repeat a credential (a debug endpoint echoing its headers, an error page quoting the request).
On every connection the proxy reads (plain HTTP, or HTTPS it intercepts) the answer's head and body pass through
:class:`Unsecret`, which writes each secret's value over with a mask of the same length (the placeholder, cut or
padded), across chunk boundaries, with one automaton over all the connection's secrets (stream_replace.py: the
same work per byte whatever the secrets). Same length keeps ``Content-Length`` true; to keep the body scannable
the request asks for it unencoded (``Accept-Encoding: identity``) and as HTTP/1.0, so no server frames it in
chunks, and an answer that comes encoded or chunked all the same is refused before the code sees a byte of it —
judged on every head the server sends (egress_answer.py), so an interim ``100 Continue`` in front of a chunked
answer hides nothing.

What this cannot protect against: code that makes the server transform the secret before returning it (a server
that hashes, encodes, splits or reverses what it received, or echoes it one byte per request), and the secret's
use itself — the code can make any request the credential allows on the allowed domain. A domain secret keeps the
value out of the sandbox; it does not limit what the code does with the access.
"""

from __future__ import annotations

import re

from ..stream_replace import Sequences, StreamReplace

CREDENTIAL_FIELDS = frozenset({"authorization", "proxy-authorization", "x-api-key", "api-key", "apikey",
                               "x-auth-token", "x-access-token", "private-token", "x-goog-api-key"})
CREDENTIAL_SUFFIXES = ("-key", "-token", "-secret", "-apikey", "-api-key", "-auth", "-authorization", "-password")
NEVER_FIELDS = frozenset({"host", "origin", "referer", "via", "forwarded", "cookie", "cookie2", "user-agent",
                          "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-real-ip", "content-type",
                          "accept", "accept-encoding", "te", "x-request-id", "x-correlation-id", "traceparent"})
"""Fields a server may repeat back (CORS, logs, redirects, tracing): a placeholder there is sent as it is."""
UNSCANNABLE = "the answer came compressed or in chunks, where the proxy cannot take a secret back out of it"
STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([1-9][0-9][0-9])(?: [^\r\n]*)?\r\n")


def carries_credentials(name: str) -> bool:
    """Whether a request header field named ``name`` is one a secret may be put into."""
    lowered = name.lower()
    if lowered in NEVER_FIELDS:
        return False
    return lowered in CREDENTIAL_FIELDS or lowered.endswith(CREDENTIAL_SUFFIXES)


def mask_for(secret: str, placeholder: str) -> str:
    """What stands where the secret came back: the placeholder, cut or padded to the secret's length."""
    if len(secret) <= len(placeholder):
        return placeholder[: len(secret)]
    return placeholder + "*" * (len(secret) - len(placeholder))


def masking(masks: dict[str, str]) -> Sequences:
    """Each secret's value and the mask it is written over with, compiled once for every connection of a call
    that carries them (a few ms for 32 secrets of 8 KiB: built off the event loop, egress.py)."""
    return Sequences((secret.encode(), mask.encode()) for secret, mask in masks.items())


class Unsecret(StreamReplace):
    """Streams bytes on with every secret's value written over by its mask, across the pieces' cuts
    (stream_replace.py)."""

    __slots__ = ()

    def __init__(self, masks: dict[str, str] | Sequences) -> None:
        super().__init__(masks if isinstance(masks, Sequences) else masking(masks))


def status_of(head: bytes) -> int | None:
    """The status code of an answer's head (``HTTP/1.x NNN reason``), None when its first line is none."""
    found = STATUS_LINE.match(head)
    return int(found.group(1)) if found else None


def unscannable(head: bytes) -> bool:
    """Whether an answer's head frames or encodes its body so a secret could pass :class:`Unsecret` unseen."""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        field, value = name.strip().lower(), value.strip().lower()
        if field == b"transfer-encoding" and value not in (b"", b"identity"):
            return True
        if field == b"content-encoding" and value not in (b"", b"identity"):
            return True
    return False
