"""A replica as Envoy's cluster knows it: ``ip:port``, and the list of replicas a call through Envoy names.

Envoy's ``override_host`` load balancer (envoy_config/replica_cluster.py) matches the endpoint a request names
against its cluster's resolved hosts, so a replica whose URL has a host name is named by the address Envoy resolved
it to. Both doors name the same list: the picked replica first, then the other replicas in, where the route's one
retry of a call that reached no replica goes (``RETRY_BEFORE_SENDING``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

from .replica import Picked, Replica


async def envoy_address(endpoint: str) -> str:
    """``endpoint`` as Envoy's cluster knows its hosts: ``ip:port``. A replica named by its host (a URL with a name)
    is looked up as Envoy resolved it (``STRICT_DNS``); a name that does not resolve is passed as it is, and
    Envoy's fallback balances the request instead."""
    host, _, port = endpoint.rpartition(":")
    bare = host.strip("[]")
    try:
        ipaddress.ip_address(bare)
        return endpoint
    except ValueError:
        pass
    try:
        found = await asyncio.get_running_loop().getaddrinfo(bare, int(port), type=socket.SOCK_STREAM)
    except (OSError, ValueError):
        return endpoint
    for family, _, _, _, address in found:
        if family == socket.AF_INET:
            return f"{address[0]}:{port}"
    for _, _, _, _, address in found:
        return f"[{address[0]}]:{port}"
    return endpoint


async def listed(picked: Picked, replicas: list[Replica]) -> dict[str, Replica]:
    """The replicas a call through Envoy names, by their Envoy address, in order: ``picked``'s, then the others of
    ``replicas`` that are in (a dict keeps its order: its keys joined by commas are the header's value)."""
    out = {await envoy_address(picked.endpoint): picked.replica}
    for replica in replicas:
        if replica is not picked.replica and not replica.down:
            out.setdefault(await envoy_address(replica.key), replica)
    return out
