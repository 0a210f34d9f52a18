"""The output and error files of a batch, as OpenAI writes them: one JSON line per finished request, in input
order, the answered (2xx) ones in the output file and the others (a refusal, an upstream error, a line never run
before the batch expired) in the error file; each a file of the batch's tenant with purpose ``batch_output``,
downloadable with ``client.files.content(...)``, expiring as ``output_expires_after`` says (never by default).

Written from the lines' records (store/base_batches.py), a page at a time: memory holds a page, never a file. A file
with no line is not made (its id stays null)."""

from __future__ import annotations

import contextlib
from typing import Any

from ...store.base_batches import BatchStore, StoredBatch
from ..files.files import FileService, Upload

PAGE = 500
OUTPUT_MAX_BYTES = 1 << 40
"""No size limit of the Files API's upload on what the bridge itself writes; the tenant's stored bytes still
bound it (a 400 ``storage_limit_exceeded`` fails the batch, saying so)."""


async def write_results(store: BatchStore, files: FileService, batch: StoredBatch, owner: str) -> dict[str, Any]:
    """``{"output_file_id", "error_file_id"}`` of the files written (None where no line goes)."""
    async with contextlib.AsyncExitStack() as stack:
        output = await stack.enter_async_context(files.receive(tenant=batch.tenant, max_bytes=OUTPUT_MAX_BYTES))
        errors = await stack.enter_async_context(files.receive(tenant=batch.tenant, max_bytes=OUTPUT_MAX_BYTES))
        after = -1
        while True:
            page = await store.line_results(batch.id, after, PAGE)
            if not page:
                break
            ok = b"".join(result.output + b"\n" for result in page if not result.failed)
            failed = b"".join(result.output + b"\n" for result in page if result.failed)
            if ok:
                await output.write(ok)
            if failed:
                await errors.write(failed)
            after = page[-1].index
        expires = batch.body.get("_output_expires_after")
        return {"output_file_id": await _publish(files, output, f"{batch.id}_output.jsonl", expires),
                "error_file_id": await _publish(files, errors, f"{batch.id}_error.jsonl", expires)}


async def _publish(files: FileService, upload: Upload, filename: str, expires: int | None) -> str | None:
    if upload.size == 0:
        return None
    created = await files.create(upload, filename=filename, purpose="batch_output", expires_after=expires)
    return str(created["id"])
