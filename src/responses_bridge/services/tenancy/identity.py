"""Who is calling: the tenant of a request, the same way through both doors.

``RESPONSES_BRIDGE_AUTH`` picks how (the doors only hand over what they read: the ``Authorization`` value and the
tenant header's value):

* ``none``: everyone is :data:`~responses_bridge.store.base.DEFAULT_TENANT`.
* ``keys``: ``Authorization: Bearer <key>``, a key made by ``responses-bridge keys create`` (store/keys.py);
  the key's tenant. Missing, unknown, revoked or expired: a 401 whose message never repeats the key.
* ``header``: the tenant header (``RESPONSES_BRIDGE_TENANT_HEADER``) that Envoy set after authenticating the caller;
  the rendered Envoy config strips a client's own at the start of its filter chain.

It also holds the sidecar's own credential for Envoy's passthrough routes (keys mode): the sidecar's model calls
through Envoy's listener (``upstream_via``: tool loops, background runs, WebSocket turns) carry no client key, so
they name themselves with :data:`SIDECAR_HEADER`, an HMAC of the sealing key no client can compute.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import time
from typing import TYPE_CHECKING

from ...protocol.errors import APIError
from ...store.base import DEFAULT_TENANT
from ...store.timings import CALLER_KEY_ID

if TYPE_CHECKING:
    from ...config.settings import Settings
    from ...store.base import ApiKeyStore

SIDECAR_HEADER = "x-responses-bridge-sidecar"
"""Carried by the sidecar's own calls through Envoy in keys mode (see the module docstring); checked and removed by
the processor on the passthrough routes, and removed by those routes, so it never reaches the upstream."""

_BEARER = "bearer "


def unauthenticated(message: str, code: str = "invalid_api_key") -> APIError:
    """OpenAI's answer to a bad key: 401, ``invalid_request_error``."""
    return APIError(401, message, type="invalid_request_error", code=code)


MISSING_KEY = unauthenticated("You didn't provide an API key. Send it in an Authorization header using Bearer auth "
                              "(Authorization: Bearer YOUR_KEY); keys are made with `responses-bridge keys create`.")
INCORRECT_KEY = unauthenticated("Incorrect API key provided.")
REVOKED_KEY = unauthenticated("The API key provided has been revoked.")
EXPIRED_KEY = unauthenticated("The API key provided has expired.")


class Identity:
    """Resolves a request's tenant; one instance per process (``Runtime.identity``), shared by both doors.
    ``keys``: the key store (required in keys mode); ``sidecar_token``: the value of :data:`SIDECAR_HEADER` the
    sidecar's own calls carry (keys mode)."""

    def __init__(self, mode: str = "none", tenant_header: str = "x-tenant-id", keys: ApiKeyStore | None = None,
                 sidecar_token: str | None = None) -> None:
        self.mode = mode
        self.tenant_header = tenant_header.lower()
        self._keys = keys
        self._sidecar_token = sidecar_token

    @property
    def anonymous(self) -> bool:
        """``none``: nothing to check, every request is the default tenant's."""
        return self.mode == "none"

    async def tenant(self, authorization: str | None, tenant_header: str | None) -> str:
        """The caller's tenant from what the request carries, or the 401 that answers it. The key's id, when a key
        resolved it, becomes the request's :data:`CALLER_KEY_ID` (its responses are stored with it)."""
        CALLER_KEY_ID.set(None)  # a connection's earlier request (the same task) made with a key is not this one's
        if self.mode == "keys":
            return await self.key_tenant(authorization)
        if self.mode == "header":
            return header_tenant(tenant_header, self.tenant_header)
        return DEFAULT_TENANT

    async def key_tenant(self, authorization: str | None) -> str:
        if not authorization or authorization[:len(_BEARER)].lower() != _BEARER:
            raise MISSING_KEY
        key = authorization[len(_BEARER):].strip()
        if not key:
            raise MISSING_KEY
        resolved = await self._keys.resolve_key(key) if self._keys is not None else None
        if resolved is None:
            raise INCORRECT_KEY
        if resolved.key.revoked_at is not None:
            raise REVOKED_KEY
        if not resolved.key.usable(int(time.time())):
            raise EXPIRED_KEY
        CALLER_KEY_ID.set(resolved.key.id)
        return resolved.key.tenant

    def is_sidecar(self, value: str | None) -> bool:
        """Is ``value`` (of :data:`SIDECAR_HEADER`) this deployment's own credential?"""
        token = self._sidecar_token
        if not value or token is None:
            return False
        return hmac.compare_digest(value.encode(), token.encode())


def caller_holder(tenant: str, authorization: str | None) -> str:
    """Whose share a caller's use counts against where there are no tenants (``auth: none``: everyone is the default
    tenant): the caller's ``Authorization`` (hashed: never kept), and callers that send none share ``tenant``.
    Nothing checks such a key, so it separates well-behaved callers, not a hostile one sending many: give tenants
    keys (``auth: keys``) to bound those. The memory budget's holders (memory_budget.py) and the desktops' per-tenant
    bound (services/agents/computer/desktops.py) tell callers apart by it."""
    key = (authorization or "").strip()
    if not key:
        return tenant
    return "client:" + hashlib.blake2b(key.encode(errors="replace"), digest_size=16).hexdigest()


def header_tenant(value: str | None, header: str) -> str:
    tenant = (value or "").strip()
    if not tenant:
        raise unauthenticated(f"The request carries no {header} header.", code="missing_tenant")
    return tenant


@functools.cache
def sidecar_token(sealing_key: str | None, db_path: str) -> str:
    """The sidecar's own credential: an HMAC of the sealing key, so every replica sharing the key (as replicas
    must) makes the same one. Cached: with an in-memory store the sealing key is random per call."""
    from ...sealing import load_or_create_key

    key = load_or_create_key(sealing_key, db_path)
    return hmac.new(key, b"responses-bridge sidecar call", hashlib.sha256).hexdigest()


def sidecar_headers(settings: Settings) -> dict[str, str]:
    """What the sidecar's own calls through Envoy's listener add (keys mode with ``upstream_via``), else nothing."""
    if settings.auth != "keys" or not settings.upstream_via:
        return {}
    return {SIDECAR_HEADER: sidecar_token(settings.sealing_key, settings.db_path())}
