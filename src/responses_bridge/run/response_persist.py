"""Where a finished response goes: the store, and its conversation — in one transaction when it is stored, so a
response that fails to save adds nothing to its conversation and a stored turn is never missing from it; a
``store: false`` turn still appends its items to its conversation, which is the client's own state.

The last step of :class:`~responses_bridge.run.response_run.ResponseRun`, apart from the run's turns: it answers
whether the response can be retrieved, and the run tells the client so when it cannot."""

from __future__ import annotations

from typing import Any

import structlog

from ..engine.responses.translator import Translator
from ..observability.timing import Timing
from ..store.base import ResponseStore
from ..store.records import LeaseLost
from ..store.transient import retry_store
from .history import ConversationHistory
from .runs import BeforePersist


def documented(timing: Timing | None, response_id: str | None) -> list[Any] | None:
    """The timing's document as the response is saved (None: not timed); a response of a session's turn adds its
    spans to the turn's (Timing.document)."""
    return None if timing is None else timing.document(None, response_id)


log = structlog.get_logger("responses_bridge.run")


async def persist_response(translator: Translator, store: ResponseStore, conversations: ConversationHistory | None,
                           conversation_id: str | None, *, tenant: str, before: BeforePersist | None,
                           fence: dict[str, str], within: float = 0.0, timing: Timing | None = None) -> bool:
    """Store the translator's response (joining ``conversation_id`` when given) or, with ``store: false``, append
    its turn to that conversation; False when it could not be kept. ``within``: seconds a database outage is
    waited out, the save retried (a background run's: store/transient.py). ``timing``: the request's clock, its
    document stored in the same row (observability/timing.py)."""
    if not translator.request.params.store:
        return await _join_conversation(translator, conversations, conversation_id, tenant)
    extra: dict[str, Any] = {} if conversation_id is None else {"conversation_id": conversation_id}
    document = None if timing is None else timing.document(None, translator.response_id)  # stored in its row

    async def save() -> None:
        if before is not None:
            await before(translator.pending(), translator.sequence_number)
        if document is None:  # not timed (a run made outside a door): the store's interface as it was
            await store.save_response(translator.response, translator.input_items, tenant=tenant, **extra, **fence)
        else:
            await store.save_response(translator.response, translator.input_items, tenant=tenant, **extra, **fence,
                                      timing=document)

    try:
        await retry_store(save, within=within, what="save_response")
    except LeaseLost:  # a background run another process ended meanwhile (its lease ran out): its end stands
        log.warning("background_lease_lost", response_id=translator.response_id)
        return False
    except Exception:  # the client must learn that its response is not retrievable
        log.exception("store_failed", response_id=translator.response_id)
        return False
    return True


async def _join_conversation(translator: Translator, conversations: ConversationHistory | None,
                             conversation_id: str | None, tenant: str) -> bool:
    """A ``store: false`` turn's input and output items appended to its conversation (a stored turn joins it
    inside ``save_response``)."""
    if conversation_id is None:
        return True
    items = translator.input_items + translator.response["output"]
    try:
        joined = await conversations.append_items(conversation_id, items, tenant=tenant)  # type: ignore[union-attr]
    except Exception:
        log.exception("conversation_append_failed", response_id=translator.response_id)
        return False
    if not joined:  # deleted while the response ran: the response itself is still good
        log.warning("conversation_gone", response_id=translator.response_id, conversation_id=conversation_id)
    return True
