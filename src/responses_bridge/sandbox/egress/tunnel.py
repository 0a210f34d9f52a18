"""What a ``CONNECT`` tunnel may carry: TLS to the host that was allowed, on the port HTTPS goes to.

A tunnel is raw bytes: without a check, ``CONNECT allowed.example:22`` is SSH to that host, and a TLS connection
through a shared front end (a CDN, a cloud load balancer) may name any site the front end serves in its
ClientHello, whatever host the ``CONNECT`` named. So a tunnel goes to port 443 only (plain requests to 80), unless
the deployment names the port for the address (``RESPONSES_BRIDGE_CODE_EGRESS_ALLOWED_TARGETS`` ``address:port``),
and its first bytes must be a TLS ClientHello whose server name (SNI) is the allowed host; an IP literal, which
has no server name, may send none.
"""

from __future__ import annotations

import asyncio
import ipaddress

HTTPS_PORT = 443
HTTP_PORT = 80
MAX_HELLO_BYTES = 16 * 1024 + 5
"""A ClientHello in one TLS record (16 KiB at most, and a large one with post-quantum key shares is about 2 KiB)."""


class NotTheAllowedTLS(Exception):
    """The tunnel's first bytes are not a ClientHello for the allowed host: the reason, for the log. ``unused``:
    no byte came at all (a tunnel opened ahead and closed, or left, unused): no request of anyone's was refused."""

    def __init__(self, reason: str, *, unused: bool = False) -> None:
        super().__init__(reason)
        self.unused = unused


def standard_port(tunnel: bool) -> int:
    return HTTPS_PORT if tunnel else HTTP_PORT


async def client_hello(reader: asyncio.StreamReader, host: str, seconds: float) -> bytes:
    """The tunnel's first TLS record, read whole (within ``seconds``) and checked to be a ClientHello naming
    ``host``: the bytes to send on. Raises :class:`NotTheAllowedTLS`."""
    started = False
    try:
        async with asyncio.timeout(seconds):
            header = await reader.readexactly(1)
            started = True
            header += await reader.readexactly(4)
            if header[0] != 0x16 or header[1] != 0x03:
                raise NotTheAllowedTLS("not_tls")
            length = int.from_bytes(header[3:5], "big")
            if length > MAX_HELLO_BYTES - 5:
                raise NotTheAllowedTLS("not_tls")
            body = await reader.readexactly(length)
    except (asyncio.IncompleteReadError, TimeoutError, OSError):
        raise NotTheAllowedTLS("not_tls", unused=not started) from None
    name = server_name(body)
    if name is None:
        if _is_address(host):
            return header + body
        raise NotTheAllowedTLS("no_server_name")
    if name.rstrip(".").lower() != host.rstrip(".").lower():
        raise NotTheAllowedTLS("server_name_mismatch")
    return header + body


def server_name(handshake: bytes) -> str | None:
    """The host name a ClientHello's ``server_name`` extension carries (None: none). Raises
    :class:`NotTheAllowedTLS` for what is not a ClientHello, or one cut short."""
    try:
        if handshake[0] != 0x01:
            raise NotTheAllowedTLS("not_tls")
        end = 4 + int.from_bytes(handshake[1:4], "big")
        if end > len(handshake):
            raise NotTheAllowedTLS("not_tls")  # a hello spread over several records: no client sends one
        at = 4 + 2 + 32  # version, random
        at += 1 + handshake[at]  # session id
        at += 2 + int.from_bytes(handshake[at:at + 2], "big")  # cipher suites
        at += 1 + handshake[at]  # compression methods
        if at >= end:
            return None  # no extensions at all
        extensions_end = at + 2 + int.from_bytes(handshake[at:at + 2], "big")
        at += 2
        while at + 4 <= min(extensions_end, end):
            kind = int.from_bytes(handshake[at:at + 2], "big")
            size = int.from_bytes(handshake[at + 2:at + 4], "big")
            data = handshake[at + 4:at + 4 + size]
            at += 4 + size
            if kind != 0:
                continue
            if len(data) < 5 or data[2] != 0:
                raise NotTheAllowedTLS("not_tls")
            length = int.from_bytes(data[3:5], "big")
            name = data[5:5 + length]
            if len(name) != length or not name.isascii():
                raise NotTheAllowedTLS("not_tls")
            return name.decode("ascii")
        return None
    except IndexError:
        raise NotTheAllowedTLS("not_tls") from None


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True
