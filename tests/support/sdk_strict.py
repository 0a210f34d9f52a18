"""The ``openai`` SDK's own types as the judge of what the bridge sends, strictly: every streamed event must be one
of the SDK's ``ResponseStreamEvent`` union (the beta union on the beta surface), validated in pydantic's strict
mode (no coercion), under its own ``type`` (the union must not read it as another event), and with no key the
SDK's model lacks anywhere inside it (the SDK's models keep unknown keys as extras; a strict client would not).

    for event in parse_sse(raw):
        strict_event(event)                       # or strict_event(event, beta=True)
    strict_response(body)
    strict_session_event(event)               # an Agents API session's stream (``AgentSessionEvent``)
    strict_object(Agent, body)                # any other 2xx answer, as the SDK type named
"""

from __future__ import annotations

from functools import cache
from typing import Any

import openai.types.responses as sdk
import openai.types.responses.response_text_delta_event as text_delta
import openai.types.responses.response_text_done_event as text_done
from openai.types.beta.agent_session_event import AgentSessionEvent
from openai.types.beta.beta_response import BetaResponse
from openai.types.beta.beta_response_stream_event import BetaResponseStreamEvent
from openai.types.beta.beta_responses_server_event import BetaResponsesServerEvent
from openai.types.responses.responses_server_event import ResponsesServerEvent
from pydantic import BaseModel, TypeAdapter

# Fields the Open Responses spec requires that the SDK's models lack (the bridge serves both audiences; an SDK
# client ignores them, tests/support/schema.py checks them against the spec's types): on every Response, and the
# ``bytes`` of a text event's logprobs.
SPEC_RESPONSE_FIELDS = frozenset({"presence_penalty", "frequency_penalty", "store"})
_SPEC_EXTRAS: dict[type, frozenset[str]] = {
    sdk.Response: SPEC_RESPONSE_FIELDS, BetaResponse: SPEC_RESPONSE_FIELDS,
    text_delta.Logprob: frozenset({"bytes"}), text_delta.LogprobTopLogprob: frozenset({"bytes"}),
    text_done.Logprob: frozenset({"bytes"}), text_done.LogprobTopLogprob: frozenset({"bytes"}),
}


@cache
def _events(beta_surface: bool) -> TypeAdapter[Any]:
    return TypeAdapter(BetaResponseStreamEvent if beta_surface else sdk.ResponseStreamEvent)


def _extras(value: Any, path: str) -> list[str]:
    """Every key of ``value`` (a validated model) that its model does not define, with its path."""
    found: list[str] = []
    if isinstance(value, BaseModel):
        allowed = _SPEC_EXTRAS.get(type(value), frozenset())
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


@cache
def _ws_events(beta_surface: bool) -> TypeAdapter[Any]:
    return TypeAdapter(BetaResponsesServerEvent if beta_surface else ResponsesServerEvent)


def strict_ws_event(frame: dict[str, Any], *, beta: bool = False) -> Any:
    """One WebSocket frame as ``client.responses.connect()`` reads it (the SDK's ``ResponsesServerEvent`` union,
    the beta one on the beta surface: every stream event with its ``stream_id``, ``error`` frames, steering's and
    injection's events), strictly, with no key the SDK's model lacks."""
    parsed = _ws_events(beta).validate_python(frame, strict=True)
    assert parsed.type == frame["type"], f"the SDK reads {frame['type']!r} as {parsed.type!r}"
    extras = _extras(parsed, frame["type"])
    assert not extras, f"keys the SDK does not define: {extras}"
    return parsed


def strict_event(event: dict[str, Any], *, beta: bool = False) -> Any:
    """``event`` as the SDK's union reads it, strictly; AssertionError naming what is wrong."""
    parsed = _events(beta).validate_python(event, strict=True)
    assert parsed.type == event["type"], f"the SDK reads {event['type']!r} as {parsed.type!r}"
    extras = _extras(parsed, event["type"])
    assert not extras, f"keys the SDK does not define: {extras}"
    return parsed


@cache
def _session_events() -> TypeAdapter[Any]:
    return TypeAdapter(AgentSessionEvent)


def strict_session_event(event: dict[str, Any]) -> Any:
    """One event of an Agents API session's stream as ``client.beta.agents.sessions.events.stream()`` reads it
    (the SDK's ``AgentSessionEvent`` union), strictly, under its own ``type``, with no key the SDK's model lacks."""
    parsed = _session_events().validate_python(event, strict=True)
    assert parsed.type == event["type"], f"the SDK reads {event['type']!r} as {parsed.type!r}"
    extras = _extras(parsed, event["type"])
    assert not extras, f"keys the SDK does not define: {extras}"
    return parsed


def strict_object(kind: Any, obj: dict[str, Any]) -> Any:
    """A 2xx answer's JSON as the SDK's type ``kind`` (a model or a union) reads it, strictly, with no key the
    SDK's model lacks."""
    parsed = TypeAdapter(kind).validate_python(obj, strict=True)
    extras = _extras(parsed, getattr(kind, "__name__", "object"))
    assert not extras, f"keys the SDK does not define: {extras}"
    return parsed


def strict_response(response: dict[str, Any]) -> sdk.Response:
    parsed = sdk.Response.model_validate(response, strict=True)
    extras = _extras(parsed, "response")
    assert not extras, f"keys the SDK does not define: {extras}"
    return parsed


def failure_reason(error: Any) -> str:
    """The bridge's own reason for a failed Response (``upstream_timeout``, ``client_disconnected``…): the word
    leading the message of an ``error`` whose code is the SDK's (engine/response_error.py). ``error`` is the dict
    or the SDK's model."""
    if not isinstance(error, dict):
        error = error.model_dump()
    sdk.ResponseError.model_validate({"code": error["code"], "message": error["message"]}, strict=True)
    reason, colon, _ = error["message"].partition(": ")
    assert colon and error["code"] == "server_error", f"no reason of the bridge's in {error!r}"
    return reason
