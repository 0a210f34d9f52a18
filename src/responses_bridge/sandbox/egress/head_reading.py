"""How the egress proxy (proxy.py) reads what the code sends it before deciding anything: the request head of a
connection (plain, or inside an intercepted tunnel), refused as :class:`Refused` when it is not whole, too large
(``head_too_large``, its start still read for the host it names) or malformed; and what a connection refused before
its head is read sent, read and dropped a short while so the client reads its 403 rather than a reset.

A module of its own because proxy.py was over the module-size limit (tests/unit/test_module_size.py): this is the
reading, proxy.py keeps the decisions (the policy, the deployment's rules, the bounds) and the relaying. It imports
nothing of proxy.py."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Protocol

from .refusals import TOO_LARGE, Refused
from .request_head import (
    MAX_HEAD_BYTES,
    BadRequest,
    Destination,
    RequestHead,
    destination,
    named_destination,
    parse_head,
)

HEAD_SECONDS = 10.0
NAMED_BYTES = 2048
"""The start of a head too large that is read for the host it names (request_head.named_destination)."""
LINGERING = 8
LINGER_SECONDS = 1.0
"""Connections refused past a limit are closed at once; up to ``LINGERING`` of a call's at a time first read what
the client sent (at most ``LINGER_SECONDS``): closing a Unix socket with unread bytes resets it, and the client
would never read its 403."""


class Seeing(Protocol):
    """What learns where a connection went (proxy.py's log line and metrics), a head refused or not."""

    where: Destination | None


async def read_head(reader: asyncio.StreamReader, seen: Seeing) -> tuple[bytes, RequestHead, Destination]:
    """One request head of the code's: its bytes, parsed, and where it goes (``seen.where`` too, even of a head too
    large, from its start), or :class:`Refused`."""
    try:
        async with asyncio.timeout(HEAD_SECONDS):
            data = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:  # the head is left in the reader: its start names where it went
        seen.where = named_destination(await reader.read(NAMED_BYTES))
        raise Refused(400, "head_too_large", TOO_LARGE, unread=True) from None
    except (asyncio.IncompleteReadError, TimeoutError):
        raise Refused(400, "bad_request", "no complete request head (at most 32 KiB, within 10 s)",
                      told=False) from None
    if len(data) > MAX_HEAD_BYTES:  # its end just past the bound, within what the reader keeps
        seen.where = named_destination(data[:NAMED_BYTES])
        raise Refused(400, "head_too_large", TOO_LARGE)
    try:
        head = parse_head(data)
        where = seen.where = destination(head)
    except BadRequest as bad:
        raise Refused(400, "bad_request", f"bad request: {bad}") from None
    return data, head, where


async def read_tunnelled_head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                              server_tls: ssl.SSLContext) -> tuple[bytes, RequestHead]:
    """The code's TLS ended with ``server_tls`` (tls.py), the one request head inside it: its bytes and parsed,
    an origin-form request, or :class:`Refused`."""
    try:
        async with asyncio.timeout(HEAD_SECONDS):
            await writer.start_tls(server_tls)
            data = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise Refused(400, "head_too_large", TOO_LARGE, unread=True) from None
    except (asyncio.IncompleteReadError, TimeoutError, ssl.SSLError, OSError):
        raise Refused(400, "bad_request", "no TLS handshake and request head within 10 s (does the client "
                      "trust SSL_CERT_FILE?)", told=False) from None
    if len(data) > MAX_HEAD_BYTES:
        raise Refused(400, "head_too_large", TOO_LARGE)
    try:
        head = parse_head(data)
    except BadRequest as bad:
        raise Refused(400, "bad_request", f"bad request: {bad}") from None
    if not head.target.startswith("/") or head.method == "CONNECT":
        raise Refused(400, "bad_request", "inside the tunnel, a request names an origin-form path")
    return data, head


class Lingering:
    """One call's connections refused before their head was read (past a limit): each gets its answer and is
    closed, up to ``LINGERING`` at a time first reading what the client sent (at most ``LINGER_SECONDS``)."""

    def __init__(self) -> None:
        self.now = 0

    async def refuse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, said: bytes) -> None:
        writer.write(said)
        if self.now < LINGERING:  # a few read what was sent first, so a client gets the 403, not a reset
            self.now += 1
            try:
                with contextlib.suppress(TimeoutError, OSError):
                    async with asyncio.timeout(LINGER_SECONDS):
                        await reader.read(MAX_HEAD_BYTES)
            finally:
                self.now -= 1
        writer.close()
