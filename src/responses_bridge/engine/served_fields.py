"""OpenAI's request fields that ask for something of the model's service itself — which reasoning is rendered back
(``reasoning.context``), how the model reasons (``reasoning.mode``), an access program (``access_programs``), image
context compression (``image.context_compression``) — served where the Chat Completions backend does what they
ask, else a 400 naming the field: never accepted and silently not done.

No Chat Completions backend, OpenAI's included, takes any of these four, so what is served is what every backend
does anyway: ``reasoning.context: auto`` (the profile's ``reasoning_history`` decides) and ``all_turns`` where that
switch sends earlier reasoning back; ``reasoning.mode: standard``; ``access_programs.cyber: standard``;
``image.context_compression: auto`` or ``disabled`` (images go to the backend as sent). A request for more
(``current_turn``, ``pro``, a Daybreak program, compression required) is refused here, before anything is stored
or sent. A backend that speaks the Responses API itself (the native relay) is given the request as sent and judges
these fields on its own: this module is only called where the bridge translates to Chat Completions.

The enumerations themselves (a value OpenAI does not define) are judged earlier, by the known-fields walk
(protocol/known_fields.py).
"""

from __future__ import annotations

from typing import Any

from ..protocol.errors import APIError, invalid_request
from ..protocol.request import ResponsesRequest
from .options import EngineOptions


def check_served_fields(request: ResponsesRequest, options: EngineOptions) -> None:
    """A 400 naming the first of these fields this deployment's backend cannot serve as asked."""
    p = request.params
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
    if context == "all_turns" and options.reasoning_history != "reasoning_content":
        raise _unsupported("reasoning.context", "'all_turns' needs earlier reasoning rendered back to the model, and "
                           "this deployment's backend is not given it (its profile's reasoning_history is 'drop'). "
                           "Use 'auto', or an upstream whose profile sets reasoning_history: reasoning_content.")
    if context not in (None, "auto", "all_turns"):
        raise _unsupported("reasoning.context", f"'{str(context)[:100]}' is not offered by this deployment: the "
                           "backend is "
                           "given all earlier reasoning or none of it, as its profile's reasoning_history says "
                           "('auto' follows it; 'all_turns' where it is reasoning_content).")
    if mode is not None and mode != "standard":
        raise _unsupported("reasoning.mode", f"'{mode[:100]}' is not offered by this deployment's backend, which "
                           "reasons in the standard mode only ('standard', or leave it out).")


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
