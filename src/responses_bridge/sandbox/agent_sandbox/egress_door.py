"""The sandbox pods' one way out: a TCP listener of the bridge's (``RESPONSES_BRIDGE_AGENT_SANDBOX_EGRESS_LISTEN``)
in front of each call's own egress proxy (sandbox/egress/proxy.py, unchanged: the policy, the SSRF rules, the secrets
and every bound are its).

A pod is not on the bridge's host, so the proxy's Unix socket cannot be bound into it; instead each call under an
``allowlist`` policy gets a credential of its own (a random token), put into the pod's ``HTTP(S)_PROXY`` as the
proxy URL's password. Every connection to the door must open with a proxy request whose ``Proxy-Authorization``
names a live call's token (else a 407, and nothing is forwarded); the header is taken out and the connection is
handed, head first, to that call's proxy through its socket — so a pod can only ever use its own call's policy and
secrets, never another's, and its credential dies with its call (the door closes the call's connections then).
Secrets never enter the pod: it holds placeholders, which the call's proxy swaps on the way out. The pods'
NetworkPolicy (the overlay) lets them reach nothing but this port — but every pod reaches it, a call's without a
network too, so what the door holds for connections that have shown no credential yet is bounded per source and in
all, and for a short head deadline only (door_admission.py): a flood of idle connections never takes the
descriptors the HTTP door and ``/health`` need.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import secrets
from dataclasses import dataclass, field

import structlog

from ..egress.request_head import MAX_HEAD_BYTES
from .door_admission import Admission, DoorLimits

log = structlog.get_logger(__name__)
CHUNK = 64 * 1024
USER = "sandbox"
"""The proxy URL's user name (the token is its password; the name is not checked)."""
FULL = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nX-Egress-Outcome: door_full\r\n"
        b"Connection: close\r\n\r\n")
REFUSALS_LOGGED_EVERY = 5.0


@dataclass
class _Call:
    socket: str
    connections: set[asyncio.Task[None]] = field(default_factory=set)


class EgressDoor:
    """The listener; :meth:`admit` a call's proxy socket for a token, :meth:`revoke` it when the call ends."""

    def __init__(self, host: str, port: int, advertised: str, limits: DoorLimits | None = None) -> None:
        self.host = host
        self.port = port
        self.advertised = advertised.rstrip("/")
        self.limits = limits or DoorLimits()
        self.admission = Admission(self.limits)
        self._calls: dict[str, _Call] = {}
        self._server: asyncio.Server | None = None
        self._refused_logged = (0.0, 0)  # when the door last said how many it closed at once, and the count then

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=MAX_HEAD_BYTES)
        if self.port == 0:
            self.port = self._server.sockets[0].getsockname()[1]
            self.advertised = self.advertised.replace(":0", f":{self.port}")

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for token in list(self._calls):
            await self.revoke(token)

    def admit(self, socket_path: str) -> tuple[str, str]:
        """A new credential for the call whose proxy listens at ``socket_path``: (token, the proxy URL the pod is
        given)."""
        token = secrets.token_urlsafe(24)
        self._calls[token] = _Call(socket_path)
        scheme, _, rest = self.advertised.partition("://")
        return token, f"{scheme}://{USER}:{token}@{rest}"

    async def revoke(self, token: str) -> None:
        """The call ended: its credential is refused from now on and its connections are closed."""
        call = self._calls.pop(token, None)
        if call is None:
            return
        for task in list(call.connections):
            task.cancel()
        if call.connections:
            await asyncio.wait(call.connections)

    def _call_for(self, head: bytes) -> tuple[_Call | None, bytes]:
        """The call a request head's ``Proxy-Authorization`` names, and the head without that header."""
        lines = head.split(b"\r\n")
        kept: list[bytes] = []
        offered = b""
        for line in lines:
            name, colon, value = line.partition(b":")
            if colon and name.strip().lower() == b"proxy-authorization":
                offered = value.strip()
            else:
                kept.append(line)
        scheme, _, encoded = offered.partition(b" ")
        found: _Call | None = None
        if scheme.lower() == b"basic":
            try:
                _, _, password = base64.b64decode(encoded, validate=True).partition(b":")
            except (binascii.Error, ValueError):
                password = b""
            for token, call in self._calls.items():  # every token compared in constant time
                if hmac.compare_digest(token.encode(), password):
                    found = call
        return found, b"\r\n".join(kept)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        source = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        ticket = self.admission.arrive(source, lambda: _refuse(writer))
        if ticket is None:  # past a bound: closed at once, the descriptor given back before anything is read
            _refuse(writer)
            self._say_refused()
            return
        try:
            await self._serve_admitted(reader, writer, source, ticket)
        finally:
            self.admission.leave(source, ticket)

    def _say_refused(self) -> None:
        """One log line every few seconds at most while the door closes connections at once (a flood would
        otherwise write one per connection)."""
        now = asyncio.get_running_loop().time()
        said_at, said = self._refused_logged
        if now - said_at >= REFUSALS_LOGGED_EVERY:
            log.warning("egress_door_full", closed=self.admission.refused - said, pending=self.admission.pending,
                        open=self.admission.open, cap=self.admission.cap)
            self._refused_logged = (now, self.admission.refused)

    async def _serve_admitted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, source: str,
                              ticket: int) -> None:
        try:
            async with asyncio.timeout(self.limits.head_seconds):
                head = await reader.readuntil(b"\r\n\r\n")
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            writer.close()
            return
        self.admission.shown(source, ticket)  # no longer pending: a 407 or a relay, either soon over
        call, head = self._call_for(head)
        if call is None:
            with contextlib.suppress(OSError):
                writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic "
                             b"realm=\"sandbox egress\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                await writer.drain()
            writer.close()
            log.info("egress_door_refused", reason="no live call's credential")
            return
        task = asyncio.current_task()
        assert task is not None
        call.connections.add(task)
        try:
            proxy_reader, proxy_writer = await asyncio.open_unix_connection(call.socket)
        except OSError:
            call.connections.discard(task)
            writer.close()
            return
        try:
            proxy_writer.write(head)
            await _relay(reader, writer, proxy_reader, proxy_writer)
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            call.connections.discard(task)
            for stream in (writer, proxy_writer):
                with contextlib.suppress(Exception):
                    stream.close()


def _refuse(writer: asyncio.StreamWriter) -> None:
    """A connection past the door's bounds: a 503 saying so, and closed (a pending one's handler then reads its
    end and returns)."""
    with contextlib.suppress(Exception):
        writer.write(FULL)
        writer.close()


async def _relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, proxy_reader: asyncio.StreamReader,
                 proxy_writer: asyncio.StreamWriter) -> None:
    """Bytes both ways until the proxy's side ends (the call's proxy counts and bounds them)."""

    async def pipe(source: asyncio.StreamReader, target: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await source.read(CHUNK):
                target.write(data)
                await target.drain()
            if target.can_write_eof():
                target.write_eof()

    sending = asyncio.ensure_future(pipe(reader, proxy_writer))
    try:  # the proxy's side ending ends the connection (a pod's half-close still gets its answer)
        await pipe(proxy_reader, writer)
    finally:
        sending.cancel()
