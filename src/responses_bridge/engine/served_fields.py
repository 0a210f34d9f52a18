"""OpenAI's request fields that ask for something of the model's service itself — which reasoning is rendered back
(``reasoning.context``), how the model reasons (``reasoning.mode``), an access program (``access_programs``), image
context compression (``image.context_compression``) — served where the Chat Completions backend does what they
ask, else a 400 naming the field: never accepted and silently not done.

No Chat Completions backend, OpenAI's included, takes any of these four, so what is served is what the bridge can do
itself or every backend does anyway: ``reasoning.context: auto`` (the profile's ``reasoning_history`` decides), and
where that switch sends reasoning back, ``all_turns`` (all of it) and ``current_turn`` (only the reasoning since the
last user message: :func:`reasoning_in_context`); ``reasoning.mode: standard``; ``access_programs.cyber: standard``;
``image.context_compression: auto`` or ``disabled`` (images go to the backend as sent). A request for more
(``all_turns`` or ``current_turn`` where the backend is given no reasoning, ``pro``, a Daybreak program, compression
required) is refused here, before anything is stored or sent. A backend that speaks the Responses API itself (the
native relay) is given the request as sent and judges these fields on its own: this module is only called where the
bridge translates to Chat Completions.

The enumerations themselves (a value OpenAI does not define) are judged earlier, by the known-fields walk
(protocol/known_fields.py).
"""

from __future__ import annotations

from typing import Any

from ..protocol.errors import APIError, invalid_request
from ..protocol.responses.request import ResponsesRequest
from .options import EngineOptions


def check_served_fields(request: ResponsesRequest, options: EngineOptions) -> None:
    """A 400 naming the first of these fields this deployment's backend cannot serve as asked."""
    p = request.params
    if p.reasoning is None and p.access_programs is None and p.image is None:
        return  # nearly every request: none of the three
    if p.reasoning is not None:
        _check_reasoning(p.reasoning.context, p.reasoning.mode, options)
    programs = p.access_programs or {}
    if programs.get("cyber") not in (None, "standard"):
        raise _unsupported("access_programs.cyber", f"'{str(programs['cyber'])[:100]}' is not available on this "
                           "deployment: its models are served under the Standard program only ('standard', or leave "
                           "it out).")
    compression = (p.image or {}).get("context_compression")
    if compression not in (None, "auto", "disabled"):
        raise _unsupported("image.context_compression", f"'{str(compression)[:100]}' is not offered: this "
                           "deployment's backend has no image context compression, images are sent as given ('auto' "
                           "or 'disabled').")


def _check_reasoning(context: str | None, mode: str | None, options: EngineOptions) -> None:
    if context in ("all_turns", "current_turn") and options.reasoning_history != "reasoning_content":
        raise _unsupported("reasoning.context", f"'{context}' needs reasoning rendered back to the model, and this "
                           "deployment's backend is not given it (its profile's reasoning_history is 'drop'). Use "
                           "'auto', or an upstream whose profile sets reasoning_history: reasoning_content.")
    if context not in (None, "auto", "all_turns", "current_turn"):
        raise _unsupported("reasoning.context", f"'{str(context)[:100]}' is not offered by this deployment.")
    if mode is not None and mode != "standard":
        raise _unsupported("reasoning.mode", f"'{mode[:100]}' is not offered by this deployment's backend, which "
                           "reasons in the standard mode only ('standard', or leave it out).")


def reasoning_in_context(history: list[dict[str, Any]], items: list[dict[str, Any]], reasoning: Any
                         ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``history`` and the request's ``items`` as the model is to see them: with ``reasoning.context:
    current_turn``, without the reasoning items that came before the last user message (the turns before this
    one); otherwise as they are. One pass over the items, and only when asked."""
    if reasoning is None or reasoning.context != "current_turn":
        return history, items
    every = (*history, *items)
    last_user = max((index for index, item in enumerate(every)
                     if item.get("type") == "message" and item.get("role") == "user"), default=-1)
    kept = [item for index, item in enumerate(every) if index >= last_user or item.get("type") != "reasoning"]
    earlier = sum(1 for index, item in enumerate(history) if index < last_user and item.get("type") == "reasoning")
    return kept[:len(history) - earlier], kept[len(history) - earlier:]


def served_reasoning_echo(reasoning: Any) -> dict[str, Any]:
    """``context`` and ``mode`` as the Response reports them, where the request set them (checked above)."""
    echoed: dict[str, Any] = {}
    if reasoning.context is not None:
        echoed["context"] = reasoning.context
    if reasoning.mode is not None:
        echoed["mode"] = reasoning.mode
    return echoed


def _unsupported(param: str, message: str) -> APIError:
    return invalid_request(f"'{param}': {message}", param=param, code="unsupported_value")
