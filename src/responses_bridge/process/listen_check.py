"""Is a door's address already taken? Asked before the sidecar opens anything.

A taken port is a configuration mistake, and the user should get one line naming the port and its flag. Found
only when the door binds, it comes after the store has opened and logged, and gRPC's C core writes its own
``add_port.cc`` line to stderr before Python hears of it. So ``serve`` binds a throwaway socket the way each door
will (``SO_REUSEADDR``; ``SO_REUSEPORT`` for the HTTP door shared by workers) and stops first. Only "in use" is
judged here: any other bind error is left to the door itself, which reports it as before.
"""

from __future__ import annotations

import errno
import socket


def in_use(host: str, port: int, *, reuse_port: bool = False) -> bool:
    """Whether some address ``host`` names has ``port`` taken (by a listener that does not share it)."""
    if port == 0:  # the kernel picks a free one
        return False
    try:
        addresses = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return False  # the door's own bind reports a host that does not resolve
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return True
    return False


def host_problem(host: str) -> str | None:
    """Why no door can listen on ``host`` at all, or None: a name that does not resolve, or an address that is not
    this machine's. Said before anything opens, naming the host's setting (a port's is named for a taken port)."""
    try:
        addresses = socket.getaddrinfo(host or None, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"the address does not resolve ({exc.strerror})"
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRNOTAVAIL:
                    continue  # as the doors do, an address of a family the machine lacks is passed over
            return None
    return "not an address of this machine"
