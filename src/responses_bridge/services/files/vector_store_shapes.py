"""The Vector Stores API's request fields and answers: each field checked as OpenAI checks it (a 400 naming it), and
stores, files and batches rendered in their OpenAI shapes (counts and status computed from the rows).
"""

from __future__ import annotations

import time
from typing import Any

from ...protocol.errors import APIError, array_within, invalid_request, invalid_type, not_found
from ...protocol.lists import list_body
from ...store.records import STATUSES, FileCounts, Page, StoredFileBatch, StoredVectorStore, StoredVectorStoreFile
from .retrieval.search import MAX_QUERY_CHARS

DAY_SECONDS = 86_400


MAX_EXPIRY_DAYS = 365


MAX_FILES_PER_CREATE = 500


MAX_FILES_PER_BATCH = 2000


MAX_ATTRIBUTES = 16


MAX_ATTRIBUTE_KEY = 64


MAX_ATTRIBUTE_STRING = 512


MAX_QUERIES = 10


MAX_NAME = 256


def render_counts(counts: FileCounts) -> dict[str, int]:
    return {"in_progress": counts.in_progress, "completed": counts.completed, "failed": counts.failed,
            "cancelled": counts.cancelled, "total": counts.total}


def expires_at(store: StoredVectorStore) -> int | None:
    if store.expires_after is None:
        return None
    return store.last_active_at + int(store.expires_after["days"]) * DAY_SECONDS


def is_expired(store: StoredVectorStore, now: float | None = None) -> bool:
    deadline = expires_at(store)
    return deadline is not None and (time.time() if now is None else now) >= deadline


def store_status(store: StoredVectorStore, now: float | None = None) -> str:
    if is_expired(store, now):
        return "expired"
    return "in_progress" if store.file_counts.in_progress else "completed"


def render_store(store: StoredVectorStore) -> dict[str, Any]:
    return {"id": store.id, "object": "vector_store", "created_at": store.created_at, "name": store.name,
            "usage_bytes": store.usage_bytes, "file_counts": render_counts(store.file_counts),
            "status": store_status(store), "expires_after": store.expires_after, "expires_at": expires_at(store),
            "last_active_at": store.last_active_at, "metadata": store.metadata}


def render_file(row: StoredVectorStoreFile) -> dict[str, Any]:
    return {"id": row.file_id, "object": "vector_store.file", "usage_bytes": row.usage_bytes,
            "created_at": row.created_at, "vector_store_id": row.vector_store_id, "status": row.status,
            "last_error": row.last_error, "chunking_strategy": row.chunking, "attributes": row.attributes}


def batch_status(batch: StoredFileBatch) -> str:
    """A failed file never fails its batch: the batch is ``completed`` once no file is in progress."""
    if batch.cancelled:
        return "cancelled"
    return "in_progress" if batch.file_counts.in_progress else "completed"


def render_batch(batch: StoredFileBatch) -> dict[str, Any]:
    return {"id": batch.id, "object": "vector_store.files_batch", "created_at": batch.created_at,
            "vector_store_id": batch.vector_store_id, "status": batch_status(batch),
            "file_counts": render_counts(batch.file_counts)}


def list_page(page: Page, render: Any, id_of: Any) -> dict[str, Any]:
    data = [render(row) for row in page.data]
    return list_body(data, has_more=page.has_more, first_id=id_of(page.data[0]) if page.data else None,
                     last_id=id_of(page.data[-1]) if page.data else None)


def check_attributes(value: Any, param: str = "attributes") -> dict[str, Any]:
    """``attributes``: at most 16 keys of <= 64 characters; values strings (<= 512), numbers or booleans."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid_type(param, "an object")
    if len(value) > MAX_ATTRIBUTES:
        raise invalid_request(f"'{param}' may have at most {MAX_ATTRIBUTES} keys; got {len(value)}.", param=param)
    for key, item in value.items():
        if len(key) > MAX_ATTRIBUTE_KEY:
            raise invalid_request(f"Keys of '{param}' may be at most {MAX_ATTRIBUTE_KEY} characters long.",
                                  param=param)
        if isinstance(item, str):
            if len(item) > MAX_ATTRIBUTE_STRING:
                raise invalid_request(f"String values of '{param}' may be at most {MAX_ATTRIBUTE_STRING} "
                                      f"characters long ('{key[:64]}').", param=param)
        elif not isinstance(item, int | float) or item != item or item in (float("inf"), float("-inf")):
            raise invalid_request(f"Invalid value for '{param}.{key[:64]}': expected a string, a finite number "
                                  "or a boolean.", param=param, code="invalid_type")
    return dict(value)


def expires_after(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    param = "expires_after"
    if not isinstance(value, dict):
        raise invalid_type(param, "an object")
    if value.get("anchor") != "last_active_at":
        raise invalid_request("Invalid value for 'expires_after.anchor': expected 'last_active_at'.",
                              param="expires_after.anchor")
    days = value.get("days")
    if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= MAX_EXPIRY_DAYS:
        raise invalid_request(f"Invalid value for 'expires_after.days': expected an integer between 1 and "
                              f"{MAX_EXPIRY_DAYS}.", param="expires_after.days")
    return {"anchor": "last_active_at", "days": days}


def store_name(value: Any, param: str = "name") -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise invalid_type(param, "a string")
    if len(value) > MAX_NAME:
        raise invalid_request(f"'{param}' may be at most {MAX_NAME} characters long.", param=param)
    return value


def check_file_id(value: Any, param: str) -> str:
    if not isinstance(value, str) or not value:
        raise invalid_request(f"Invalid value for '{param}': expected a file id.", param=param,
                              code="invalid_type" if not isinstance(value, str) else "invalid_value")
    return value


def check_file_ids(value: Any, param: str, limit: int) -> list[str]:
    if value is None:
        return []
    return [check_file_id(item, f"{param}[{index}]")
            for index, item in enumerate(array_within(value, param, limit, expected="an array of file ids"))]


def status_filter(value: str | None) -> str | None:
    if value is None or value in STATUSES:
        return value
    raise invalid_request(f"Invalid value for 'filter': expected one of {', '.join(STATUSES)}.", param="filter")


def check_queries(value: Any) -> list[str]:
    if isinstance(value, str):
        queries = [value]
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        queries = list(value)
    elif value is None:
        raise invalid_request("Missing required parameter: 'query'.", param="query",
                              code="missing_required_parameter")
    else:
        raise invalid_request("Invalid type for 'query': expected a string or an array of strings.", param="query",
                              code="invalid_type")
    if not queries or len(queries) > MAX_QUERIES:
        raise invalid_request(f"'query' must be a non-empty string or 1 to {MAX_QUERIES} non-empty strings.",
                              param="query")
    for position, query in enumerate(queries):  # the length first: nothing of an oversized query is scanned
        param = "query" if isinstance(value, str) else f"query[{position}]"
        if len(query) > MAX_QUERY_CHARS:
            raise invalid_request(f"Invalid '{param}': string too long. Expected a string with maximum length "
                                  f"{MAX_QUERY_CHARS}, but got a string with length {len(query)} instead.",
                                  param=param, code="string_above_max_length")
        if not query.strip():
            raise invalid_request(f"'query' must be a non-empty string or 1 to {MAX_QUERIES} non-empty strings.",
                                  param="query")
    return queries


def store_not_found(vector_store_id: str, param: str = "vector_store_id") -> APIError:
    return not_found(f"No vector store found with id '{vector_store_id}'.", param=param, code="not_found")
