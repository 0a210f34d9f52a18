"""Conversations and prompts as the run sees them: two small interfaces, implemented in ``services/``.

The run (``run/response_run.py``) never sees SQL or HTTP shapes: it asks for a conversation's items (history for
the model), hands back the items of a finished turn, and asks for a prompt to be rendered into instructions
(+ input items). The rendered prompt is what the translator (``engine/translator.py``) takes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


class ConversationHistory(Protocol):
    async def load_items(self, conversation_id: str) -> list[dict[str, Any]] | None:
        """Every item of the conversation in order; None if it is unknown."""

    async def append_items(self, conversation_id: str, items: list[dict[str, Any]]) -> bool:
        """Append a finished turn's input and output items; False if the conversation is unknown."""


@dataclass(frozen=True, slots=True)
class RenderedPrompt:
    instructions: str
    """The template with every ``{{variable}}`` replaced."""
    input_items: list[dict[str, Any]] = field(default_factory=list)
    """Extra input for the model (image/file variables), placed before the request's own input."""
    echo: dict[str, Any] = field(default_factory=dict)
    """The Response's ``prompt`` field: ``{id, version, variables}``."""


class PromptRenderer(Protocol):
    async def render(self, prompt: dict[str, Any]) -> RenderedPrompt:
        """Resolve ``{id, version?, variables?}`` and render it; APIError 404 / 400 for an unknown prompt or a
        missing variable."""
