"""The ``openai`` SDK's own types as the judge of what the bridge sends, strictly: every streamed event must be one
of the SDK's ``ResponseStreamEvent`` union (the beta union on the beta surface), validated in pydantic's strict
mode (no coercion), under its own ``type`` (the union must not read it as another event), and with no key the
SDK's model lacks anywhere inside it (the SDK's models keep unknown keys as extras; a strict client would not).

    for event in parse_sse(raw):
        strict_event(event)                       # or strict_event(event, beta=True)
    strict_response(body)
"""

from __future__ import annotations

from functools import cache
from typing import Any

import openai.types.responses as sdk
from openai.types.beta.beta_response import BetaResponse
from openai.types.beta.beta_response_stream_event import BetaResponseStreamEvent
from pydantic import BaseModel, TypeAdapter

# Fields the Open Responses spec requires on every Response that the SDK's Response does not model (the bridge
# serves both audiences: tests/support/schema.py checks them against the spec's types).
SPEC_RESPONSE_FIELDS = frozenset({"presence_penalty", "frequency_penalty", "store"})


@cache
def _events(beta_surface: bool) -> TypeAdapter[Any]:
    return TypeAdapter(BetaResponseStreamEvent if beta_surface else sdk.ResponseStreamEvent)


def _extras(value: Any, path: str) -> list[str]:
    """Every key of ``value`` (a validated model) that its model does not define, with its path."""
    found: list[str] = []
    if isinstance(value, BaseModel):
        allowed = SPEC_RESPONSE_FIELDS if isinstance(value, sdk.Response | BetaResponse) else frozenset()
        found += [f"{path}.{key}" for key in value.model_extra or {} if key not in allowed]
        for name in type(value).model_fields:
            found += _extras(getattr(value, name), f"{path}.{name}")
    elif isinstance(value, (list, tuple)):
        for index, entry in enumerate(value):
            found += _extras(entry, f"{path}[{index}]")
    elif isinstance(value, dict):
        for key, entry in value.items():
            found += _extras(entry, f"{path}.{key}")
    return found


def strict_event(event: dict[str, Any], *, beta: bool = False) -> Any:
    """``event`` as the SDK's union reads it, strictly; AssertionError naming what is wrong."""
    parsed = _events(beta).validate_python(event, strict=True)
    assert parsed.type == event["type"], f"the SDK reads {event['type']!r} as {parsed.type!r}"
    extras = _extras(parsed, event["type"])
    assert not extras, f"keys the SDK does not define: {extras}"
    return parsed


def strict_response(response: dict[str, Any]) -> sdk.Response:
    parsed = sdk.Response.model_validate(response, strict=True)
    extras = _extras(parsed, "response")
    assert not extras, f"keys the SDK does not define: {extras}"
    return parsed
