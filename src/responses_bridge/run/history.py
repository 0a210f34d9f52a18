"""What a run asks of conversations and prompts: two small interfaces, implemented in ``services/``.

The run (``run/response_run.py``) never sees SQL or HTTP shapes: it asks for a conversation's items (history for
the model), hands back the items of a finished turn, and asks for a prompt to be rendered into instructions
(+ input items), which the translator then takes (:class:`~responses_bridge.engine.state.RenderedPrompt`).
"""

from __future__ import annotations

from typing import Any, Protocol

from ..engine.state import RenderedPrompt


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
