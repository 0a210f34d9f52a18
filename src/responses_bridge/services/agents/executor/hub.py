"""The exec-servers attached to ``self_hosted`` sessions in this process: their credentials, their registrations and
their connections.

A session's **executor credentials** are an AWS-style key pair the bridge derives and never stores: the access key id
names the tenant and the session, the secret is a keyed digest of both under the deployment's sealing key
(sealing.py), so only this deployment can make or check it and no tenant can make another's. ``codex exec-server``
signs its registration with them (SigV4, sigv4.py); a registration that holds gets a one-time
connect token (:data:`TOKEN_SECONDS` to use it), and the websocket that presents it becomes the session's environment
until it closes or another exec-server of the same session takes its place. Registrations and connections are bounded
per tenant and per process; nothing here is logged with a secret or a token.

The Noise relay (``--remote-transport noise``) cannot sign with SigV4: its exec-server carries the same credentials
as one **registration bearer** (:func:`registration_bearer`), registers its Noise public key with it, and asks the
bridge to validate the harness key the bridge itself proved in the handshake (:meth:`ExecutorHub.expect_harness`,
:meth:`ExecutorHub.harness_valid`): a one-time authorization bound to the registration and to that key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson

from ....sealing import Sealer
from .rpc import ExecutorConnection

if TYPE_CHECKING:  # noise.py loads cryptography (~9 MiB resident): only a Noise relay's first use imports it
    from .noise import PublicKey

KEY_PREFIX = "RBX1"
TOKEN_SECONDS = 60
MAX_PENDING = 256  # registrations not yet connected, in the process
MAX_PENDING_PER_TENANT = 16
MAX_CONNECTED_PER_TENANT = 64


@dataclass(frozen=True, slots=True)
class Claim:
    """A registration that holds: whose session and environment the connecting exec-server serves."""

    tenant: str
    session_id: str
    environment_id: str
    executor_key: PublicKey | None = None  # the Noise relay's: the exec-server's static keys, pinned at registration


@dataclass(slots=True)
class _Pending:
    claim: Claim
    token_digest: bytes
    expires: float


@dataclass(frozen=True, slots=True)
class _Harness:
    claim: Claim
    key: PublicKey
    authorization_digest: bytes


class RegistrationRefused(Exception):
    """Too many registrations or exec-servers for the tenant or the process: the reason, to answer with (429)."""


def access_key_id(tenant: str, session_id: str) -> str:
    packed = base64.urlsafe_b64encode(orjson.dumps([tenant, session_id])).decode().rstrip("=")
    return KEY_PREFIX + packed


def key_owner(key_id: str) -> tuple[str, str] | None:
    """The (tenant, session id) an access key id names; None for anything the bridge did not make."""
    if not key_id.startswith(KEY_PREFIX) or len(key_id) > 2048:
        return None
    packed = key_id[len(KEY_PREFIX):]
    try:
        decoded = orjson.loads(base64.urlsafe_b64decode(packed + "=" * (-len(packed) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        return None
    if not (isinstance(decoded, list) and len(decoded) == 2 and all(isinstance(part, str) for part in decoded)):
        return None
    return decoded[0], decoded[1]


def secret_access_key(sealer: Sealer, tenant: str, session_id: str) -> str:
    return sealer.mac("agents executor credential", orjson.dumps([tenant, session_id]))


def registration_bearer(sealer: Sealer, tenant: str, session_id: str) -> str:
    """The credentials as one bearer token (``--registration-bearer-stdin``): the key id, a dot, the secret."""
    return f"{access_key_id(tenant, session_id)}.{secret_access_key(sealer, tenant, session_id)}"


class ExecutorHub:
    """This process's exec-server registrations and connections, by (tenant, environment id)."""

    def __init__(self, sealer: Sealer) -> None:
        self.sealer = sealer
        self._pending: dict[str, _Pending] = {}
        self._connected: dict[tuple[str, str], ExecutorConnection] = {}
        self._harnesses: dict[str, _Harness] = {}  # registration id -> the handshake waiting for its validation

    def bearer_owner(self, token: str) -> tuple[str, str] | None:
        """The (tenant, session id) whose :func:`registration_bearer` ``token`` is; None for anything else."""
        key_id, _, secret = token.partition(".")
        expected = self.secret_for(key_id)
        if expected is None or not hmac.compare_digest(expected.encode(), secret.encode()):
            return None
        return key_owner(key_id)

    def expect_harness(self, registration_id: str, claim: Claim, key: PublicKey, authorization: str) -> None:
        """The bridge's handshake on the registration's relay carries ``authorization`` for ``key``: what the
        exec-server will ask :meth:`harness_valid` about (until :meth:`forget_harness`)."""
        self._harnesses[registration_id] = _Harness(claim, key, hashlib.sha256(authorization.encode()).digest())

    def harness_valid(self, registration_id: str, claim: Claim, key: PublicKey, authorization: str) -> bool:
        """Whether the exec-server of ``claim`` (its owner and environment, from its bearer) may accept ``key``:
        the one this process's handshake on that registration proved, with its authorization. Once."""
        harness = self._harnesses.get(registration_id)
        if harness is None or (harness.claim.tenant, harness.claim.session_id, harness.claim.environment_id) != (
                claim.tenant, claim.session_id, claim.environment_id) or harness.key != key:
            return False
        if not hmac.compare_digest(harness.authorization_digest, hashlib.sha256(authorization.encode()).digest()):
            return False
        del self._harnesses[registration_id]
        return True

    def forget_harness(self, registration_id: str) -> None:
        self._harnesses.pop(registration_id, None)

    def secret_for(self, key_id: str) -> str | None:
        owner = key_owner(key_id)
        return None if owner is None else secret_access_key(self.sealer, *owner)

    def register(self, claim: Claim) -> tuple[str, str]:
        """A registration id and its one-time connect token for ``claim`` (:class:`RegistrationRefused` past the
        bounds)."""
        now = time.monotonic()
        for registration_id in [key for key, pending in self._pending.items() if pending.expires <= now]:
            del self._pending[registration_id]
        if len(self._pending) >= MAX_PENDING or sum(
                pending.claim.tenant == claim.tenant for pending in self._pending.values()) >= MAX_PENDING_PER_TENANT:
            raise RegistrationRefused("too many exec-server registrations waiting to connect; retry shortly")
        registration_id, token = f"exr_{secrets.token_hex(16)}", secrets.token_urlsafe(32)
        self._pending[registration_id] = _Pending(claim, hashlib.sha256(token.encode()).digest(), now + TOKEN_SECONDS)
        return registration_id, token

    def claim(self, registration_id: str, token: str) -> Claim | None:
        """The registration's claim, once (the token is spent); None: unknown, expired or a wrong token."""
        pending = self._pending.get(registration_id)
        if pending is None or pending.expires <= time.monotonic() or not hmac.compare_digest(
                pending.token_digest, hashlib.sha256(token.encode()).digest()):
            return None
        del self._pending[registration_id]
        return pending.claim

    def may_connect(self, claim: Claim) -> bool:
        held = sum(tenant == claim.tenant for tenant, _ in self._connected)
        return (claim.tenant, claim.environment_id) in self._connected or held < MAX_CONNECTED_PER_TENANT

    def attach(self, claim: Claim, connection: ExecutorConnection) -> ExecutorConnection | None:
        """``connection`` serves the claim's environment from now on, unless one serves it already: that one is
        returned and kept (the first stays, so two exec-servers of a session never take turns displacing each
        other; one whose socket died is gone within the websocket's heartbeat)."""
        key = (claim.tenant, claim.environment_id)
        held = self._connected.get(key)
        if held is not None and not held.closed.is_set():
            return held
        self._connected[key] = connection
        return None

    def detach(self, claim: Claim, connection: ExecutorConnection) -> None:
        key = (claim.tenant, claim.environment_id)
        if self._connected.get(key) is connection:
            del self._connected[key]

    def connection(self, tenant: str, environment_id: str) -> ExecutorConnection | None:
        """The exec-server serving a tenant's environment now (None: none is connected)."""
        connection = self._connected.get((tenant, environment_id))
        return connection if connection is not None and not connection.closed.is_set() else None

    def connections(self) -> list[ExecutorConnection]:
        return list(self._connected.values())
