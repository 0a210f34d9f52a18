"""The attributes of the spans that tell what a model call and a tool call did, by OpenTelemetry's GenAI semantic
conventions (``gen_ai.*``): which model, how many tokens, why it stopped; which tool. Shaped only when a span is
being made (tracing.recording()), never on a path that makes none.

No argument, output or credential of a call is an attribute: a tool's arguments may carry a secret the model was
given, and a span leaves the tenant's hands (an exporter, a session's trace).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

OPERATION = "gen_ai.operation.name"
REQUEST_MODEL = "gen_ai.request.model"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
FINISH_REASONS = "gen_ai.response.finish_reasons"
TOOL_NAME = "gen_ai.tool.name"
TOOL_CALL_ID = "gen_ai.tool.call.id"
AGENT_ID = "gen_ai.agent.id"
AGENT_NAME = "gen_ai.agent.name"
CONVERSATION_ID = "gen_ai.conversation.id"
RESPONSE_ID = "gen_ai.response.id"
TOOL_KIND = "responses_bridge.tool"  # the tool's type in a request (shell, mcp, function…): ours, not a convention


def usage_attributes(usage: Mapping[str, Any] | None) -> dict[str, int]:
    """Token counts of a Chat Completions ``usage`` (``prompt_tokens``…) or a Responses one
    (``input_tokens``…); nothing of a count the upstream did not give."""
    if not isinstance(usage, Mapping):
        return {}
    attributes: dict[str, int] = {}
    for name, keys in ((INPUT_TOKENS, ("input_tokens", "prompt_tokens")),
                       (OUTPUT_TOKENS, ("output_tokens", "completion_tokens"))):
        for key in keys:
            value = usage.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                attributes[name] = value
                break
    return attributes


def model_call(model: str | None, usage: Mapping[str, Any] | None, finish_reason: str | None,
               response_id: str | None) -> dict[str, Any]:
    """A model call's attributes, once its answer was read."""
    attributes: dict[str, Any] = {OPERATION: "chat", **usage_attributes(usage)}
    if model:
        attributes[REQUEST_MODEL] = model
    if finish_reason:
        attributes[FINISH_REASONS] = [finish_reason]
    if response_id:
        attributes[RESPONSE_ID] = response_id
    return attributes


def tool_call(name: str, kind: str, call_id: str | None = None) -> dict[str, Any]:
    """A tool call's attributes (``kind``: the tool's type; a function the client runs is ``function``)."""
    attributes: dict[str, Any] = {OPERATION: "execute_tool", TOOL_NAME: name, TOOL_KIND: kind}
    if call_id:
        attributes[TOOL_CALL_ID] = call_id
    return attributes
