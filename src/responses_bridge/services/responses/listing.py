"""``GET /v1/responses``: what the list may be narrowed by, checked once, and the list body.

The store answers with each response's stored JSON; the body is assembled around those bytes as they are, so a
listed response is exactly what ``GET /v1/responses/{id}`` answers with, and a page of large responses is not
parsed and serialised again.
"""

from __future__ import annotations

import orjson

from ...protocol.errors import invalid_request
from ...store.base import ResponseStore
from ...store.records import ResponseFilter, ResponsePage
from ..pagination import page_errors

RESPONSE_STATUSES = ("completed", "failed", "in_progress", "cancelled", "queued", "incomplete")
MAX_METADATA_FILTERS = 16
"""As many as a response may have metadata keys: more could never all match."""


def response_filter(model: str | None, status: str | None, metadata: list[tuple[str, str]]) -> ResponseFilter:
    """The filter, or a 400 naming the parameter that cannot describe one."""
    if status is not None and status not in RESPONSE_STATUSES:
        raise invalid_request(f"Invalid value for 'status': expected one of {', '.join(RESPONSE_STATUSES)}.",
                              param="status")
    if len(metadata) > MAX_METADATA_FILTERS:
        raise invalid_request(f"At most {MAX_METADATA_FILTERS} 'metadata[key]' filters may be given.",
                              param="metadata")
    return ResponseFilter(model=model, status=status, metadata=tuple(dict(metadata).items()))


async def list_responses(store: ResponseStore, *, tenant: str, after: str | None, before: str | None, limit: int,
                         order: str, where: ResponseFilter) -> bytes:
    """The whole ``{"object": "list", ...}`` body, of ``tenant``'s responses only."""
    with page_errors("response"):
        page = await store.list_responses(tenant=tenant, after=after, before=before, limit=limit, order=order,
                                          where=where)
    return spliced_list_body(page)


def spliced_list_body(page: ResponsePage) -> bytes:
    """The list body with the stored responses' JSON spliced in as the store keeps it (never decoded and
    encoded again: a page of large responses costs one copy)."""
    tail = orjson.dumps({"first_id": page.ids[0] if page.ids else None,
                         "last_id": page.ids[-1] if page.ids else None, "has_more": page.has_more})
    return b'{"object":"list","data":[' + b",".join(page.data) + b"]," + tail[1:]
