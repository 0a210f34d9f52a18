"""Stored Chat Completions, shared by both doors: what ``store: true`` on ``POST /v1/chat/completions`` keeps,
and the routes that read it back (OpenAI's shapes: ``ChatCompletion`` with its ``metadata``,
``ChatCompletionDeleted``, ``ChatCompletionStoreMessage`` pages).

A door passes the upstream's answer through unchanged and feeds it to the :class:`ChatRecorder` that
:meth:`ChatCompletionService.recorder` gives it (only for a request with ``store: true``); before the answer's
terminal bytes go out it calls :meth:`~ChatCompletionService.save`. The id is the bridge's own ``chatcmpl-...``,
swapped into the answer for the upstream's (engine/chat_ids.py): backends reuse theirs (Ollama numbers its
completions), and a stored completion must never overwrite another.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import structlog

from ...engine.chat_record import ChatRecorder, request_messages
from ...observability import timing
from ...protocol.errors import APIError, not_found
from ...protocol.lists import list_body, list_of
from ...protocol.metadata import check_metadata, metadata_update
from ...store.base import ChatCompletionStore
from ...store.records import InvalidCursor, StoredChatCompletion, check_page_args
from ..pagination import page_errors

log = structlog.get_logger("responses_bridge.chat_completions")


def render(record: StoredChatCompletion) -> dict[str, Any]:
    """The ``ChatCompletion`` as stored, with the metadata it has now."""
    return {**record.completion, "metadata": record.metadata}


def _not_found(completion_id: str) -> APIError:
    return not_found(f"Chat completion with id '{completion_id}' not found.", param="completion_id",
                     code="not_found")


class ChatCompletionService:
    """``enabled``: the deployment's ``store_chat_completions``; off, no answer is kept (``store`` goes to the
    upstream unread, as through Envoy, whose chat route then never reaches the processor)."""

    def __init__(self, store: ChatCompletionStore, *, enabled: bool = True) -> None:
        self.store = store
        self.enabled = enabled

    # -- the doors' POST /v1/chat/completions ------------------------------------------------------------------

    def recorder(self, request: dict[str, Any]) -> ChatRecorder | None:
        """A recorder for a request with ``store: true`` (its ``metadata`` checked first: a 400 before anything
        goes upstream); None for every other request, whose answer nobody reads."""
        if not self.enabled or request.get("store") is not True:
            return None
        check_metadata(request.get("metadata"))
        return ChatRecorder(request.get("stream") is True)

    async def save(self, request: dict[str, Any], recorder: ChatRecorder, *, tenant: str) -> bool:
        """Store the answer ``recorder`` collected, with the request's messages and metadata; False (logged) when
        the answer was no completion (an upstream error, a cut stream without an id)."""
        completion = recorder.completion()
        if completion is None:
            log.info("chat_completion_not_stored", reason="the upstream's answer is not a chat completion")
            return False
        model = completion.get("model") if isinstance(completion.get("model"), str) else None
        requested = request.get("model")
        record = StoredChatCompletion(
            id=completion["id"], created_at=int(time.time()),
            model=model or (requested if isinstance(requested, str) else ""),
            metadata=dict(request.get("metadata") or {}), completion=completion,
            messages=request_messages(request, completion["id"]), timing=_timed())
        try:
            await self.store.save_chat_completion(record, tenant=tenant)
        except Exception:  # the client still gets its answer, which has already begun or is whole in hand
            log.exception("chat_completion_store_failed", completion_id=record.id)
            return False
        return True

    # -- API -------------------------------------------------------------------------------------------------

    async def list(self, *, after: str | None, limit: int, order: str, model: str | None,
                   metadata: Sequence[tuple[str, str]], tenant: str) -> dict[str, Any]:
        with page_errors("chat completion"):
            page = await self.store.list_chat_completions(tenant=tenant, after=after, limit=limit, order=order,
                                                          model=model, metadata=metadata)
        return list_of([render(record) for record in page.data], has_more=page.has_more)

    async def get(self, completion_id: str, *, tenant: str) -> dict[str, Any]:
        record = await self.store.get_chat_completion(completion_id, tenant=tenant)
        if record is None:
            raise _not_found(completion_id)
        return render(record)

    async def update(self, completion_id: str, body: dict[str, Any], *, tenant: str) -> dict[str, Any]:
        record = await self.store.update_chat_completion(completion_id, metadata_update(body), tenant=tenant)
        if record is None:
            raise _not_found(completion_id)
        return render(record)

    async def delete(self, completion_id: str, *, tenant: str) -> dict[str, Any]:
        if not await self.store.delete_chat_completion(completion_id, tenant=tenant):
            raise _not_found(completion_id)
        return {"id": completion_id, "object": "chat.completion.deleted", "deleted": True}

    async def messages(self, completion_id: str, *, after: str | None, limit: int, order: str,
                       tenant: str) -> dict[str, Any]:
        """A page of the stored request messages (``ChatCompletionStoreMessage``); they are few and kept in one
        row, so the page is cut here."""
        with page_errors("message"):
            check_page_args(limit, order)
            messages = await self.store.chat_completion_messages(completion_id, tenant=tenant)
            if messages is None:
                raise _not_found(completion_id)
            ordered = messages if order == "asc" else messages[::-1]
            start = 0
            if after is not None:
                position = next((n for n, message in enumerate(ordered) if message.get("id") == after), None)
                if position is None:
                    raise InvalidCursor("after", after)
                start = position + 1
            page = ordered[start:start + limit]
        return list_body(page, has_more=start + limit < len(ordered),
                         first_id=page[0]["id"] if page else None, last_id=page[-1]["id"] if page else None)


__all__ = ["ChatCompletionService", "render"]


def _timed() -> list[Any] | None:
    """The request's timing as the completion is stored (observability/timing.py): its latency, the pools it waited
    for, its upstream (no time to first token: the completion is relayed as the upstream sent it)."""
    clock = timing.current()
    return clock.document() if clock is not None else None
