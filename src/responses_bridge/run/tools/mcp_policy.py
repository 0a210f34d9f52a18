"""Which MCP hosts the bridge may connect to, checked on the address it actually connects to.

A request names the MCP server's URL, so without a check any client could make the bridge reach the loopback
interface, the cloud metadata address or the private network behind it (SSRF). Public addresses are allowed;
private, loopback, link-local and every other non-global address (and multicast) are refused unless
``RESPONSES_BRIDGE_MCP_ALLOWED_HOSTS`` lists the host name, the address, or a network (CIDR) holding it.

Checking a name and then letting the HTTP client resolve it again would let a DNS answer change in between
(DNS rebinding). So the check lives in :class:`GuardedNetworkBackend`, the socket layer under the HTTP client: it
resolves the name, checks every address, and connects to the checked address itself, while the HTTP layer above
keeps the original host name for the ``Host`` header and TLS (SNI and certificate checks). :func:`check_host` runs
the same check up front, so a refused host is a 400 before anything is sent.
"""

from __future__ import annotations

import ipaddress
import socket
from contextlib import nullcontext
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import anyio
import httpcore2
from httpcore2._backends.auto import AutoBackend

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class HostNotAllowed(Exception):
    """The MCP server's host is, or resolves to, an address the policy refuses."""


class HostUnresolved(Exception):
    """The MCP server's host name has no address."""


@dataclass(frozen=True, slots=True)
class HostPolicy:
    """The parsed allow-list: host names (lower case, no trailing dot) and networks (single IPs are /32, /128)."""

    names: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, allowed_hosts: str) -> HostPolicy:
        """``"mcp.internal, 10.0.0.0/8, 127.0.0.1, ::1"``: entries that parse as an address or a network are
        networks, everything else a host name. Brackets around IPv6 addresses are accepted."""
        names: set[str] = set()
        networks: list[IPNetwork] = []
        for raw in allowed_hosts.split(","):
            entry = raw.strip().strip("[]").lower()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                names.add(entry.rstrip("."))
        return cls(frozenset(names), tuple(networks))

    def allows_name(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.names

    def allows_address(self, address: IPAddress) -> bool:
        """Public addresses pass; any other passes only inside a listed network."""
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
        if any(address in network for network in self.networks):
            return True
        return address.is_global and not address.is_multicast

    def check(self, host: str, addresses: Iterable[IPAddress]) -> None:
        """Raise :class:`HostNotAllowed` unless ``host`` is listed by name or every one of its addresses passes.

        Every address must pass, not just one: a name that answers with both a public and a private address is
        refused rather than trusted to pick the public one.
        """
        if self.allows_name(host):
            return
        for address in addresses:
            if not self.allows_address(address):
                raise HostNotAllowed(
                    f"MCP server host '{host}' resolves to {address}, a private, loopback or otherwise non-public "
                    "address; list it in RESPONSES_BRIDGE_MCP_ALLOWED_HOSTS to allow it"
                    if str(address) != host.strip("[]") else
                    f"MCP server host '{host}' is a private, loopback or otherwise non-public address; list it "
                    "in RESPONSES_BRIDGE_MCP_ALLOWED_HOSTS to allow it"
                )


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to, in the resolver's order, without duplicates. A literal IP resolves to
    itself without a lookup."""
    literal = host.strip("[]")
    try:
        return [ipaddress.ip_address(literal.split("%", 1)[0])]
    except ValueError:
        pass
    try:
        infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:
        raise HostUnresolved(f"MCP server host '{host}' could not be resolved") from error
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise HostUnresolved(f"MCP server host '{host}' could not be resolved")
    return addresses


async def check_host(policy: HostPolicy, host: str, port: int) -> list[IPAddress]:
    """Resolve ``host`` and apply ``policy``: the addresses it may connect to, or :class:`HostNotAllowed`."""
    if policy.allows_name(host):
        return await resolve(host, port)
    addresses = await resolve(host, port)
    policy.check(host, addresses)
    return addresses


class GuardedNetworkBackend(httpcore2.AsyncNetworkBackend):
    """The socket layer of the MCP client's HTTP connections: resolve, check, connect to the checked address.

    httpcore hands ``connect_tcp`` the URL's host; this backend never passes that name on, only an address that
    passed :class:`HostPolicy`, so the resolver cannot be asked twice and answer differently. TLS still names the
    original host (httpcore takes the server name for SNI and certificate checks from the request, not from the
    socket), and the ``Host`` header is built from the URL.
    """

    def __init__(self, policy: HostPolicy) -> None:
        self._policy = policy
        self._inner = AutoBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> httpcore2.AsyncNetworkStream:
        with anyio.fail_after(timeout) if timeout is not None else nullcontext():
            addresses = await check_host(self._policy, host, port)
        last_error: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(str(address), port, timeout=timeout,
                                                      local_address=local_address, socket_options=socket_options)
            except (httpcore2.ConnectError, httpcore2.ConnectTimeout) as error:
                last_error = error
        assert last_error is not None  # resolve() never returns an empty list
        raise last_error

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None) -> httpcore2.AsyncNetworkStream:
        raise HostNotAllowed("MCP servers are reached over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)

