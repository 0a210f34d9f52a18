"""A rendered prompt: what the translator (``engine/responses/translator.py``) takes from a stored prompt template.

Rendering it (loading the template, checking the variables) is the run's business, through the interface in
``run/history.py``; the translator only puts its instructions first and its input items before the request's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class RenderedPrompt:
    instructions: str
    """The template with every ``{{variable}}`` replaced."""
    input_items: list[dict[str, Any]] = field(default_factory=list)
    """Extra input for the model (image/file variables), placed before the request's own input."""
    echo: dict[str, Any] = field(default_factory=dict)
    """The Response's ``prompt`` field: ``{id, version, variables}``."""
