"""Which hosts the bridge may connect to on a request's behalf, checked on the address it actually connects to:
an MCP server a request names, and the hosts a sandbox's allowlist network policy reaches through the egress proxy
(sandbox/egress/proxy.py, which widens the rules only by the deployment's own address:port pairs and networks).

A request names the MCP server's URL, so without a check any client could make the bridge reach the loopback
interface, the cloud metadata address or the private network behind it (SSRF). Public addresses are allowed;
private, loopback, link-local and every other non-global address (and multicast) are refused unless
``RESPONSES_BRIDGE_MCP_ALLOWED_HOSTS`` lists the host name, the address, or a network (CIDR) holding it.

Checking a name and then letting the HTTP client resolve it again would let a DNS answer change in between
(DNS rebinding). So :func:`check_host` is also what ``mcp_session.GuardedNetworkBackend``, the socket layer under
the HTTP client, calls: it resolves the name, checks every address, and the backend connects to a checked address
itself, while the HTTP layer above keeps the original host name for the ``Host`` header and TLS (SNI and
certificate checks). The same check runs up front, so a refused host is a 400 before anything is sent.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

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
        """Public addresses pass; any other passes only inside a listed network. An IPv6 address that carries an
        IPv4 one (mapped, compatible, 6to4, Teredo, NAT64) passes only if the IPv4 address would too."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
        if any(address in network for network in self.networks):
            return True
        if not address.is_global or address.is_multicast:
            return False
        if isinstance(address, ipaddress.IPv6Address):
            if address.is_site_local:
                return False
            return all(self.allows_address(embedded) for embedded in _embedded_ipv4(address))
        return True

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


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")


def _embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address stands for, in the transition formats a network may route."""
    embedded: list[ipaddress.IPv4Address] = []
    if address.sixtofour is not None:
        embedded.append(address.sixtofour)
    if address.teredo is not None:
        embedded.extend(address.teredo)
    if address in _NAT64 or address in _IPV4_COMPATIBLE:
        embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return embedded


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to, in the resolver's order, without duplicates. A literal IP resolves to
    itself without a lookup."""
    literal = host.strip("[]")
    try:
        return [ipaddress.ip_address(literal.split("%", 1)[0])]
    except ValueError:
        pass
    import anyio  # by the first name resolved (an MCP server's, a sandbox's egress): an idle sidecar resolves none

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

