"""The store's paging exceptions become the OpenAI errors the list routes have always answered."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from responses_bridge.protocol.errors import APIError
from responses_bridge.services.pagination import page_errors
from responses_bridge.services.responses.conversations import ConversationService
from responses_bridge.store import InvalidCursor, InvalidPageArgs, SQLiteResponseStore
from responses_bridge.store.base import DEFAULT_TENANT
from responses_bridge.store.sqlite.conversations import SQLiteConversationStore


@pytest.fixture
async def db() -> AsyncIterator[SQLiteResponseStore]:
    async with SQLiteResponseStore(":memory:") as opened:
        yield opened


def caught(noun: str, exc: Exception) -> APIError:
    with pytest.raises(APIError) as info, page_errors(noun):
        raise exc
    return info.value


@pytest.mark.parametrize(("exc", "message", "param"), [
    (InvalidPageArgs("limit", 0), "limit must be an integer between 1 and 100", "limit"),
    (InvalidPageArgs("order", "up"), "order must be 'asc' or 'desc'", "order"),
    (InvalidCursor("after", "in_x"), "No input item found with id 'in_x'", "after"),
    (InvalidCursor("before", "in_y"), "No input item found with id 'in_y'", "before"),
])
def test_input_item_page_errors(exc: Exception, message: str, param: str) -> None:
    error = caught("input item", exc)
    assert (error.status, error.message, error.param, error.code) == (400, message, param, "invalid_value")
    assert error.type == "invalid_request_error"


def test_other_errors_pass_through() -> None:
    with pytest.raises(KeyError), page_errors("item"):
        raise KeyError("x")


async def test_input_items_store_errors_map(db: SQLiteResponseStore) -> None:
    await db.save_response({"id": "resp_a", "object": "response", "status": "completed", "output": []}, [],
                           tenant=DEFAULT_TENANT)
    with pytest.raises(APIError) as info, page_errors("input item"):
        await db.list_input_items("resp_a", before="msg_nope", tenant=DEFAULT_TENANT)
    assert (info.value.status, info.value.message, info.value.param) == (
        400, "No input item found with id 'msg_nope'", "before")


async def test_conversation_items_errors_through_the_service(db: SQLiteResponseStore) -> None:
    service = ConversationService(SQLiteConversationStore(db))
    cid = (await service.create({}, tenant=DEFAULT_TENANT))["id"]
    with pytest.raises(APIError) as info:
        await service.list_items(cid, after="msg_nope", limit=20, order="desc", tenant=DEFAULT_TENANT)
    assert (info.value.status, info.value.message, info.value.param, info.value.code) == (
        400, "No item found with id 'msg_nope'", "after", "invalid_value")
    with pytest.raises(APIError) as info:
        await service.list_items(cid, after=None, limit=101, order="desc", tenant=DEFAULT_TENANT)
    assert (info.value.status, info.value.message, info.value.param, info.value.code) == (
        400, "limit must be an integer between 1 and 100", "limit", "invalid_value")
    with pytest.raises(APIError) as info:
        await service.list_items(cid, after=None, limit=20, order="sideways", tenant=DEFAULT_TENANT)
    assert (info.value.message, info.value.param) == ("order must be 'asc' or 'desc'", "order")
