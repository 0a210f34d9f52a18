"""The process's descriptor limit, raised at start: a server's connections, its store and every sandbox call's
egress each take descriptors, and a soft limit of 1,024 (many distributions' default, under a hard limit far above
it) is reached by a few hundred slow clients. The bounds derived from the limit (the egress door's and the egress
proxies' caps) are then read from the raised one; where the hard limit is the soft one, they keep what they leave
the HTTP door."""

from __future__ import annotations

import resource

CEILING = 1 << 20
"""Never asked for more than this (a hard limit of "unlimited" is not a number ``setrlimit`` takes for files)."""


def raise_descriptor_limit() -> tuple[int, int]:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard one (at most :data:`CEILING`): (the soft limit before, after).
    A limit that cannot be raised is kept; nothing fails for it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = CEILING if hard == resource.RLIM_INFINITY else min(hard, CEILING)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft, soft
        return soft, target
    return soft, soft
