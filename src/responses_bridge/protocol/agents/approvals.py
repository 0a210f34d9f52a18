"""MCP approvals in a session: the bridge's ``mcp_approval_request`` output item (an MCP call its tool loop holds for
the client's approval) as the session's ``mcp_approval_request`` required action, the client's
``agent.session.input.mcp_approval_request_result`` event checked, and its decision as the next response's input.

An agent's MCP tool has no approval setting in the Agents API; the bridge asks for the calls of tools that do not
say they only read (the MCP ``readOnlyHint``): a tool's annotations are the server's own statement of its effects,
and a tool that says nothing may change things (the MCP specification's default). Read-only tools run at once.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..errors import invalid_request


def approval_rule() -> dict[str, Any]:
    """An agent's MCP tool's ``require_approval`` in the turn's response: every tool but a read-only one asks."""
    return {"never": {"read_only": True}}

DECISIONS = ("approve", "deny", "cancel")


def approval_action(request: dict[str, Any]) -> dict[str, Any]:
    """The session's required action for a held call (the SDK's ``…RequiredActionResourceMcpApprovalRequest``)."""
    try:
        arguments: Any = orjson.loads(request.get("arguments") or "{}")
    except orjson.JSONDecodeError:
        arguments = request.get("arguments")
    label, name = request.get("server_label"), request.get("name")
    return {"type": "mcp_approval_request", "request_id": request["id"], "turn_id": request["turn_id"],
            "request": {"type": "mcp_tool_call", "server_label": label, "name": name, "arguments": arguments,
                        "message": f"Allow the MCP server '{label}' to run its tool '{name}'?"}}


def approval_result(event: dict[str, Any], param: str) -> dict[str, Any]:
    """An ``agent.session.input.mcp_approval_request_result`` event: its ``request_id`` and ``decision``."""
    for key in event:
        if key not in ("type", "request_id", "response"):
            raise invalid_request(f"Unknown parameter: '{param}.{key}'.", param=f"{param}.{key}",
                                  code="unknown_parameter")
    if not isinstance(event.get("request_id"), str) or not event["request_id"]:
        raise invalid_request(f"Missing or invalid '{param}.request_id'.", param=f"{param}.request_id",
                              code="missing_required_parameter")
    response = event.get("response")
    if not isinstance(response, dict):
        raise invalid_request(f"Missing required parameter: '{param}.response'.", param=f"{param}.response",
                              code="missing_required_parameter")
    for key in response:
        if key not in ("type", "decision"):
            raise invalid_request(f"Unknown parameter: '{param}.response.{key}'.", param=f"{param}.response.{key}",
                                  code="unknown_parameter")
    if response.get("type") != "mcp_tool_call":
        raise invalid_request(f"Invalid value for '{param}.response.type': expected 'mcp_tool_call'.",
                              param=f"{param}.response.type", code="invalid_value")
    if response.get("decision") not in DECISIONS:
        raise invalid_request(f"Invalid value for '{param}.response.decision': expected 'approve', 'deny' or "
                              "'cancel'.", param=f"{param}.response.decision", code="invalid_value")
    return {"request_id": event["request_id"], "decision": response["decision"]}


def approval_answer(request: dict[str, Any], decision: str) -> list[dict[str, Any]]:
    """The next response's input for a decision: an ``mcp_approval_response`` (an approved call is made by the
    tool loop before the model's turn). A refused call is not made, and the model is told so in a developer
    message, since the approval items themselves are not the model's to read."""
    approve = decision == "approve"
    answer: dict[str, Any] = {"type": "mcp_approval_response", "approval_request_id": request["id"],
                              "approve": approve}
    if approve:
        return [answer]
    why = "denied it" if decision == "deny" else "dismissed the request"
    note = (f"The call of tool '{request.get('name')}' on MCP server '{request.get('server_label')}' with arguments "
            f"{request.get('arguments') or '{}'} was not made: the user {why}.")
    return [{**answer, "reason": why},
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": note}]}]
