"""Input items of the multi-agent beta: ``multi_agent_call``, ``multi_agent_call_output`` and ``agent_message``, as
the SDK's beta types shape them, so a client that continues without a stored response (``store: false``) sends them
back as it got them. Each is normalised to the shape the bridge emits (engine/tools/multi_agent.py); the engine
replays the calls and outputs to the model as the action's function calls and their results
(engine/responses/request_translation.py). Any item may carry ``agent`` (the agent that made it, :func:`agent_field`),
which protocol/responses/input_items.py keeps on every kind: a subagent's own items are sent back with the root's and
are not the root model's to read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import invalid_request
from ..request_checks import item_id
from .tool_items import require_str

ACTIONS = ("spawn_agent", "interrupt_agent", "list_agents", "send_message", "followup_task", "wait_agent")


def _action(item: dict[str, Any], param: str) -> str:
    action = require_str(item, "action", param)
    if action not in ACTIONS:
        raise invalid_request(f"Invalid value for '{param}.action': expected one of {', '.join(ACTIONS)}.",
                              param=f"{param}.action", code="invalid_value")
    return action


def agent_field(item: dict[str, Any], param: str) -> dict[str, str] | None:
    """An item's ``agent`` (``{"agent_name": string}``, the agent that made it), checked; None when absent."""
    agent = item.get("agent")
    if agent is None:
        return None
    if not isinstance(agent, dict) or not isinstance(agent.get("agent_name"), str) or len(agent) != 1:
        raise invalid_request(f"Invalid value for '{param}.agent': expected {{\"agent_name\": string}}.",
                              param=f"{param}.agent", code="invalid_value")
    return {"agent_name": agent["agent_name"]}


def multi_agent_call(item: dict[str, Any], param: str) -> dict[str, Any]:
    return {
        "id": item_id(item, param, "mac"), "type": "multi_agent_call", "action": _action(item, param),
        "arguments": require_str(item, "arguments", param), "call_id": require_str(item, "call_id", param)}


def multi_agent_call_output(item: dict[str, Any], param: str) -> dict[str, Any]:
    output = item.get("output")
    if not isinstance(output, list) or not all(
            isinstance(part, dict) and part.get("type") == "output_text" and isinstance(part.get("text"), str)
            for part in output):
        raise invalid_request(f"Invalid value for '{param}.output': expected a list of output_text parts.",
                              param=f"{param}.output", code="invalid_value")
    return {
        "id": item_id(item, param, "maco"), "type": "multi_agent_call_output", "action": _action(item, param),
        "call_id": require_str(item, "call_id", param),
        "output": [{"type": "output_text", "text": part["text"], "annotations": []} for part in output]}


def agent_message(item: dict[str, Any], param: str) -> dict[str, Any]:
    """Kept as the client sent it back (its parts checked for a ``type``); the model never reads it: what it said
    is in the calls' outputs."""
    content = item.get("content")
    if not isinstance(content, list) or not all(isinstance(part, dict) and isinstance(part.get("type"), str)
                                                for part in content):
        raise invalid_request(f"Invalid value for '{param}.content': expected a list of content parts.",
                              param=f"{param}.content", code="invalid_value")
    return {
        "id": item_id(item, param, "amsg"), "type": "agent_message", "author": require_str(item, "author", param),
        "recipient": require_str(item, "recipient", param), "content": content}


NORMALIZERS: dict[str, Callable[[dict[str, Any], str], dict[str, Any]]] = {
    "multi_agent_call": multi_agent_call,
    "multi_agent_call_output": multi_agent_call_output,
    "agent_message": agent_message,
}
