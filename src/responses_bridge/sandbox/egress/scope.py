"""Policies beside the Containers API's ``allowlist``: an agent environment's block list (``blocked_domains``, or
nothing blocked for ``access: enabled``), whether one policy stays within another (an environment's network over its
template's may not broaden it), and the bounds on domain secrets that come from elsewhere than the wire's
``domain_secrets`` (a session's vault credentials)."""

from __future__ import annotations

from collections.abc import Sequence

from ...protocol.errors import invalid_request
from .policy import (
    MAX_DOMAINS,
    MAX_SECRET_BYTES,
    MAX_SECRETS,
    RESERVED_NAMES,
    RESERVED_PREFIXES,
    SECRET_NAME,
    DomainSecret,
    NetworkPolicy,
    blocked_by,
    match_entry,
    normalize_host,
)


def within(inner: NetworkPolicy | None, outer: NetworkPolicy | None) -> bool:
    """Whether every host ``inner`` lets through ``outer`` lets through too (None: no network at all) — so a
    policy derived from another (an environment's network over its template's) never broadens it. Secrets are
    not compared. Exact for entries as :func:`normalize_host` gives them."""
    if inner is None:
        return True
    if outer is None:
        return False
    if not outer.blocked:
        # an allowlist holds a block list never (infinitely many names), an allowlist when each entry is covered
        return not inner.blocked and all(_covered(entry, outer.domains) for entry in inner.domains)
    if inner.blocked:  # inner blocks at least what outer blocks
        return all(blocked_by(inner.domains, entry) is not None for entry in outer.domains)
    return all(not _meets_blocked(entry, outer.domains) for entry in inner.domains)


def _covered(entry: str, allowed: Sequence[str]) -> bool:
    """Every host the allowlist ``entry`` matches is matched by ``allowed``."""
    if not entry.startswith("*."):
        return match_entry(allowed, entry) is not None
    return entry in allowed or any(other.startswith("*.") and entry.endswith(other[1:]) for other in allowed)


def _meets_blocked(entry: str, blocked: Sequence[str]) -> bool:
    """Some host the allowlist ``entry`` matches is blocked by ``blocked``."""
    if not entry.startswith("*."):
        return blocked_by(blocked, entry) is not None
    suffix = entry[2:]  # names strictly under it: blocked where a blocked name is one of them or above them all
    return any(name == suffix or suffix.endswith("." + name) or name.endswith("." + suffix) for name in blocked)


def block_list(value: object, param: str) -> NetworkPolicy:
    """A block list from an agent environment's ``blocked_domains`` (None or empty: nothing blocked, the
    ``enabled`` access): host names or IP addresses, no wildcard (a name blocks the names under it too), at most
    :data:`MAX_DOMAINS`; a 400 naming the entry otherwise."""
    if value is None or value == []:
        return NetworkPolicy((), blocked=True)
    if not isinstance(value, list) or len(value) > MAX_DOMAINS:
        raise invalid_request(f"Invalid value for '{param}': expected an array of at most {MAX_DOMAINS} domains.",
                              param=param, code="invalid_value")
    found: list[str] = []
    for position, entry in enumerate(value):
        where = f"{param}[{position}]"
        normal = normalize_host(entry) if isinstance(entry, str) and "*" not in entry else None
        if normal is None:
            raise invalid_request(f"Invalid value for '{where}': expected a domain name or an IP address (no "
                                  "wildcard: a name blocks the names under it too).", param=where,
                                  code="invalid_value")
        if normal not in found:
            found.append(normal)
    return NetworkPolicy(tuple(found), blocked=True)


def check_secrets(found: Sequence[DomainSecret], param: str) -> tuple[DomainSecret, ...]:
    """Secrets made elsewhere than the wire's ``domain_secrets`` (an agent session's vault credentials), held to
    the same bounds so the proxy's masking stays cheap and sound: at most :data:`MAX_SECRETS` names, each value
    printable ASCII of at most :data:`MAX_SECRET_BYTES`, one value per name, no value inside another; a 400 naming
    ``param`` (never the value) otherwise."""
    values: dict[str, str] = {}
    for secret in found:
        if not SECRET_NAME.fullmatch(secret.name) or secret.name in RESERVED_NAMES or \
                secret.name.upper().startswith(RESERVED_PREFIXES):
            raise invalid_request(f"Invalid value for '{param}': the secret name '{secret.name[:128]}' is one the "
                                  "sandbox sets itself.", param=param, code="invalid_value")
        if not secret.value.isascii() or not secret.value.isprintable() or \
                not 0 < len(secret.value) <= MAX_SECRET_BYTES:
            raise invalid_request(f"Invalid value for '{param}': the value of '{secret.name}' is not 1 to "
                                  f"{MAX_SECRET_BYTES} printable ASCII characters (it goes into a header).",
                                  param=param, code="invalid_value")
        if values.setdefault(secret.name, secret.value) != secret.value:
            raise invalid_request(f"Invalid value for '{param}': two credentials set '{secret.name}'.",
                                  param=param, code="invalid_value")
    if len(values) > MAX_SECRETS:
        raise invalid_request(f"Invalid value for '{param}': at most {MAX_SECRETS} secrets reach an environment, "
                              f"these give {len(values)}.", param=param, code="invalid_value")
    distinct = sorted(set(values.values()), key=len)
    for at, value in enumerate(distinct):
        if any(value in longer for longer in distinct[at + 1:]):
            raise invalid_request(f"Invalid value for '{param}': one credential's value holds another's (where it "
                                  "came back, only the one would be masked).", param=param, code="invalid_value")
    return tuple(found)
