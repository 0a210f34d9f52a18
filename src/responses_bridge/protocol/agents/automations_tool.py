"""An agent's ``automations`` tool: the function a session's model calls to schedule instructions for its own
session later (an automation ``created_by: {"type": "agent", "session_id", "tool_call_id"}`` whose target is that
session), and its arguments read into the body of ``POST /v1/agents/automations``.

The Agents API names the tool (``{"type": "automations"}``) and the automation it makes, not the function its model
is offered; the bridge offers one function, ``create_automation``: a one-time automation at ``run_at`` (Unix
seconds), or a periodic one on a cron ``expression`` in a ``timezone``. The bridge runs the call itself, inside the
turn; the client is never asked to, and the model reads what was made (or why not) as the call's output.
"""

from __future__ import annotations

from typing import Any

import orjson

FUNCTION_NAME = "create_automation"


def automation_function() -> dict[str, Any]:
    """The response's function tool for the ``automations`` agent tool."""
    return {"type": "function", "name": FUNCTION_NAME, "strict": False,
            "description": "Schedule instructions for this session: they are given to it later as a message, once "
                           "at run_at (Unix time in seconds), or periodically on a cron expression (five fields, or "
                           "six with a leading seconds field) read in an IANA timezone.",
            "parameters": {"type": "object", "properties": {
                "name": {"type": "string", "description": "A short name for the automation."},
                "instructions": {"type": "string", "description": "What this session is told each time."},
                "run_at": {"type": "integer", "description": "For a one-time automation: when, in Unix seconds."},
                "expression": {"type": "string", "description": "For a periodic automation: a cron expression."},
                "timezone": {"type": "string", "description": "For a periodic automation: an IANA timezone."}},
                "required": ["name", "instructions"]}}


def automation_body(arguments: str, session_id: str) -> dict[str, Any] | str:
    """The create body for the call's ``arguments``; a string saying what is wrong when they cannot be one (the
    model reads it as the call's output)."""
    try:
        parsed = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return "The automation was not created: its arguments are not a JSON object."
    if not isinstance(parsed, dict):
        return "The automation was not created: its arguments are not a JSON object."
    target = {"type": "existing_session", "session_id": session_id, "instructions": parsed.get("instructions")}
    body: dict[str, Any] = {"name": parsed.get("name"), "target": target}
    if parsed.get("expression") is not None or parsed.get("timezone") is not None:
        body.update(type="periodic", expression=parsed.get("expression"), timezone=parsed.get("timezone"))
    else:
        body.update(type="once", run_at=parsed.get("run_at"))
    return body
