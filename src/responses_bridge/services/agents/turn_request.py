"""The request body of a session's turn: what turns.py starts as a background response, made from the
session's agent and environment alone (no I/O), so the turn loop and this translation stay apart."""

from __future__ import annotations

from typing import Any

from ...protocol.agents.inputs import response_tools
from ...sandbox.desktop import DesktopSettings
from .computer.calls import screen_note
from .environments.environments import hosted_container, shell_tool
from .subagents.contexts import KEPT_KEY, for_the_run

_SCREEN = DesktopSettings()


def turn_request(session: dict[str, Any], turn_input: list[dict[str, Any]], capabilities: str = "",
                 kept: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The background response a turn of ``session`` starts: the agent's model, instructions, reasoning, text
    format and tools (the session's container's shell, or the client's in a ``self_hosted`` environment; the
    subagents' tree), chained on the session's last response. ``capabilities``: what the agent is told of its
    environment's capability directories (services/agents/environments/capability_directories.py), after its
    instructions (each turn's own: instructions are not carried along a chain). ``kept``: the session's subagents its
    tree may resume (services/agents/subagents/contexts.py), under :data:`KEPT_KEY`, which the response's start takes
    out of the body."""
    agent = session["agent"]
    body: dict[str, Any] = {
        "model": agent["model"], "background": True, "stream": True, "store": True, "input": turn_input,
        "text": {"format": _text_format(agent["text"]["format"]), "verbosity": agent["text"]["verbosity"]},
    }
    screen = screen_note(_SCREEN.width, _SCREEN.height) \
        if any(tool["type"] == "computer_use" for tool in agent["tools"]) else ""
    instructions = "\n\n".join(part for part in (agent.get("instructions"), capabilities, screen) if part)
    if instructions:
        body["instructions"] = instructions
    reasoning = {key: value for key, value in agent["reasoning"].items() if value is not None}
    if reasoning:
        body["reasoning"] = reasoning
    tools = response_tools(agent["tools"]) if agent["tools"] else []
    container_id = hosted_container(session)
    if container_id is not None:  # the session's container, the hosted shell's
        tools.append(shell_tool(container_id))
    elif session["environment"]["type"] == "self_hosted":  # the client's shell: its commands wait for it
        tools.append({"type": "shell", "environment": {"type": "local"}})
    if tools:
        body["tools"] = tools
    if agent["multi_agent"]["enabled"]:  # the bridge's tree of subagents (services/agents/subagents/tree.py)
        body["multi_agent"] = dict(agent["multi_agent"])
        if kept:
            body[KEPT_KEY] = for_the_run(kept)
    previous = (session.get("_private") or {}).get("last_response_id")
    if previous:
        body["previous_response_id"] = previous
    return body


def _text_format(text_format: dict[str, Any]) -> dict[str, Any]:
    if text_format.get("type") == "json_schema":
        return {"type": "json_schema", "name": "output", "schema": text_format["schema"]}
    return {"type": "text"}
