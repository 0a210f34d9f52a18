"""The API's errors for bad paging arguments, from the store's own exceptions.

The store says only which argument was wrong (:class:`~responses_bridge.store.base.InvalidPageArgs`,
:class:`~responses_bridge.store.base.InvalidCursor`); the wording, status and codes the OpenAI API uses for them
are decided here, once for every list route.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ..protocol.errors import APIError, invalid_request
from ..store.records import MAX_PAGE_LIMIT, InvalidCursor, InvalidPageArgs

_PAGE_ARG_MESSAGES = {
    "limit": f"limit must be an integer between 1 and {MAX_PAGE_LIMIT}",
    "order": "order must be 'asc' or 'desc'",
}


@contextmanager
def page_errors(item_noun: str) -> Iterator[None]:
    """Turn the store's paging exceptions raised inside the block into 400 ``invalid_value`` errors naming the
    argument; ``item_noun`` names what a cursor points at ("input item", "item") in the message."""
    try:
        yield
    except InvalidPageArgs as exc:
        raise APIError(400, _PAGE_ARG_MESSAGES[exc.param], param=exc.param, code="invalid_value") from None
    except InvalidCursor as exc:
        raise APIError(400, f"No {item_noun} found with id '{exc.value}'", param=exc.param,
                       code="invalid_value") from None


def check_page(limit: int, order: str, max_limit: int) -> None:
    """The 400s of a list route's ``limit`` (1 to ``max_limit``) and ``order`` (``asc`` / ``desc``), checked by
    the service before its store is asked."""
    if not 1 <= limit <= max_limit:
        raise invalid_request(f"Invalid value for 'limit': expected an integer between 1 and {max_limit}.",
                              param="limit", code="invalid_value")
    if order not in ("asc", "desc"):
        raise invalid_request("Invalid value for 'order': expected 'asc' or 'desc'.", param="order",
                              code="invalid_value")
