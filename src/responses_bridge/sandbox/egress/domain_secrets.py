"""Where a domain secret goes on its way out, and that it never comes back in.

Out: the placeholder the sandbox holds is swapped for the secret only in the header fields credentials travel in
(``Authorization``, ``Proxy-Authorization``, ``X-Api-Key`` and fields named like it), never in ``Host``,
``Origin``, ``Referer``, ``Via``, ``Forwarded``, cookies or any other field a server is known to repeat back
(``Origin`` comes back as ``Access-Control-Allow-Origin``), never in the request line or the body. ``TRACE``, whose
answer is the request itself, is refused on a connection that carries a secret.

In: a server may still repeat a credential (a debug endpoint echoing its headers, an error page quoting the request).
On every connection the proxy reads (plain HTTP, or HTTPS it intercepts) the answer's head and body pass through
:class:`Unsecret`, which writes each secret's value over with a mask of the same length (the placeholder, cut or
padded), across chunk boundaries, with one automaton over all the connection's secrets (net/stream_replace.py: the
same work per byte whatever the secrets). Same length keeps ``Content-Length`` true; to keep the body scannable
the request asks for it unencoded (``Accept-Encoding: identity``) and as HTTP/1.0, so no server frames it in
chunks, and an answer that comes encoded or chunked all the same is refused before the code sees a byte of it —
judged on every head the server sends (answer.py), so an interim ``100 Continue`` in front of a chunked
answer hides nothing.

A server that returns the secret in a common encoding is masked as well (:func:`encodings`): base64, standard and
URL-safe, padded or not, and inside a longer base64 text at each of its three alignments (the characters the secret
alone decides; the one at each end that it shares with its neighbours carries at most 4 of its bits);
percent-encoding, upper and lower hex digits, of the characters RFC 3986 escapes (Python's ``quote``, JavaScript's
``encodeURIComponent`` but for ``!'()*``) or of every one but letters and digits; and hex, lower and upper. An
encoder that escapes some other set of characters of the secret is not covered. Each is written over with a mask of
its own length.

What this cannot protect against: code that makes the server transform the secret otherwise before returning it (a
server that hashes, encrypts, compresses inside a body it says is plain, splits or reverses what it received, or
echoes it one byte per request), and the secret's use itself — the code can make any request the credential allows
on the allowed domain. A domain secret keeps the value out of the sandbox; it does not limit what the code does with
the access.
"""

from __future__ import annotations

import base64
import re
from urllib.parse import quote, quote_plus

from ...net.stream_replace import Sequences, StreamReplace

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


def base64_cores(secret: bytes) -> list[bytes]:
    """The base64 characters ``secret`` alone decides wherever it stands in a longer text, at each of its three
    alignments (0, 1 or 2 bytes before it in its group of three), in both alphabets: a character holds 6 bits, so
    the one that straddles the secret's first or last byte depends on its neighbours too and is left out. A
    secret encoded alone, padded or not, holds the alignment-0 core."""
    cores: list[bytes] = []
    for before in range(3):
        encoded = base64.b64encode(b"\0" * before + secret)
        first, last = -(-8 * before // 6), 8 * (before + len(secret)) // 6
        core = encoded[first:last]
        if core:
            cores += [core, core.translate(URL_SAFE)]
    return cores


URL_SAFE = bytes.maketrans(b"+/", b"-_")
SHORTEST_ENCODING = 4
EVERY_SYMBOL = {code: f"%{code:02X}" for code in range(128) if not chr(code).isalnum()}
"""Percent-encoding of every ASCII character but letters and digits, as ``str.translate`` takes it (a secret is
printable ASCII: policy.py)."""


def encodings(secret: str) -> list[str]:
    """What a server may return in place of ``secret`` by encoding it the usual ways, each masked like the value:
    base64 (:func:`base64_cores`), percent-encoding (of what a URL escapes, with ``+`` for a space or not, and of
    upper and lower hex digits) and hex (lower and upper). Those equal to the value, and those under
    :data:`SHORTEST_ENCODING` characters (a secret that short is no secret; its forms would mask common text), are
    left out."""
    raw = secret.encode()
    every_symbol = secret.translate(EVERY_SYMBOL)
    escaped = [quote(secret, safe=""), quote_plus(secret, safe=""), every_symbol]
    found = [core.decode() for core in base64_cores(raw)]
    found += escaped + [re.sub(r"%[0-9A-F]{2}", lambda hit: hit.group(0).lower(), text) for text in escaped]
    found += [raw.hex(), raw.hex().upper()]
    return list(dict.fromkeys(text for text in found if text != secret and len(text) >= SHORTEST_ENCODING))


def masking(masks: dict[str, str]) -> Sequences:
    """Each secret's value and its :func:`encodings`, each with the mask it is written over with (the secret's
    mask cut or padded to its length), compiled once for every connection of a call that carries them (0.26-0.5 s
    for 32 secrets of 8 KiB, in groups that never hold the GIL long: net/stream_replace.py; built off the event loop,
    proxy.py)."""
    pairs = [(secret.encode(), mask.encode()) for secret, mask in masks.items()]
    for secret, mask in masks.items():
        pairs += [(encoded.encode(), mask_for(encoded, mask).encode()) for encoded in encodings(secret)]
    return Sequences(pairs)


class Unsecret(StreamReplace):
    """Streams bytes on with every secret's value written over by its mask, across the pieces' cuts
    (net/stream_replace.py)."""

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
