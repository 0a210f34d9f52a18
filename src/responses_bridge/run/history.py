"""What a run asks of conversations and prompts: two small interfaces, implemented in ``services/``.

The run (``response_run.py``) never sees SQL or HTTP shapes: it asks for a conversation's items (history for
the model), hands back the items of a finished turn, and asks for a prompt to be rendered into instructions
(+ input items), which the translator then takes (:class:`~responses_bridge.engine.state.RenderedPrompt`).
"""

from __future__ import annotations

from typing import Any, Protocol

from ..engine.state import RenderedPrompt
from ..protocol.errors import APIError, invalid_request, not_found
from ..protocol.responses.request import ResponsesRequest


class ConversationHistory(Protocol):
    async def load_items(self, conversation_id: str, *, tenant: str) -> list[dict[str, Any]] | None:
        """Every item of ``tenant``'s conversation in order; None if it is unknown (or another tenant's)."""

    async def append_items(self, conversation_id: str, items: list[dict[str, Any]], *, tenant: str) -> bool:
        """Append a finished turn's input and output items; False if the conversation is unknown (or another
        tenant's)."""


class PromptRenderer(Protocol):
    async def render(self, prompt: dict[str, Any], *, tenant: str) -> RenderedPrompt:
        """Resolve ``{id, version?, variables?}`` among ``tenant``'s prompts and render it; APIError 404 / 400 for
        an unknown prompt (another tenant's is unknown) or a missing variable."""


async def load_conversation(request: ResponsesRequest, conversations: ConversationHistory | None, *,
                            tenant: str) -> tuple[list[dict[str, Any]], str | None]:
    """The request's conversation's items as history and its id, which a finished turn joins (none: ``[]``,
    None); a 400 where the deployment has no conversations or the request also names a previous response, a 404 for
    an unknown one (another tenant's is unknown)."""
    p = request.params
    if p.conversation is None:
        return [], None
    if conversations is None:
        raise APIError(400, "'conversation' is not supported by this deployment.", param="conversation",
                       code="unsupported_parameter")
    if p.previous_response_id is not None:
        raise invalid_request("'conversation' and 'previous_response_id' cannot be used together.",
                              param="conversation", code="invalid_value")
    conversation_id = p.conversation if isinstance(p.conversation, str) else p.conversation["id"]
    loaded = await conversations.load_items(conversation_id, tenant=tenant)
    if loaded is None:
        raise not_found(f"Conversation with id '{conversation_id}' not found.", param="conversation",
                        code="conversation_not_found")
    return loaded, conversation_id


async def conversation_and_prompt(
        request: ResponsesRequest, conversations: ConversationHistory | None, prompts: PromptRenderer | None, *,
        tenant: str) -> tuple[list[dict[str, Any]], RenderedPrompt | None, str | None]:
    """:func:`load_conversation`, and the request's rendered prompt (the translator puts its instructions first);
    a 400 where the deployment has no prompts."""
    history, conversation_id = await load_conversation(request, conversations, tenant=tenant)
    prompt = None
    if request.params.prompt is not None:
        if prompts is None:
            raise APIError(400, "'prompt' is not supported by this deployment.", param="prompt",
                           code="unsupported_parameter")
        prompt = await prompts.render(request.params.prompt, tenant=tenant)
    return history, prompt, conversation_id
