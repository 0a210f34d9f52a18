"""Conversations: validation, ids, rendering and pagination, shared by both doors.

A conversation is an ordered list of items (the same normalised items ``input`` accepts, plus the output items of
every response that used it). A run reads them as history through :class:`ConversationHistory`; the HTTP door
serves the OpenAI Conversations API from here.
"""

from __future__ import annotations

import time
from typing import Any

from ... import ids
from ...fairness.memory_charge import reserve_references
from ...protocol.errors import APIError, array_within, invalid_request, not_found
from ...protocol.lists import list_body, list_of
from ...protocol.metadata import check_metadata, metadata_update
from ...protocol.responses.input_items import normalize_input
from ...protocol.responses.item_references import ItemFinder, has_references, resolve_stored
from ...protocol.tools.call_outputs import pair_call_outputs, unpaired
from ...store.base import ConversationStore
from ...store.records import ItemPage, StoredConversation
from ..pagination import page_errors

MAX_ITEMS_PER_CALL = 20
LOGPROBS_INCLUDE = "message.output_text.logprobs"


def conversation_id() -> str:
    return ids.new_id("conv")


def render_conversation(conversation: StoredConversation) -> dict[str, Any]:
    return {"id": conversation.id, "object": "conversation", "created_at": conversation.created_at,
            "metadata": conversation.metadata}


def render_item(item: dict[str, Any], include: list[str] | None) -> dict[str, Any]:
    """An item as listed: logprobs of output_text parts only when ``include`` asks for them."""
    if item.get("type") != "message" or (include and LOGPROBS_INCLUDE in include):
        return item
    content = item.get("content")
    if not isinstance(content, list) or not any(isinstance(p, dict) and p.get("logprobs") for p in content):
        return item
    parts = [dict(part, logprobs=[]) if isinstance(part, dict) and part.get("logprobs") else part for part in content]
    return dict(item, content=parts)


async def _pair(earlier: list[dict[str, Any]], items: list[dict[str, Any]], finder: ItemFinder | None,
                tenant: str) -> list[dict[str, Any]]:
    """``items`` with their references resolved (protocol/responses/item_references.py: among ``earlier`` items, else
    any item the tenant stored, found by ``finder``) and their call outputs sent without call_id paired
    (protocol/tools/call_outputs.py) against ``earlier`` items; errors name ``items``."""
    try:
        items = await resolve_stored(earlier, items, finder, tenant=tenant, reserve=reserve_references)
        pair_call_outputs(earlier, items)
        return items
    except APIError as error:
        if error.param and error.param.startswith("input"):
            error.param = "items" + error.param[len("input"):]
            error.message = error.message.replace("'input[", "'items[")
        raise


def _items(value: Any, param: str = "items") -> list[dict[str, Any]]:
    if value is None:
        return []
    items = array_within(value, param, MAX_ITEMS_PER_CALL)
    try:
        return normalize_input(items)
    except APIError as error:  # the parser names input[i]; here the list is called items
        if error.param and error.param.startswith("input"):
            error.param = param + error.param[len("input"):]
            error.message = error.message.replace("'input[", f"'{param}[")
        raise


def _not_found(conversation_id: str) -> APIError:
    return not_found(f"Conversation with id '{conversation_id}' not found.", param="conversation_id",
                     code="not_found")


class ConversationService:
    """Implements the run's :class:`~responses_bridge.run.history.ConversationHistory` too."""

    def __init__(self, store: ConversationStore, items: ItemFinder | None = None) -> None:
        self.store = store
        self.items = items  # any item the tenant stored, for a reference the conversation does not hold

    # -- engine ------------------------------------------------------------------------------------------------

    async def load_items(self, conversation_id: str, *, tenant: str) -> list[dict[str, Any]] | None:
        return await self.store.load_items(conversation_id, tenant=tenant)

    async def append_items(self, conversation_id: str, items: list[dict[str, Any]], *, tenant: str) -> bool:
        return await self.store.append_items(conversation_id, items, tenant=tenant)

    # -- API ---------------------------------------------------------------------------------------------------

    async def create(self, body: dict[str, Any], *, tenant: str) -> dict[str, Any]:
        metadata = body.get("metadata")
        check_metadata(metadata)
        items = _items(body.get("items"))
        items = await _pair([], items, self.items, tenant)
        conversation = StoredConversation(id=conversation_id(), created_at=int(time.time()),
                                          metadata=metadata or {})
        await self.store.create_conversation(conversation.id, conversation.created_at, conversation.metadata, items,
                                             tenant=tenant)
        return render_conversation(conversation)

    async def get(self, conversation_id: str, *, tenant: str) -> dict[str, Any]:
        conversation = await self.store.get_conversation(conversation_id, tenant=tenant)
        if conversation is None:
            raise _not_found(conversation_id)
        return render_conversation(conversation)

    async def list_conversations(self, *, after: str | None, before: str | None, limit: int,
                                 order: str, tenant: str) -> dict[str, Any]:
        """``GET /v1/conversations``: a cursor page of ``tenant``'s Conversation objects (deleted ones are gone)."""
        with page_errors("conversation"):
            page = await self.store.list_conversations(tenant=tenant, after=after, before=before, limit=limit,
                                                       order=order)
        data = [render_conversation(conversation) for conversation in page.data]
        return list_of(data, has_more=page.has_more)

    async def update(self, conversation_id: str, body: dict[str, Any], *, tenant: str) -> dict[str, Any]:
        conversation = await self.store.update_conversation(conversation_id, metadata_update(body), tenant=tenant)
        if conversation is None:
            raise _not_found(conversation_id)
        return render_conversation(conversation)

    async def delete(self, conversation_id: str, *, tenant: str) -> dict[str, Any]:
        if not await self.store.delete_conversation(conversation_id, tenant=tenant):
            raise _not_found(conversation_id)
        return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}

    async def add_items(self, conversation_id: str, body: dict[str, Any],
                        include: list[str] | None = None, *, tenant: str) -> dict[str, Any]:
        if "items" not in body:
            raise invalid_request("Missing required parameter: 'items'.", param="items",
                                  code="missing_required_parameter")
        items = _items(body["items"])
        if unpaired(items) or has_references(items):  # they answer or name the conversation's (or stored) items
            earlier = await self.store.load_items(conversation_id, tenant=tenant)
            if earlier is None:
                raise _not_found(conversation_id)
            items = await _pair(earlier, items, self.items, tenant)
        if not await self.store.append_items(conversation_id, items, tenant=tenant):
            raise _not_found(conversation_id)
        return _page(ItemPage(data=items, first_id=items[0]["id"] if items else None,
                              last_id=items[-1]["id"] if items else None, has_more=False), include)

    async def list_items(self, conversation_id: str, *, after: str | None, limit: int, order: str,
                         include: list[str] | None = None, tenant: str) -> dict[str, Any]:
        with page_errors("item"):
            page = await self.store.list_items(conversation_id, tenant=tenant, after=after, limit=limit,
                                               order=order)
        if page is None:
            raise _not_found(conversation_id)
        return _page(page, include)

    async def get_item(self, conversation_id: str, item_id: str, include: list[str] | None = None, *,
                       tenant: str) -> dict[str, Any]:
        item = await self.store.get_item(conversation_id, item_id, tenant=tenant)
        if item is None:
            await self.get(conversation_id, tenant=tenant)  # 404 for the conversation first
            raise not_found(f"Item with id '{item_id}' not found in conversation '{conversation_id}'.",
                            param="item_id", code="not_found")
        return render_item(item, include)

    async def delete_item(self, conversation_id: str, item_id: str, *, tenant: str) -> dict[str, Any]:
        if not await self.store.delete_item(conversation_id, item_id, tenant=tenant):
            await self.get(conversation_id, tenant=tenant)
            raise not_found(f"Item with id '{item_id}' not found in conversation '{conversation_id}'.",
                            param="item_id", code="not_found")
        return await self.get(conversation_id, tenant=tenant)


def _page(page: ItemPage, include: list[str] | None) -> dict[str, Any]:
    return list_body([render_item(item, include) for item in page.data], has_more=page.has_more,
                     first_id=page.first_id, last_id=page.last_id)
