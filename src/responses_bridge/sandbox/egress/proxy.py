"""The egress proxy of one sandbox call under an ``allowlist`` network policy: the only way out of a sandbox that
has no network of its own.

The bridge listens on a Unix socket in a private directory of its own; bubblewrap binds the socket into the sandbox
(``/run/egress.sock``), and the sandbox's init relays ``127.0.0.1:3128`` of the sandbox's own network namespace to
it (launcher.py), which ``HTTP_PROXY``/``HTTPS_PROXY`` (both cases) name. The sandbox keeps ``--unshare-net``: the
code reaches nothing but this proxy, and the proxy decides for every connection:

1. the request head is read (head_reading.py) and parsed strictly (request_head.py): ``CONNECT host:port``
   (HTTPS, a tunnel) or an absolute ``http://`` request (plain HTTP, forwarded one request per connection); a
   head past 32 KiB is refused (``head_too_large``: its rest read and dropped, a bounded while, so the client
   reads the answer);
2. the host must match the policy's ``allowed_domains`` (an IP literal only when listed itself), or, under an
   agent environment's block list, be none of its names nor under one: else a 403;
3. the name is resolved here, on the bridge's side, and every address must pass the deployment's rules
   (policy.EgressRules: the same SSRF rules as MCP and web search, widened only by
   ``RESPONSES_BRIDGE_CODE_EGRESS_ALLOWED_TARGETS``): else a 403. The proxy connects to the address it checked, so
   a second lookup cannot answer differently (DNS rebinding);
   a call given an origin gate (origins.py: a desktop's browser, whose client approves each site) asks it
   only then, before connecting: the policy bounds what can be approved; not approved is a 403;
4. bytes (both ways, per connection and per call), connections per call, per tenant and per process
   (limits.py) and each connection's time are bounded; the call's end closes every connection. A call whose
   origin gate bounds it by rates (rates.py: a desktop's browser, which lives hours) has no lifetime counts of
   connections and bytes: connections open at once, new connections and bytes a second bound it instead, and the
   gate hears each refusal (its owner tells the model);
5. each connection is logged (host, port, bytes, outcome — never a path, a header or a payload) and counted
   (``responses_bridge_egress_connections_total`` by allowlist entry — ``*`` under a block list — and outcome,
   ``…_egress_bytes_total``).

Domain secrets are put into the header values of requests to the hosts they are for, never into bodies: a body is
the code's data, often echoed back by the server (a form, a paste, a search), and a value swapped into it would
come back readable to the code; a header is what credentials are sent in. Over plain HTTP that is the forwarded
head (request_head.forwarded_head); a ``CONNECT`` to a host a secret is for is intercepted (tls.py: the
proxy ends the code's TLS with the call's own name-constrained authority, which the sandbox trusts, and opens its
own verified TLS to the server), one request per connection; every other ``CONNECT`` is an end-to-end tunnel.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import ssl
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from ...net.host_policy import HostUnresolved, IPAddress, resolve
from ...net.stream_replace import Sequences
from ...observability import metrics
from ..command import EgressBinding
from ..scratch import scratch_root
from .answer import Unscannable, masking_pool, relay_masked
from .domain_secrets import Unsecret, mask_for, masking
from .head_reading import HEAD_SECONDS, Lingering, read_head, read_tunnelled_head
from .limits import SHARES, EgressLimits
from .origins import OriginGate, origin_of
from .policy import DomainSecret, EgressRules, NetworkPolicy, new_placeholder
from .rates import EgressOwner, Pace
from .refusals import CLOSED, CUT, Refused, answer, continues_or_refused, discard, refusal
from .request_head import MAX_HEAD_BYTES, Destination, forwarded_head
from .tunnel import HTTP_PORT, HTTPS_PORT, NotTheAllowedTLS, client_hello, standard_port

if TYPE_CHECKING:
    from .tls import Interceptor

log = structlog.get_logger(__name__)

SANDBOX_SOCKET = "/run/egress.sock"
SANDBOX_CA_BUNDLE = "/run/egress-ca.pem"
SANDBOX_PORT = 3128
CONNECT_SECONDS = 10.0
CHUNK = 64 * 1024
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_TURN = ("turn", b"")
"""What :meth:`EgressProxy._admit` says of a connection that may wait for its turn (limits.py)."""


@dataclass(frozen=True, slots=True)
class EgressSettings:
    """The deployment's side of every allowlist policy: where the proxy may connect, and its bounds."""

    rules: EgressRules
    limits: EgressLimits



class OverBudget(Exception):
    """A connection or the call passed its bytes."""


class EgressProxy:
    """One call's proxy: :meth:`start` before the sandbox (the socket must exist to be bound in), :meth:`close`
    after it."""

    def __init__(self, policy: NetworkPolicy, rules: EgressRules, limits: EgressLimits, *, tenant: str = "",
                 resolver: Resolver = resolve, origins: OriginGate | None = None) -> None:
        self.policy = policy
        self.origins = origins  # origins.py: asked before any connection, once the policy allowed it
        self.rules = rules
        self.limits = limits
        self.tenant = tenant
        self.resolver = resolver
        self.placeholders = {secret.name: new_placeholder() for secret in policy.secrets}
        self.tls: Interceptor | None = None
        if policy.secrets:  # the cryptography library is loaded by the first call that needs it (as sealing.py)
            from .tls import Interceptor

            self.tls = Interceptor([secret.domain for secret in policy.secrets])
        self._client_tls: ssl.SSLContext | None = None
        self._masking: dict[tuple[str, ...], Sequences] = {}  # each set of secrets compiled once per call
        self.bytes_left = limits.call_bytes
        self.opened = 0
        self._owner = origins if isinstance(origins, EgressOwner) else None  # a browser's (rates.py): its bounds
        self.rates = self._owner.rates if self._owner is not None else None  # in place of the lifetime counts
        self._pace_of = Pace(self.rates) if self.rates is not None else None
        self.refused: Counter[str] = Counter()  # closed as accepted, past a limit, by outcome: logged at the close
        self._lingering = Lingering()
        self._directory: Path | None = None
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def socket_path(self) -> str:
        assert self._directory is not None, "start() first"
        return str(self._directory / "proxy.sock")

    def binding(self) -> EgressBinding:
        """What the sandbox's command line adds for this proxy (command.py)."""
        files = {str(self._directory / "ca.pem"): SANDBOX_CA_BUNDLE} if self.tls is not None and self._directory \
            else {}
        return EgressBinding(self.socket_path, SANDBOX_SOCKET, SANDBOX_PORT, self.environment(), files)

    def environment(self) -> dict[str, str]:
        """What the sandbox's environment gets: the proxy's address, and each secret's placeholder."""
        proxy = f"http://127.0.0.1:{SANDBOX_PORT}"
        found = {"HTTP_PROXY": proxy, "HTTPS_PROXY": proxy, "http_proxy": proxy, "https_proxy": proxy}
        if self.tls is not None:  # the system's authorities and this call's (tls.py)
            found.update(dict.fromkeys(("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"), SANDBOX_CA_BUNDLE))
        found.update(self.placeholders)
        return found

    async def start(self) -> None:
        self._directory = Path(await asyncio.to_thread(_socket_directory))
        if self.tls is not None:  # the system's bundle is read, and written with the call's, off the loop
            bundle = await asyncio.to_thread(self.tls.bundle)
            await asyncio.to_thread((self._directory / "ca.pem").write_bytes, bundle)
            await asyncio.to_thread(os.chmod, self._directory / "ca.pem", 0o644)
        self._server = await asyncio.start_unix_server(self._serve, path=self.socket_path, limit=MAX_HEAD_BYTES)
        # the sandbox's uid (a root bridge's is not root: identity.py) connects to it through its bind
        await asyncio.to_thread(os.chmod, self.socket_path, 0o666)

    async def close(self) -> None:
        """Stop listening and end every connection; the socket's directory is removed."""
        if self._server is not None:
            self._server.close()
        for handler in list(self._handlers):
            handler.cancel()
        if self._handlers:
            await asyncio.wait(self._handlers)
        if self.refused:
            for outcome, count in self.refused.items():
                metrics.egress_connection("(none)", outcome, 0, 0, count=count)
            cap = self.limits.bridge_cap
            log.warning("egress_connections_refused", tenant=self.tenant, refused=self.refused.total(),
                        outcomes=dict(self.refused), limit=self.limits.connections,
                        tenant_limit=self.limits.tenant_share(cap), bridge_limit=cap)
            self.refused.clear()
        if self._directory is not None:
            await asyncio.to_thread(shutil.rmtree, self._directory, True)
            self._directory = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # a browser's connection: a place among those open at once and a token of the connection rate (rates.py)
        paced = await self._pace_of.enter() if self._pace_of is not None else None
        refusal = self._refuse(*paced) if paced is not None else None
        placed = self._pace_of is not None and refusal is None  # holds one of the rates' places (released below)
        if refusal is None:
            refusal = self._admit()
        if refusal is _TURN:  # more tenants than connections and this one holds none: its turn may come
            refusal = await self._turn()
        if refusal is not None:  # counted where it is made, before a byte is read: ended at once, no log line
            if placed and self._pace_of is not None:
                self._pace_of.leave()
            self.refused[refusal[0]] += 1
            await self._lingering.refuse(reader, writer, refusal[1])  # head_reading.py: the 403, not a reset
            return
        try:
            await self._serve_admitted(reader, writer)
        finally:
            SHARES.release(self.tenant)
            if self._pace_of is not None:
                self._pace_of.leave()

    def _refuse(self, outcome: str, message: str, host: str | None = None) -> tuple[str, bytes]:
        """The outcome and the answer of a connection refused before its head was read; the gate's owner told."""
        self._told(host, outcome, message)
        return outcome, refusal(403, outcome, message)

    def _told(self, host: str | None, outcome: str, message: str) -> None:
        """The gate's owner hears of a refusal (rates.py's :class:`EgressOwner`): every one, whatever its reason —
        a head too large or malformed, a bound, the policy, a tunnel closed — but an origin it did not approve (its
        own business already: origins.py). What is no request is not a refusal and never gets here: a socket
        opened ahead and closed, or left, without a whole head, a tunnel that carried nothing
        (``Refused.told``, ``NotTheAllowedTLS.unused``)."""
        if self._owner is not None and outcome != "origin_not_approved":
            try:
                self._owner.refused(host, outcome, message)
            except Exception:  # the owner's failure never fails the connection's answer
                log.exception("egress_refusal_callback_failed", outcome=outcome)

    def _admit(self) -> tuple[str, bytes] | None:
        """Count a connection as it is accepted: None to serve it, else the outcome and the short answer it gets.
        The code can reach the proxy's socket directly (it is bound into the sandbox), past the launcher's relay, so
        the call's limit, its tenant's share and the bridge-wide cap are counted here, not after a request head it
        may never send."""
        self.opened += 1
        if self.rates is None and self.opened > self.limits.connections:
            return self._refuse("connection_limit", f"this call may open {self.limits.connections} connections")
        cap = self.limits.bridge_cap
        refused = SHARES.admit(self.tenant, share=self.limits.tenant_share(cap), cap=cap)
        if refused is not None:
            return _TURN if refused.turn else self._refuse(refused.outcome, refused.message)
        return None

    async def _turn(self) -> tuple[str, bytes] | None:
        refused = await SHARES.wait_turn(self.tenant, self.limits.bridge_cap)
        return None if refused is None else self._refuse(refused.outcome, refused.message)

    async def _serve_admitted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        seen = _Seen(time.monotonic())
        try:
            try:
                upstream = await self._open(reader, writer, seen)
            except Refused as refused:
                seen.outcome = refused.outcome
                if refused.told:
                    self._told(seen.where.host if seen.where else None, refused.outcome, str(refused))
                await answer(writer, refused.status, str(refused), refused.outcome)
                if refused.unread:
                    await discard(reader)
                return
            up_reader, up_writer = upstream
            try:
                seen.outcome = await self._relay(reader, writer, up_reader, up_writer, seen)
            finally:
                up_writer.close()
            said = CUT.get(seen.outcome) or (None if seen.unused else CLOSED.get(seen.outcome))
            if said is not None:
                self._told(seen.where.host if seen.where else None, seen.outcome, said)
        except asyncio.CancelledError:
            seen.outcome = "call_ended"
        except OSError:
            seen.outcome = "reset"
        finally:
            with contextlib.suppress(Exception):
                writer.close()
            self._handlers.discard(task)
            metrics.egress_connection(seen.entry, seen.outcome, seen.sent, seen.received)
            where = seen.where
            log.info("egress_connection", tenant=self.tenant, host=where.host[:255] if where else None,
                     port=where.port if where else None, allowed_by=seen.entry, outcome=seen.outcome,
                     sent=seen.sent, received=seen.received, seconds=round(time.monotonic() - seen.started, 3))

    async def _open(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    seen: _Seen) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Read and check one request head and connect to its target: the server's streams (a plain request's
        head already sent), or :class:`Refused`. ``seen`` learns what the log and the metrics say."""
        data, head, where = await read_head(reader, seen)  # head_reading.py: or Refused
        expects = not where.tunnel and continues_or_refused(head)
        if self.rates is None and self.bytes_left <= 0:
            raise Refused(403, "bytes_limit", f"this call has moved its {self.limits.call_bytes} bytes")
        entry = self.policy.entry_for(where.host)
        if entry is None:
            raise Refused(403, "denied_domain", f"{where.host[:255]} is " + (
                "blocked by the container's policy" if self.policy.blocked else
                "not in the container's allowed domains"))
        seen.entry = entry
        secrets = self.policy.secrets_for(where.host)
        if secrets:
            seen.unsecret = Unsecret(await self._masks(secrets))
        if secrets and head.method == "TRACE":
            raise Refused(403, "trace_refused", "TRACE answers with the request, secrets and all: refused here")
        addresses = await self._addresses(where)
        if self.origins is not None:  # the policy's and the rules' checks passed: only what they allow is asked
            asked = origin_of(where)
            if not await self.origins.decide(asked):
                raise Refused(403, "origin_not_approved", f"{asked[:300]} is not approved (yet) by the desktop's "
                              "owner")
        if where.tunnel and secrets:
            return await self._intercept(reader, writer, where, secrets, seen, addresses)
        upstream = await _connect(addresses, where.port)
        if not where.tunnel:
            replace = {self.placeholders[secret.name]: secret.value for secret in secrets}
            forwarded = forwarded_head(head, where, replace)
            self.bytes_left -= len(data)
            seen.sent += len(data)  # what the code sent, not the secrets put in
            upstream[1].write(forwarded)
            if expects:  # the request is on its way: the code may send its body (request_head.continues)
                writer.write(CONTINUE)
        return upstream

    async def _masks(self, secrets: list[DomainSecret]) -> Sequences:
        """The automaton writing ``secrets`` over (domain_secrets.masking), built once per call, off the loop."""
        key = tuple(secret.name for secret in secrets)
        if key not in self._masking:
            masks = {secret.value: mask_for(secret.value, self.placeholders[secret.name]) for secret in secrets}
            self._masking[key] = await asyncio.get_running_loop().run_in_executor(masking_pool(), masking, masks)
        return self._masking[key]

    async def _addresses(self, where: Destination) -> list[IPAddress]:
        """The addresses of ``where``'s host, every one allowed by the deployment's rules, or :class:`Refused`."""
        try:
            addresses = await self.resolver(where.host, where.port)
        except HostUnresolved:
            raise Refused(502, "unresolved", f"{where.host[:255]} could not be resolved") from None
        if not all(self.rules.allows(address, where.port) for address in addresses):
            raise Refused(403, "denied_address", f"{where.host[:255]} resolves to an address this deployment does "
                          "not let the sandbox reach (loopback, private or link-local; an operator may allow one "
                          "with RESPONSES_BRIDGE_CODE_EGRESS_ALLOWED_TARGETS)")
        if where.port != standard_port(where.tunnel) and \
                not all(self.rules.names_port(address, where.port) for address in addresses):
            raise Refused(403, "denied_port", f"port {where.port}: HTTPS goes by CONNECT to port {HTTPS_PORT}, plain "
                          f"HTTP to {HTTP_PORT}; another port only where RESPONSES_BRIDGE_CODE_EGRESS_ALLOWED_TARGETS "
                          "names it (address:port)")
        return addresses

    async def _intercept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, where: Destination,
                         secrets: list[DomainSecret], seen: _Seen,
                         addresses: list[IPAddress]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A ``CONNECT`` to a host with secrets: the proxy ends the code's TLS with this call's authority
        (tls.py), reads one request, puts the secrets into its headers and sends it over its own verified
        TLS connection to the server. The server's streams, the request already sent."""
        assert self.tls is not None  # ``addresses`` checked before the code is told anything is established
        server_tls = await asyncio.to_thread(self.tls.server_context, where.host)
        # no wait between the answer and the switch: the code's TLS hello must not be read as plain bytes
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        seen.intercepted = True
        data, head = await read_tunnelled_head(reader, writer, server_tls)  # head_reading.py: or Refused
        expects = continues_or_refused(head)
        if head.method == "TRACE":
            raise Refused(403, "trace_refused", "TRACE answers with the request, secrets and all: refused here")
        if self._client_tls is None:
            from .tls import client_context

            self._client_tls = await asyncio.to_thread(client_context)
        inner = Destination(where.host, where.port, tunnel=False, path=head.target)
        upstream = await _connect(addresses, where.port, tls=self._client_tls, server_hostname=where.host)
        replace = {self.placeholders[secret.name]: secret.value for secret in secrets}
        upstream[1].write(forwarded_head(head, inner, replace, default_port=443))
        self.bytes_left -= len(data)
        seen.sent += len(data)
        if expects:
            writer.write(CONTINUE)
        return upstream

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter, seen: _Seen) -> str:
        """Copy both ways until both ends are done (``seen`` counts the bytes): the outcome."""
        if seen.where is not None and seen.where.tunnel and not seen.intercepted:
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            try:  # TLS to the host that was allowed, nothing else (tunnel.py)
                hello = await client_hello(reader, seen.where.host, HEAD_SECONDS)
            except NotTheAllowedTLS as refused:
                seen.unused = refused.unused
                return str(refused)
            up_writer.write(hello)
            seen.sent += len(hello)
            self.bytes_left -= len(hello)
        budget = [self.limits.connection_bytes - seen.sent]
        lifetime = self.rates is None  # a browser's bytes are paced (rates.py), not counted over its life
        paced = self._pace_of.bytes if self._pace_of is not None else None

        async def pipe(source: asyncio.StreamReader, target: asyncio.StreamWriter, sending: bool) -> None:
            def count(size: int) -> None:
                budget[0] -= size
                self.bytes_left -= size
                if budget[0] < 0 or (lifetime and self.bytes_left < 0):
                    raise OverBudget
                if sending:
                    seen.sent += size
                else:
                    seen.received += size

            unsecret = None if sending else seen.unsecret
            if unsecret is not None:  # every head judged, the body written over (answer.py)
                counting = count if self._pace_of is None else self._pace_of.counting(count)
                await relay_masked(source, target, unsecret, counting, CHUNK)
            else:
                while chunk := await source.read(CHUNK):
                    count(len(chunk))
                    target.write(chunk)
                    await target.drain()
                    if paced is not None and (delay := paced.take(len(chunk))) > 0:
                        await asyncio.sleep(delay)
            if target.can_write_eof():
                with contextlib.suppress(OSError):
                    target.write_eof()

        outcome = "ok"
        try:
            async with asyncio.timeout(self.limits.connection_seconds):
                try:
                    async with asyncio.TaskGroup() as group:  # one side failing ends the other
                        sending = group.create_task(pipe(reader, up_writer, True))
                        # the server's end is the connection's: nothing the code sends after it is read
                        group.create_task(pipe(up_reader, writer, False)).add_done_callback(
                            lambda _: sending.cancel())
                except* OverBudget:
                    outcome = "bytes_limit"
                except* Unscannable as refused:
                    outcome = "unscannable_answer"
                    await answer(writer, 502, str(refused.exceptions[0]), outcome)
                except* (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    outcome = "bad_answer"
                except* OSError:  # ConnectionError among them: either end went away
                    outcome = "reset"
        except TimeoutError:
            outcome = "timeout"
        return outcome


@dataclass(slots=True)
class _Seen:
    """What one connection's log line and metrics say."""

    started: float
    where: Destination | None = None
    entry: str = "(none)"
    outcome: str = "error"
    intercepted: bool = False
    unsecret: Unsecret | None = None  # the answer's secrets written over (a connection carrying some)
    unused: bool = False  # a tunnel closed before it carried a byte: no request refused (tunnel.NotTheAllowedTLS)
    sent: int = 0
    received: int = 0


async def _connect(addresses: list[IPAddress], port: int, *, tls: ssl.SSLContext | None = None,
                   server_hostname: str | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """The first address (in the resolver's order) that takes the connection (and, with ``tls``, whose
    certificate is valid for ``server_hostname``)."""
    failed = "the server did not take the connection"
    for address in addresses:
        try:
            async with asyncio.timeout(CONNECT_SECONDS):
                return await asyncio.open_connection(str(address), port, limit=CHUNK, ssl=tls,
                                                     server_hostname=server_hostname if tls is not None else None)
        except ssl.SSLError as error:
            failed = f"the server's TLS failed the bridge's checks ({error.reason or 'handshake'})"
        except (OSError, TimeoutError):
            continue
    raise Refused(502, "connect_failed", failed)


def _socket_directory() -> str:
    """A directory of the call's own for the proxy's socket, in the bridge's scratch directory (scratch.py, never
    the shared temporary directory itself), named by ``mkdtemp`` (unguessable) and traversable but not listable by
    others (0711 as root), so that the sandbox's unprivileged uid reaches the socket bound into it."""
    directory = tempfile.mkdtemp(prefix="egress-", dir=scratch_root(None))
    os.chmod(directory, 0o711 if os.geteuid() == 0 else 0o700)
    return directory
