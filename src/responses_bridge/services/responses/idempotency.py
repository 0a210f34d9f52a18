"""``Idempotency-Key`` on ``POST /v1/responses``: a retried create returns the first one's result.

The openai SDKs retry every 408, 409, 429 and 5xx, and every connection error or timeout, by themselves. A request
whose run made server-side calls with effects never answers such a status (engine/responses/translator_stream.py),
but a client that lost the answer (a timeout, a cut connection) sends the request again all the same. With the same
``Idempotency-Key`` (the SDKs take it per call: ``extra_headers={"Idempotency-Key": …}``, kept across their own
retries) that retry runs nothing:

* the first request with a key claims it, per tenant, with a fingerprint of its body (SHA-256 of its JSON, keys
  sorted: :func:`body_fingerprint`);
* a retry while the first still runs: 409 ``idempotency_key_in_use`` with ``Retry-After`` (the SDK retries it, and
  lands on the finished result);
* a retry once it answered a Response (any status: completed, failed, incomplete): that stored Response
  (the HTTP door answers it as a stream when the retry asks for one: adapters/http/responses/idempotent_replay.py);
* the first answered an error status (nothing was done: no effect is ever answered so): the key is free again,
  and the retry runs as a new request;
* the same key with another body: 400 ``idempotency_key_reused``; a key longer than :data:`MAX_KEY_LENGTH` or not
  printable ASCII: 400 ``invalid_value``.

A key lasts ``idempotency_key_seconds`` (24 h by default) from its first use; expired records are purged in the
background. Tenants never see each other's keys: every record is the tenant's.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass

import orjson
import structlog

from ...process.periodic import Periodic
from ...protocol.errors import APIError
from ...store.base import IdempotencyStore

log = structlog.get_logger("responses_bridge.idempotency")

IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
"""The longest key accepted, in characters (Stripe's bound; the SDKs' generated keys are ~40)."""
KEY_IN_USE = "idempotency_key_in_use"
"""The 409's code: the first request with the key still runs; retry shortly (``Retry-After``)."""
KEY_REUSED = "idempotency_key_reused"
LARGE_FINGERPRINT_BYTES = 1024 * 1024
"""A body above this is fingerprinted off the event loop (its parse takes milliseconds), as the run parses it."""
PURGE_INTERVAL_SECONDS = 300.0
PURGE_BATCH = 500


@dataclass(frozen=True, slots=True)
class Answered:
    """The key's first request answered with this response: a retry gets it."""

    response_id: str


class Claim:
    """The key, claimed by this request: :meth:`settle` when it has answered (before its last bytes leave, so a
    client that sends it again after reading them finds the result)."""

    __slots__ = ("_service", "_settled", "key", "tenant")

    def __init__(self, service: IdempotencyService, key: str, tenant: str) -> None:
        self._service = service
        self.key = key
        self.tenant = tenant
        self._settled = False

    async def settle(self, response_id: str | None, *, answered: bool) -> None:
        """``answered``: the request's answer is a Response (``response_id``), which its retries get from now on;
        else (an error status: nothing was done, or it would be a Response) the key is free again. Once."""
        if self._settled:
            return
        self._settled = True
        store = self._service.store
        if answered and response_id is not None:
            await store.finish_key(self.key, response_id, tenant=self.tenant)
        else:
            await store.release_key(self.key, tenant=self.tenant)


class IdempotencyService:
    def __init__(self, store: IdempotencyStore, ttl_seconds: float, *,
                 purge_interval: float = PURGE_INTERVAL_SECONDS) -> None:
        self.store = store
        self.ttl_seconds = ttl_seconds
        self._purge = Periodic.purge("idempotency-keys", purge_interval, self.purge)

    async def claim(self, key: str, body: bytes, *, tenant: str) -> Claim | Answered:
        """The request's claim of ``key`` (it runs), or the first request's answer (it runs nothing). Raises
        ``APIError``: the key not acceptable (400), used with another body (400), its first request still running
        (409 ``idempotency_key_in_use``)."""
        check_key(key)
        large = len(body) > LARGE_FINGERPRINT_BYTES
        fingerprint = await asyncio.to_thread(body_fingerprint, body) if large else body_fingerprint(body)
        now = int(time.time())
        held = await self.store.claim_key(key, fingerprint, tenant=tenant, now=now,
                                          expires_at=now + int(self.ttl_seconds))
        if held is None:
            return Claim(self, key, tenant)
        if held.fingerprint != fingerprint:
            raise APIError(400, "This Idempotency-Key was already used with a different request body: a retry must "
                           "send the same body, and a new request a new key.", param=IDEMPOTENCY_HEADER,
                           code=KEY_REUSED)
        if held.response_id is None:
            raise APIError(409, "A request with this Idempotency-Key is still running: retry shortly to get its "
                           "result.", type="invalid_request_error", param=IDEMPOTENCY_HEADER, code=KEY_IN_USE)
        return Answered(held.response_id)

    async def purge(self) -> int:
        """Expired records, in batches (each a short write)."""
        total = 0
        now = int(time.time())
        while True:
            deleted = await self.store.purge_keys(now, limit=PURGE_BATCH)
            total += deleted
            if deleted < PURGE_BATCH:
                return total

    def start(self) -> None:
        self._purge.start()

    async def stop(self) -> None:
        await self._purge.stop()


def body_fingerprint(body: bytes) -> str:
    """SHA-256 of the body's JSON with its keys sorted and no whitespace: the same request sent by another client
    (another key order, other spacing) is the same request. A body that is not JSON: of its bytes (the request is
    refused anyway, and the key let go)."""
    try:
        canonical = orjson.dumps(orjson.loads(body), option=orjson.OPT_SORT_KEYS)
    except orjson.JSONDecodeError:
        canonical = body
    return hashlib.sha256(canonical).hexdigest()


def check_key(key: str) -> None:
    """400 for a key that is empty, longer than :data:`MAX_KEY_LENGTH`, or not printable ASCII."""
    if not key or len(key) > MAX_KEY_LENGTH or not (key.isascii() and key.isprintable()):
        raise APIError(400, f"The Idempotency-Key header must be 1 to {MAX_KEY_LENGTH} printable ASCII characters.",
                       param=IDEMPOTENCY_HEADER, code="invalid_value")


def not_kept(response_id: str) -> APIError:
    """A retry of a request whose Response was not stored (``store: false``, or deleted since): it is not run
    again, and there is nothing to return."""
    return APIError(400, f"A request with this Idempotency-Key already ran (response '{response_id}'), and its "
                    "response was not stored (store: false, or deleted since): it is not run again and cannot be "
                    "returned. Send a new key to run the request again.", param=IDEMPOTENCY_HEADER,
                    code="idempotency_key_used")
