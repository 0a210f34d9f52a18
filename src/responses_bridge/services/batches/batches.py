"""The Batch API's routes as a service: ``POST /v1/batches``, ``GET /v1/batches[/{id}]``,
``POST /v1/batches/{id}/cancel``. What a batch does once created is the runner's (runner.py).

A batch belongs to the tenant that created it: every read and the cancel name the tenant, and another tenant's batch
answers as a missing one (404), as do its files (the output and error files are the owner's files). The client's
``Authorization`` is kept with the batch, sealed (services/responses/kept_authorization.py), only where its lines'
endpoint would send it upstream (no key configured): the process that runs the batch, this one or another after a
loss, sends it as the route would have.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from ...observability.batch_metrics import batch_status
from ...protocol.errors import APIError, invalid_request, not_found
from ...protocol.lists import list_of
from ...store.base_batches import UNFINISHED, BatchStore
from ...store.records import UnknownCursor
from ..files.files import FileService
from ..responses.kept_authorization import KeptAuthorization
from .shapes import batch_not_found, batch_object, check_create, new_batch

MAX_LIST_LIMIT = 100


class Runner(Protocol):
    """What the service tells the runner (runner.py)."""

    @property
    def endpoints(self) -> tuple[str, ...]: ...

    def forwards_authorization(self, endpoint: str) -> bool: ...

    def created(self, batch_id: str) -> None: ...

    def cancelled(self, batch_id: str) -> None: ...


class BatchService:
    def __init__(self, store: BatchStore, files: FileService, kept: KeptAuthorization, runner: Runner, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.files = files
        self.kept = kept
        self.runner = runner
        self._clock = clock

    async def create(self, body: dict[str, Any], *, tenant: str, authorization: str | None) -> dict[str, Any]:
        """A new batch over the tenant's file of purpose ``batch``, ``validating`` until the runner has read it."""
        input_file_id, endpoint, window, metadata, output_expiry = check_create(body, self.runner.endpoints)
        file = await self.files.get(input_file_id, tenant=tenant)
        if file is None:
            raise not_found(f"No such File object: {input_file_id[:200]}", param="input_file_id", code="not_found")
        if file["purpose"] != "batch":
            raise invalid_request(f"The input file must be uploaded with purpose 'batch'; {input_file_id} has purpose "
                                  f"'{file['purpose']}'.", param="input_file_id", code="invalid_value")
        batch = new_batch(input_file_id, endpoint, window, metadata, int(self._clock()))
        batch["_output_expires_after"] = output_expiry
        if self.runner.forwards_authorization(endpoint):
            batch["_authorization"] = self.kept.keep(authorization)
        await self.store.add_batch(batch, tenant=tenant)
        batch_status("validating")
        self.runner.created(batch["id"])
        stored = await self.store.get_batch(batch["id"], tenant=tenant)
        if stored is None:  # only a batch deleted by hand between the two
            raise batch_not_found(batch["id"])
        return batch_object(stored)

    async def retrieve(self, batch_id: str, *, tenant: str) -> dict[str, Any]:
        stored = await self.store.get_batch(batch_id, tenant=tenant)
        if stored is None:
            raise batch_not_found(batch_id)
        return batch_object(stored)

    async def list(self, *, after: str | None, limit: int, tenant: str, order: str = "desc") -> dict[str, Any]:
        """The tenant's batches, newest first (``order`` is not a parameter of this list: ignored as OpenAI's)."""
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise invalid_request(f"Invalid value for 'limit': expected an integer between 1 and {MAX_LIST_LIMIT}.",
                                  param="limit", code="invalid_value")
        try:
            batches, has_more = await self.store.list_batches(tenant=tenant, after=after, limit=limit)
        except UnknownCursor:
            raise invalid_request(f"Invalid value for 'after': no batch with id '{(after or '')[:200]}'.",
                                  param="after", code="invalid_value") from None
        return list_of([batch_object(batch) for batch in batches], has_more=has_more)

    async def cancel(self, batch_id: str, *, tenant: str) -> dict[str, Any]:
        """``cancelling`` at once; ``cancelled`` once the lines in flight have finished (they are kept)."""
        stored = await self.store.request_cancel(batch_id, int(self._clock()), tenant=tenant)
        if stored is None:
            raise batch_not_found(batch_id)
        if stored.status not in UNFINISHED:
            raise APIError(409, f"Cannot cancel a batch with status '{stored.status}'.", type="invalid_request_error",
                           param="batch_id", code="batch_not_cancellable")
        self.runner.cancelled(batch_id)
        return batch_object(stored)
