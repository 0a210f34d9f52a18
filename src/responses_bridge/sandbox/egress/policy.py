"""A container's network policy (``network_policy`` of ``POST /v1/containers``, of the code interpreter's ``auto``
container and of the shell tool's ``container_auto``), checked, and the deployment's rules every policy runs under.

``disabled`` (the default) is no policy at all: the sandbox has no network. ``allowlist`` names the domains the
code may reach through the egress proxy (proxy.py): an entry is a host name, matched exactly, or ``*.``
and a name, matched by every name under it (not the name itself: list both for both). Names are compared in their IDNA
ASCII form, lower case, without a trailing dot, so ``BÜCHER.example`` and ``xn--bcher-kva.example`` are one entry
and a look-alike spelled in another script is another name. An IP address is reached only when listed itself;
no wildcard covers one.

``domain_secrets`` (``[{domain, name, value}]``): the sandbox's environment gets ``name`` set to a placeholder, and
the proxy puts ``value`` in its place in the headers of requests to a host ``domain`` matches, over HTTP and (by
intercepting TLS for those hosts only, tls.py) HTTPS. The code never holds the value. Bounded so the
masking of answers stays cheap and sound whatever a tenant chooses: at most ``MAX_SECRETS`` of at most
``MAX_SECRET_BYTES`` printable ASCII characters, no value inside another (equal ones are one): each a 400 naming
the field and the bound.

Where the proxy may connect is not the policy's alone: every address a name resolves to passes the same SSRF rules
as the MCP and web search clients (host_policy.HostPolicy: public addresses only), widened only by the
deployment's ``RESPONSES_BRIDGE_CODE_EGRESS_ALLOWED_TARGETS``: networks (CIDR) whose every port may be reached,
and ``address:port`` pairs. A loopback address is allowed only as a pair, with its port, so allowing a test host on
``127.0.0.1:8123`` never opens the bridge's own ports on the same address.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ...net.host_policy import HostPolicy, IPAddress, IPNetwork
from ...protocol.errors import invalid_request

MAX_DOMAINS = 100
MAX_SECRETS = 32
MAX_SECRET_BYTES = 8192
SECRET_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
RESERVED_NAMES = frozenset({
    "PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PWD", "SHELL", "USER", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy",
    "https_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "SSL_CERT_FILE", "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "MPLBACKEND", "MPLCONFIGDIR", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
    "MKL_NUM_THREADS"})
RESERVED_PREFIXES = ("LD_", "PYTHON", "BASH_", "RESPONSES_BRIDGE_")
PLACEHOLDER_PREFIX = "egress-secret-"


def normalize_host(text: str) -> str | None:
    """A host name in its comparable form (IDNA ASCII, lower case, no trailing dot), an IP literal in its canonical
    form (IPv6 without brackets), or None when it is neither."""
    host = text.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    host = host.rstrip(".") if host.endswith(".") and not host.endswith("..") else host
    if not host or len(host) > 253:
        return None
    import idna  # its tables load with the first policy, not with the bridge

    try:
        ascii_name = idna.encode(host, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError):
        return None
    numeric = _inet_aton_form(ascii_name)  # after the mapping: "¹" is the name "1", which is 0.0.0.1
    if numeric is not None:
        return numeric
    labels = ascii_name.split(".")
    if any(not re.fullmatch(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", label) for label in labels):
        return None  # underscores, empty labels and the like: not a name a proxy request may carry
    return ascii_name


_NUMERIC_LABELS = re.compile(r"(?:0[xX][0-9a-fA-F]*|[0-9]+)(?:\.(?:0[xX][0-9a-fA-F]*|[0-9]+)){0,3}")


def _inet_aton_form(host: str) -> str | None:
    """The dotted quad a numeric host form stands for, as the C library's ``inet_aton`` (and so every resolver and
    client the code has) reads it — ``127.1``, ``0177.0.0.1``, ``0x7f.1``, ``2130706433`` — or None for a name.
    Such a host is an address, never a name a ``*.`` pattern could match."""
    if not _NUMERIC_LABELS.fullmatch(host):
        return None
    try:
        return socket.inet_ntoa(socket.inet_aton(host))
    except OSError:
        return None


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class DomainSecret:
    """One secret: the hosts ``domain`` matches get ``value`` wherever a header carries ``placeholder``."""

    domain: str
    name: str
    value: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class NetworkPolicy:
    """A policy, normalized: ``domains`` are entries as :func:`normalize_host` gives them (a wildcard keeps its
    ``*.``). An ``allowlist`` (``blocked`` false) lets through the hosts its entries match and no other; a block
    list (``blocked`` true: an agent environment's ``blocked_domains``, or none at all for ``access: enabled``)
    lets through every host but each listed name and the names under it. Either way the deployment's rules
    (:class:`EgressRules`) decide which addresses may be reached."""

    domains: tuple[str, ...]
    secrets: tuple[DomainSecret, ...] = ()
    blocked: bool = False

    def entry_for(self, host: str) -> str | None:
        """The entry that lets ``host`` (normalized) through (:data:`ANY_HOST` under a block list), or None."""
        if self.blocked:
            return None if blocked_by(self.domains, host) else ANY_HOST
        return match_entry(self.domains, host)

    def secrets_for(self, host: str) -> list[DomainSecret]:
        return [secret for secret in self.secrets if match_entry((secret.domain,), host) is not None]

    def public(self) -> dict[str, Any]:
        """The policy as a container shows it: the domains, never a secret (OpenAI shows none either). A block
        list has no form in the Containers API: it shows as an ``allowlist`` without ``allowed_domains`` (the
        agent session's environment tells its ``network``)."""
        if self.blocked:
            return {"type": "allowlist"}
        return {"type": "allowlist", "allowed_domains": list(self.domains)}


ANY_HOST = "*"
"""The entry a block list lets a host through by (what the proxy's log line and metric name it by)."""


def blocked_by(blocked: Sequence[str], host: str) -> str | None:
    """The entry of a block list that blocks the normalized ``host``: the name itself or one it is under (an IP
    literal: only itself), or None."""
    literal = is_ip_literal(host)
    for entry in blocked:
        if entry == host or (not literal and host.endswith("." + entry)):
            return entry
    return None


def match_entry(entries: Sequence[str], host: str) -> str | None:
    """The first of ``entries`` matching the normalized ``host``: equal, or ``*.suffix`` with ``host`` strictly
    under ``suffix``. An IP literal matches only itself."""
    literal = is_ip_literal(host)
    for entry in entries:
        if entry == host:
            return entry
        if not literal and entry.startswith("*.") and host.endswith(entry[1:]) and len(host) > len(entry) - 1:
            return entry
    return None


def parse_policy(value: object, param: str) -> NetworkPolicy | None:
    """The wire's policy, checked (a 400 naming the field): None for ``disabled`` (or none given)."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise invalid_request(f"Invalid value for '{param}': expected an object with 'type'.", param=param,
                              code="invalid_type")
    kind = value.get("type")
    if kind == "disabled":
        if set(value) - {"type"}:
            extra = sorted(set(value) - {"type"})[0]
            raise invalid_request(f"Unknown parameter: '{param}.{extra}'.", param=f"{param}.{extra}",
                                  code="unknown_parameter")
        return None
    if kind != "allowlist":
        raise invalid_request(f"Invalid value for '{param}.type': expected 'disabled' or 'allowlist'.",
                              param=f"{param}.type", code="invalid_value")
    unknown = sorted(set(value) - {"type", "allowed_domains", "domain_secrets"})
    if unknown:
        raise invalid_request(f"Unknown parameter: '{param}.{unknown[0]}'.", param=f"{param}.{unknown[0]}",
                              code="unknown_parameter")
    domains = _domains(value.get("allowed_domains"), f"{param}.allowed_domains")
    return NetworkPolicy(domains, _secrets(value.get("domain_secrets"), domains, f"{param}.domain_secrets"))


def _domains(value: object, param: str) -> tuple[str, ...]:
    if value is None:
        raise invalid_request(f"Missing required parameter: '{param}'.", param=param,
                              code="missing_required_parameter")
    if not isinstance(value, list) or not value or len(value) > MAX_DOMAINS:
        raise invalid_request(f"Invalid value for '{param}': expected an array of 1 to {MAX_DOMAINS} domains.",
                              param=param, code="invalid_value")
    found: list[str] = []
    for position, entry in enumerate(value):
        where = f"{param}[{position}]"
        if not isinstance(entry, str):
            raise invalid_request(f"Invalid value for '{where}': expected a domain name.", param=where,
                                  code="invalid_type")
        wildcard = entry.strip().startswith("*.")
        normal = normalize_host(entry.strip()[2:] if wildcard else entry)
        if normal is None or (wildcard and is_ip_literal(normal)) or "*" in entry.strip()[2 if wildcard else 0:]:
            raise invalid_request(f"Invalid value for '{where}': '{entry[:200]}' is not a domain name, a '*.' "
                                  "wildcard over one, or an IP address.", param=where, code="invalid_value")
        normal = f"*.{normal}" if wildcard else normal
        if normal not in found:
            found.append(normal)
    return tuple(found)


def _secrets(value: object, domains: tuple[str, ...], param: str) -> tuple[DomainSecret, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_SECRETS:
        raise invalid_request(f"Invalid value for '{param}': expected an array of at most {MAX_SECRETS} secrets.",
                              param=param, code="invalid_value")
    found: list[DomainSecret] = []
    for position, entry in enumerate(value):
        where = f"{param}[{position}]"
        if not isinstance(entry, Mapping):
            raise invalid_request(f"Invalid value for '{where}': expected an object with 'domain', 'name' and "
                                  "'value'.", param=where, code="invalid_type")
        unknown = sorted(set(entry) - {"domain", "name", "value"})
        if unknown:
            raise invalid_request(f"Unknown parameter: '{where}.{unknown[0]}'.", param=f"{where}.{unknown[0]}",
                                  code="unknown_parameter")
        domain, name, secret = entry.get("domain"), entry.get("name"), entry.get("value")
        wildcard = isinstance(domain, str) and domain.strip().startswith("*.")
        normal = normalize_host(domain.strip()[2:] if wildcard else domain) if isinstance(domain, str) else None
        normal = f"*.{normal}" if wildcard and normal is not None else normal
        if normal is None or normal not in domains:
            raise invalid_request(f"Invalid value for '{where}.domain': a secret's domain must be one of "
                                  "'allowed_domains', as written there.", param=f"{where}.domain",
                                  code="invalid_value")
        if not isinstance(name, str) or not SECRET_NAME.fullmatch(name) or name in RESERVED_NAMES or \
                name.upper().startswith(RESERVED_PREFIXES):
            raise invalid_request(f"Invalid value for '{where}.name': expected an environment variable name "
                                  "(letters, digits, '_'; not one the sandbox sets itself).", param=f"{where}.name",
                                  code="invalid_value")
        if any(other.name == name for other in found):
            raise invalid_request(f"Invalid value for '{where}.name': '{name}' is named twice.",
                                  param=f"{where}.name", code="invalid_value")
        if not isinstance(secret, str) or not secret.isascii() or not secret.isprintable():
            raise invalid_request(f"Invalid value for '{where}.value': expected a string of printable ASCII "
                                  "characters (it goes into a header).", param=f"{where}.value",
                                  code="invalid_value")
        if not 0 < len(secret) <= MAX_SECRET_BYTES:
            raise invalid_request(f"Invalid value for '{where}.value': a secret has 1 to {MAX_SECRET_BYTES} "
                                  f"characters, this one {len(secret)}.", param=f"{where}.value",
                                  code="invalid_value")
        inside = next((at for at, other in enumerate(found) if other.value != secret and
                       (other.value in secret or secret in other.value)), None)
        if inside is not None:
            raise invalid_request(f"Invalid value for '{where}.value': one secret's value may not hold another's "
                                  f"({param}[{inside}]): where it came back, only the one would be masked.",
                                  param=f"{where}.value", code="invalid_value")
        found.append(DomainSecret(normal, name, secret))
    return tuple(found)


def stored_form(policy: NetworkPolicy, seal: Any) -> dict[str, Any]:
    """The policy as the store keeps it: each secret's value sealed by ``seal(value) -> str`` (never in plain
    text in a row)."""
    secrets = [{"domain": s.domain, "name": s.name, "sealed": seal(s.value)} for s in policy.secrets]
    if policy.blocked:
        return {"type": "blocklist", "blocked_domains": list(policy.domains), "domain_secrets": secrets}
    return {"type": "allowlist", "allowed_domains": list(policy.domains), "domain_secrets": secrets}


def from_stored(value: Mapping[str, Any], unseal: Any) -> NetworkPolicy:
    """The policy :func:`stored_form` kept, its secrets opened by ``unseal(sealed) -> str``."""
    blocked = value.get("type") == "blocklist"
    return NetworkPolicy(tuple(value.get("blocked_domains" if blocked else "allowed_domains") or ()),
                         tuple(DomainSecret(s["domain"], s["name"], unseal(s["sealed"]))
                               for s in value.get("domain_secrets") or ()), blocked=blocked)


def new_placeholder() -> str:
    """What the sandbox's environment holds instead of a secret: random, so no two calls share one."""
    return PLACEHOLDER_PREFIX + secrets.token_hex(16)


@dataclass(frozen=True, slots=True)
class EgressRules:
    """The deployment's rules: the public-address check of the MCP and web search clients (``ssrf``), and the
    targets it allows past it. ``pairs``: (network, port) — a loopback address is reached only through one."""

    ssrf: HostPolicy = field(default_factory=HostPolicy)
    pairs: tuple[tuple[IPNetwork, int], ...] = ()

    @classmethod
    def parse(cls, allowed_targets: str) -> EgressRules:
        """``"10.0.0.0/8, 127.0.0.1:8123, [::1]:8123"``: a CIDR or address allows every port of it (never a
        loopback one: a ValueError), ``address:port`` that one port."""
        networks: list[IPNetwork] = []
        pairs: list[tuple[IPNetwork, int]] = []
        for raw in allowed_targets.split(","):
            entry = raw.strip()
            if not entry:
                continue
            address, port = _split_pair(entry)
            try:
                network = ipaddress.ip_network(address, strict=False)
            except ValueError:
                raise ValueError(f"'{entry}' is not an address, a network (CIDR) or an address:port pair") from None
            if port is not None:
                pairs.append((network, port))
            elif network.network_address.is_loopback or network.broadcast_address.is_loopback or \
                    network.overlaps(ipaddress.ip_network("127.0.0.0/8" if network.version == 4 else "::1/128")):
                raise ValueError(f"'{entry}' would open every port of a loopback address, the bridge's own among "
                                 "them; name the one port (address:port)")
            else:
                networks.append(network)
        return cls(HostPolicy(frozenset(), tuple(networks)), tuple(pairs))

    def names_port(self, address: IPAddress, port: int) -> bool:
        """Does an ``address:port`` pair name this very port for ``address`` (a tunnel or request past the
        standard ports needs one: tunnel.py)?"""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network and port == allowed for network, allowed in self.pairs)

    def allows(self, address: IPAddress, port: int) -> bool:
        """May the proxy connect to ``address:port``? A pair allows it; else a loopback, unspecified or other
        non-public address only inside a listed network, and never an address of this machine's own (its public
        address too: the bridge's ports listen there as well)."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in network and port == allowed for network, allowed in self.pairs):
            return True
        if address.is_loopback or address.is_unspecified or is_local_address(address):
            return False  # only ever through a pair, whatever a network listed
        return self.ssrf.allows_address(address)


def is_local_address(address: IPAddress) -> bool:
    """Is ``address`` one of this machine's own? Only such an address can be bound to (the kernel's own answer,
    whatever the interfaces)."""
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((str(address), 0))
    except OSError:
        return False
    return True


def _split_pair(entry: str) -> tuple[str, int | None]:
    """(address or CIDR, port or None) of ``1.2.3.4:80``, ``[::1]:80``, ``10.0.0.0/8``, ``::1``."""
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        if not rest:
            return host, None
        if not rest.startswith(":") or not rest[1:].isdigit() or not 0 < int(rest[1:]) < 65536:
            raise ValueError(f"'{entry}' has no valid port")
        return host, int(rest[1:])
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"'{entry}' has no valid port")
        return host, int(port)
    return entry, None
